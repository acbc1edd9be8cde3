#!/bin/sh
# test-quantize - megalodon-quantize on small random models (tests/make-tiny-model):
#   * every recipe (f16, bf16, q8_0, q4_0, q4_k_m) on a model whose rows are 256 long, with
#     separate and tied output heads: gguf.GGUFReader reads the output, every tensor has the
#     expected type (the large matrices the recipe's, q6_K where q4_k_m puts it, the rest as
#     in the input), every key is kept, general.file_type is llama.cpp's number, and the
#     dequantized matrices are close to the input's;
#   * the fallback on the default tiny model (rows of 32 and 64): q4_K -> q4_0, q6_K -> q8_0,
#     said on the progress line;
#   * the same bytes with 1 and 2 threads;
#   * a quantized input is refused without --allow-requantize and accepted with it;
#   * the f32 recipe dequantizes a quantized input without --allow-requantize: every float
#     tensor becomes f32, the values those of gguf.quants.dequantize bit for bit;
#   * usage errors (exit 2) and failures (exit 1) name the problem.
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR, MG_PYTHON (a python3 with numpy and gguf; the
# checks of the written files are skipped without one, the others still run).
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
py=${MG_PYTHON:-}
[ -n "$py" ] || py="$top/.venv/bin/python3"
q="$build/bin/megalodon-quantize"
mk="$build/tests/make-tiny-model"
make_tmp mg-test-quantize
have_py=1
if ! why=$("$py" -c "import numpy, gguf.quants" 2>&1); then
  have_py=0
  echo "note: no python3 with numpy and gguf ($py: $(echo "$why" | tail -1)): the checks of the written files are skipped"
fi

cat >"$tmp/check.py" <<'PY'
# check.py IN OUT RECIPE: the output's types, keys and values against the input.
import re, sys
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

inp, out, recipe = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2]), sys.argv[3]
base = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_k_m": T.Q4_K}[recipe]
ftype = {"f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_k_m": 15}[recipe]
tol = {T.F16: 1e-3, T.BF16: 8e-3, T.Q8_0: 1e-2, T.Q4_0: 0.13, T.Q4_K: 0.15, T.Q6_K: 0.03}
matrix = re.compile(r"(token_embd|output|blk\.\d+\.(attn_[zvr]|attn_h[12]|ffn_(up|gate|down)))\.weight$")
tied = "output.weight" not in [t.name for t in inp.tensors]
fails = 0
tin = {t.name: t for t in inp.tensors}
if [t.name for t in out.tensors] != [t.name for t in inp.tensors]:
    print("FAIL: tensor names or order differ"); fails += 1
for t in out.tensors:
    s = tin[t.name]
    want = s.tensor_type
    if matrix.match(t.name):
        want = base
        if recipe == "q4_k_m" and (t.name == "output.weight" or (tied and t.name == "token_embd.weight")
                                   or t.name.endswith((".attn_v.weight", ".ffn_down.weight"))):
            want = T.Q6_K
    if t.tensor_type != want or list(t.shape) != list(s.shape):
        print(f"FAIL: {t.name}: {t.tensor_type.name} {list(t.shape)}, want {want.name} {list(s.shape)}")
        fails += 1
        continue
    if want != s.tensor_type:
        x = np.asarray(s.data, dtype=np.float32).reshape(-1)
        y = quants.dequantize(np.asarray(t.data), want).reshape(-1)
        err = float(np.max(np.abs(x - y)) / np.max(np.abs(x)))
        if err > tol[want]:
            print(f"FAIL: {t.name}: relative error {err:.3g} > {tol[want]}"); fails += 1
keys_in = [k for k in inp.fields if not k.startswith("GGUF.")]
keys_out = [k for k in out.fields if not k.startswith("GGUF.")]
missing = [k for k in keys_in if k not in keys_out]
if missing:
    print(f"FAIL: keys lost: {missing}"); fails += 1
for k in keys_in:
    if k in ("general.file_type",) or k not in out.fields: continue
    a, b = inp.fields[k], out.fields[k]
    if [bytes(a.parts[i]) for i in a.data] != [bytes(b.parts[i]) for i in b.data]:
        print(f"FAIL: key {k} changed"); fails += 1
if int(out.fields["general.file_type"].parts[-1][0]) != ftype:
    print(f"FAIL: general.file_type is not {ftype}"); fails += 1
print(f"{recipe}: {len(out.tensors)} tensors checked, {fails} failures")
sys.exit(1 if fails else 0)
PY

# models: rows of 256 (separate and tied heads), and the default tiny one (rows of 32, 64)
big="--layers 2 --dim 256 --z-dim 64 --value-dim 256 --heads 1 --ff 256 --vocab 64 --chunk 16 --swiglu"
"$mk" $big "$tmp/m256.gguf" >/dev/null && "$mk" $big --share-emb "$tmp/m256t.gguf" >/dev/null &&
  "$mk" "$tmp/tiny.gguf" >/dev/null || { echo "FAIL: make-tiny-model"; exit 1; }

for m in m256 m256t; do
  for r in f16 bf16 q8_0 q4_0 q4_k_m; do
    if "$q" -t 2 "$tmp/$m.gguf" "$tmp/$m-$r.gguf" "$r" >"$tmp/out" 2>&1 &&
       grep -q "bits per weight" "$tmp/out"; then ok "$m $r written"
    else bad "$m $r: $(tail -3 "$tmp/out")"; continue; fi
    if grep -q "does not fit" "$tmp/out"; then bad "$m $r: a fallback on rows of 256"; fi
    if [ $have_py -eq 1 ]; then
      if "$py" "$tmp/check.py" "$tmp/$m.gguf" "$tmp/$m-$r.gguf" "$r" >"$tmp/chk" 2>&1; then
        ok "$m $r: $(tail -1 "$tmp/chk")"
      else bad "$m $r: $(cat "$tmp/chk" | tail -5)"; fi
    fi
  done
done

# the fallback: rows of 32 and 64 do not fit q4_K / q6_K's blocks of 256
expect_output 0 "token_embd.weight .* f32 -> q4_0 .*does not fit q4_K" "$q" "$tmp/tiny.gguf" "$tmp/tiny-q4km.gguf" q4_k_m
expect_output 0 "blk.0.ffn_down.weight .* f32 -> q8_0 .*does not fit q6_K" "$q" "$tmp/tiny.gguf" "$tmp/tiny-q4km.gguf" q4_k_m
if [ $have_py -eq 1 ]; then
  types=$("$py" -c "
import gguf, sys
r = gguf.GGUFReader(sys.argv[1])
print(' '.join(f'{t.name}={t.tensor_type.name}' for t in r.tensors))" "$tmp/tiny-q4km.gguf")
  case "$types" in
    *"token_embd.weight=Q4_0"*"blk.0.attn_v.weight=Q8_0"*"blk.0.ffn_up.weight=Q4_0"*"output.weight=Q8_0"*)
      ok "fallback types as expected" ;;
    *) bad "fallback types: $types" ;;
  esac
fi

# threads do not change the bytes
"$q" -q -t 1 "$tmp/m256.gguf" "$tmp/t1.gguf" q4_k_m >/dev/null 2>&1 &&
  "$q" -q -t 2 "$tmp/m256.gguf" "$tmp/t2.gguf" q4_k_m >/dev/null 2>&1 &&
  cmp -s "$tmp/t1.gguf" "$tmp/t2.gguf" && ok "same bytes with 1 and 2 threads" ||
  bad "1 and 2 threads give different files"

# requantizing
expect_output 1 "is already quantized (tensor 'token_embd.weight' is q8_0)" "$q" "$tmp/m256-q8_0.gguf" "$tmp/rq.gguf" q4_0
[ -e "$tmp/rq.gguf" ] && bad "a refused requantization left a file"
expect_output 0 "f32 -> q4_0\|q8_0  -> q4_0\|q8_0 -> q4_0" "$q" --allow-requantize "$tmp/m256-q8_0.gguf" "$tmp/rq.gguf" q4_0
if [ $have_py -eq 1 ]; then
  "$py" -c "
import gguf, sys
r = gguf.GGUFReader(sys.argv[1])
t = {t.name: t.tensor_type.name for t in r.tensors}
sys.exit(0 if t['blk.0.attn_z.weight'] == 'Q4_0' and t['blk.0.tnorm.weight'] == 'F32' else 1)" "$tmp/rq.gguf" &&
    ok "requantized types" || bad "requantized types"
fi

# 16-bit inputs are not quantized: f16 and bf16 from them need no --allow-requantize either
expect_output 0 "attn_z.weight .* f16 -> bf16" "$q" "$tmp/m256-f16.gguf" "$tmp/x16.gguf" bf16
expect_output 0 "attn_z.weight .* bf16 -> f16" "$q" "$tmp/m256-bf16.gguf" "$tmp/x16.gguf" f16
rm -f "$tmp/x16.gguf"

# dequantizing: f32 needs no --allow-requantize, and gives every tensor's values exactly
for r in q4_k_m q4_0 bf16; do
  expect_output 0 "as f32" "$q" -t 2 "$tmp/m256t-$r.gguf" "$tmp/deq-$r.gguf" f32
  if [ $have_py -eq 1 ] && [ -e "$tmp/deq-$r.gguf" ]; then
    "$py" -c "
import sys
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants
a, b = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
bad = 0
for s, t in zip(a.tensors, b.tensors):
    if s.tensor_type in (T.I32, T.I64):
        bad += t.tensor_type != s.tensor_type
        continue
    y = quants.dequantize(np.asarray(s.data), s.tensor_type).reshape(-1)
    x = np.asarray(t.data).reshape(-1)
    bad += t.tensor_type != T.F32 or list(t.shape) != list(s.shape) or x.tobytes() != y.astype(np.float32).tobytes()
bad += int(b.fields['general.file_type'].parts[-1][0]) != 0
sys.exit(1 if bad else 0)" "$tmp/m256t-$r.gguf" "$tmp/deq-$r.gguf" &&
      ok "$r -> f32: every tensor f32, dequantized bit for bit, file_type 0" ||
      bad "$r -> f32: types or values differ from gguf.quants.dequantize"
  fi
done

# usage and failures
expect_output 0 "usage: megalodon-quantize" "$q" --help
expect_output 0 "libmegalodon" "$q" --version
expect_output 2 "unknown quantization type 'q3_k' (known: f32, f16" "$q" "$tmp/m256.gguf" "$tmp/x.gguf" q3_k
expect_output 2 "missing TYPE" "$q" "$tmp/m256.gguf" "$tmp/x.gguf"
expect_output 2 "missing IN.gguf" "$q"
expect_output 2 "unknown option '--bogus'" "$q" --bogus "$tmp/m256.gguf" "$tmp/x.gguf" q8_0
expect_output 2 "invalid value 'x' for -t" "$q" -t x "$tmp/m256.gguf" "$tmp/x.gguf" q8_0
expect_output 2 "unexpected argument 'extra'" "$q" "$tmp/m256.gguf" "$tmp/x.gguf" q8_0 extra
expect_output 1 "cannot open '$tmp/nope.gguf'" "$q" "$tmp/nope.gguf" "$tmp/x.gguf" q8_0
expect_output 1 "cannot write '$tmp/no/dir/x.gguf'" "$q" "$tmp/m256.gguf" "$tmp/no/dir/x.gguf" q8_0
printf 'not a gguf file' >"$tmp/junk.gguf"
expect_output 1 "junk.gguf" "$q" "$tmp/junk.gguf" "$tmp/x.gguf" q8_0
[ -e "$tmp/x.gguf" ] && bad "a failed run left an output file"

[ $fail -eq 0 ] && echo "test-quantize: all checks passed"
exit $fail
