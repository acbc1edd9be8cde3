#!/bin/sh
# test-quant-gguf - our weight types against the gguf Python package: `test-quant --write`
# writes a random matrix with its quantized bytes and dequantized floats for each type, and
# tests/test-quant-gguf.py checks that gguf.quants quantizes to the same bytes (F16, BF16,
# Q8_0, Q4_0: the types the package can quantize) and dequantizes to the same floats (all
# six types), bit for bit.
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR, MG_PYTHON (a python3 with numpy and gguf; else
# the source tree's .venv; the test is skipped, exit 77, without one).
set -u
top=${MG_TOP_SRCDIR:-.}
build=${MG_TOP_BUILDDIR:-.}
py=${MG_PYTHON:-}
[ -n "$py" ] || py="$top/.venv/bin/python3"
if [ ! -x "$py" ] && ! command -v "$py" >/dev/null 2>&1; then
  echo "SKIP: no python3 with the gguf package ($py not found; set MG_PYTHON)"
  exit 77
fi
if ! why=$("$py" -c "import numpy, gguf.quants" 2>&1); then
  echo "SKIP: $py cannot import numpy and gguf.quants: $(echo "$why" | tail -1)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mg-test-quant-gguf.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
"$build/tests/test-quant" --write "$tmp/cmp.gguf" || { echo "FAIL: test-quant --write"; exit 1; }
"$py" "$top/tests/test-quant-gguf.py" "$tmp/cmp.gguf"
