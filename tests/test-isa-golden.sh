#!/bin/sh
# test-isa-golden - the golden tests (tests/test-golden: the whole model against the PyTorch
# reference) once per kernel table, forced with MEGALODON_ISA: scalar, avx2, avx512, neon.
# A table that is not compiled in or that this CPU cannot run is skipped (the library says
# "MEGALODON_ISA=x: that kernel table is not built in or not supported by this CPU");
# any other failure fails the test. Exits 77 (SKIP) only if no table could run.
#
# Environment: MG_TOP_BUILDDIR (as set by `make check`); MG_TEST_GOLDEN overrides the
# program's path.
set -u
build=${MG_TOP_BUILDDIR:-.}
prog=${MG_TEST_GOLDEN:-$build/tests/test-golden}

if [ ! -x "$prog" ]; then
  echo "FAIL: $prog is not there"
  exit 1
fi
tmp=$(mktemp "${TMPDIR:-/tmp}/test-isa-golden.XXXXXX") || exit 1
trap 'rm -f "$tmp"' EXIT INT TERM

fail=0
ran=0
for isa in scalar avx2 avx512 neon; do
  MEGALODON_ISA=$isa "$prog" > "$tmp" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "ok: $isa: $(tail -n 1 "$tmp")"
    ran=$((ran + 1))
  elif grep -q "MEGALODON_ISA=$isa: that kernel table is not built in or not supported" "$tmp"; then
    echo "SKIP: $isa: not available on this CPU/build"
  else
    echo "FAIL: $isa: tests/test-golden exited with status $rc:"
    sed 's/^/  /' "$tmp"
    fail=1
  fi
done

if [ $fail -ne 0 ]; then
  exit 1
fi
if [ $ran -eq 0 ]; then
  echo "SKIP: no kernel table could run"
  exit 77
fi
exit 0
