#!/bin/sh
# test-quantized-run - whole models in their file types, through the programs:
#   * for every recipe (f16, bf16, q8_0, q4_0, q4_k_m), a model whose rows are 256 long (so no
#     matrix falls back), quantized and then dequantized to f32 (megalodon-quantize's f32
#     recipe, which needs no --allow-requantize): `megalodon-run perplexity` gives the NLL of
#     the f32 copy within 3e-3 relative, over 300 tokens (5 chunks of 64), in calls of one
#     chunk (the default), of all 300 tokens at once (the prefill products) and of one token
#     (-b 1: the decode products, with 8-bit activations for the block types); on a model with
#     an untied head and on one with a tied, scaled embedding (larger logits, so the NLL
#     feels the weight errors more);
#   * the f32 copy holds only f32 tensors (and the i32 norm prior counts), and `info` names
#     the types of the quantized model;
#   * megalodon-train -m refuses a quantized model, naming the tensor and its type;
#   * a quantized tensor cut short by a truncated file is refused at load, naming it.
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR.
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
q="$build/bin/megalodon-quantize"
run="$build/bin/megalodon-run"
train="$build/bin/megalodon-train"
mk="$build/tests/make-tiny-model"
make_tmp mg-test-quantized-run

# 300 token ids in 0..63 from a fixed linear congruential sequence
awk 'BEGIN { s = 12345; for (i = 0; i < 300; i++) { s = (s * 1103515245 + 12345) % 2147483648;
             printf "%d%s", int(s / 65536) % 64, (i % 20 == 19) ? "\n" : " " } }' >"$tmp/ids"

# nll MODEL BATCH: the summed NLL of the ids, in calls of BATCH tokens
nll() {
  "$run" perplexity -m "$1" --tokens "$tmp/ids" --json -t 1 -b "$2" 2>"$tmp/err" |
    sed -n 's/.*"nll": *\([-0-9.eE+]*\).*/\1/p'
}

# close A B: |A - B| <= 3e-3 |B|
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b;
                                           exit !(a != "" && b != "" && d <= 3e-3 * m) }'; }

shape="--layers 2 --dim 256 --z-dim 64 --value-dim 256 --heads 1 --ff 256 --vocab 64 --chunk 64 --swiglu"
"$mk" $shape "$tmp/m.gguf" >/dev/null &&
  "$mk" $shape --share-emb --scale-emb --seed 7 "$tmp/mt.gguf" >/dev/null ||
  { echo "FAIL: make-tiny-model"; exit 1; }

for m in m mt; do
  for r in f16 bf16 q8_0 q4_0 q4_k_m; do
    qf="$tmp/$m-$r.gguf" ff="$tmp/$m-$r-f32.gguf"
    if ! "$q" -q -t 1 "$tmp/$m.gguf" "$qf" "$r" >"$tmp/out" 2>&1 ||
       ! "$q" -q -t 1 "$qf" "$ff" f32 >"$tmp/out" 2>&1; then
      bad "$m $r: quantizing or dequantizing: $(tail -2 "$tmp/out")"
      continue
    fi
    for b in 64 300 1; do
      a=$(nll "$qf" $b) f=$(nll "$ff" $b)
      if close "$a" "$f"; then ok "$m $r -b $b: nll $a, f32 copy $f"
      else bad "$m $r -b $b: nll '$a', f32 copy '$f' (more than 3e-3 apart): $(tail -1 "$tmp/err")"; fi
    done
  done
done

# the f32 copy has only f32 tensors and the norm prior counts; info names the types
expect_output 0 "^weights: f32 ([0-9]* tensors), i32 (3)$" "$run" info -m "$tmp/m-q4_k_m-f32.gguf"
expect_output 0 "^weights: q4_K (13 tensors), f32 (41), i32 (3), q6_K (5)$" "$run" info -m "$tmp/m-q4_k_m.gguf"
expect_output 0 "^weights: q8_0 (" "$run" info -m "$tmp/m-q8_0.gguf"
expect_output 0 "blk.0.attn_v.weight  *q6_K  *\[256, 256\]" "$run" info -m "$tmp/m-q4_k_m.gguf"

# training needs float weights: the quantized tensor is named
expect_output 1 "tensor 'token_embd.weight' is quantized (q4_K)" \
  "$train" -m "$tmp/m-q4_k_m.gguf" --tokens "$tmp/ids" -o "$tmp/x.gguf" --steps 1
expect_output 1 "tensor 'token_embd.weight' is quantized (q8_0)" \
  "$train" -m "$tmp/mt-q8_0.gguf" --tokens "$tmp/ids" -o "$tmp/x.gguf" --steps 1
[ -e "$tmp/x.gguf" ] && bad "a refused training run wrote a model"

# a truncated file: its last tensor (output.weight, q6_K) is cut short
size=$(wc -c <"$tmp/m-q4_k_m.gguf")
head -c $((size - 100)) "$tmp/m-q4_k_m.gguf" >"$tmp/cut.gguf"
expect_output 1 "tensor 'output.weight': data .* extends past end of file" "$run" info -m "$tmp/cut.gguf"
expect_output 1 "tensor 'output.weight': data .* extends past end of file" \
  "$run" perplexity -m "$tmp/cut.gguf" --tokens "$tmp/ids"

[ $fail -eq 0 ] && echo "test-quantized-run: all checks passed"
exit $fail
