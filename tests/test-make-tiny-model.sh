#!/bin/sh
# test-make-tiny-model - random models written directly in a recipe's types
# (make-tiny-model --type), on small models (rows of 256, separate and tied heads, and the
# default tiny one, whose rows of 32 and 64 take the fallback types):
#   * for each recipe, the file holds the same bytes as megalodon-quantize makes of the f32
#     model of the same seed (so its values are those of the f32 file);
#   * the same seed gives the same bytes, another seed other bytes;
#   * the gguf Python package reads every file, with the expected type for every tensor (the
#     recipe's rule stated again here: docs/quantization.md);
#   * the presets are those of megalodon-train (--print-config of both).
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR, MG_PYTHON (a python3 with the gguf package;
# else the source tree's .venv; the checks that need it are skipped without one).
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
py=${MG_PYTHON:-}
[ -n "$py" ] || py="$top/.venv/bin/python3"
mk="$build/tests/make-tiny-model"
q="$build/bin/megalodon-quantize"
train="$build/bin/megalodon-train"
need "$mk" "$q" "$train"
make_tmp mg-test-make-tiny-model

have_py=1
if ! "$py" -c "import gguf" >/dev/null 2>&1; then
  echo "SKIP (part): no python3 with the gguf package ($py; set MG_PYTHON): types not read"
  have_py=0
fi

# expected.py FILE RECIPE: every tensor's type against the rule; prints the first mismatch
cat >"$tmp/expected.py" <<'EOF'
import re, sys
import gguf
path, recipe = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(path)
names = {t.name for t in r.tensors}
tied = "output.weight" not in names
matrix = re.compile(r"(token_embd|output|blk\.\d+\.(attn_[zvr]|attn_h[12]|ffn_(up|gate|down)))"
                    r"\.weight$")
block = {"Q4_K": 256, "Q6_K": 256, "Q4_0": 32, "Q8_0": 32, "F16": 1, "BF16": 1}
fallback = {"Q4_K": "Q4_0", "Q4_0": "Q8_0", "Q6_K": "Q8_0", "Q8_0": "F16"}
plain = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
for t in r.tensors:
    want = "F32"
    if t.name.endswith("prior_count"):
        want = "I32"
    elif recipe != "f32" and len(t.shape) == 2 and matrix.match(t.name):
        if recipe != "q4_k_m":
            want = plain[recipe]
        elif (t.name == "output.weight" or (tied and t.name == "token_embd.weight")
              or t.name.endswith(".attn_v.weight") or t.name.endswith(".ffn_down.weight")):
            want = "Q6_K"
        else:
            want = "Q4_K"
        while int(t.shape[0]) % block[want]:
            want = fallback[want]
    if t.tensor_type.name != want:
        sys.exit(f"{t.name}: {t.tensor_type.name}, expected {want}")
ft = r.fields.get("general.file_type")
if recipe != "f32" and ft is None:
    sys.exit("no general.file_type")
print(f"{len(r.tensors)} tensors")
EOF

m256="--layers 2 --dim 256 --z-dim 64 --value-dim 256 --heads 1 --ff 512 --vocab 100 --swiglu"
tied="--layers 1 --dim 256 --z-dim 64 --value-dim 256 --heads 2 --ff 256 --vocab 64 --share-emb"
i=0
for shape in "$m256" "$tied" ""; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  "$mk" $shape --seed 7 "$tmp/m$i-f32.gguf" >/dev/null || { bad "make-tiny-model $shape"; continue; }
  for T in f32 f16 bf16 q8_0 q4_0 q4_k_m; do
    f="$tmp/m$i-$T.gguf"
    # shellcheck disable=SC2086
    "$mk" $shape --seed 7 --type "$T" "$f" >/dev/null || { bad "make-tiny-model --type $T"; continue; }
    if [ "$T" = f32 ]; then
      cmp -s "$f" "$tmp/m$i-f32.gguf" && ok "model $i: --type f32 is the default" \
        || bad "model $i: --type f32 differs from the default"
    else
      "$q" -q "$tmp/m$i-f32.gguf" "$tmp/q.gguf" "$T" >/dev/null || bad "megalodon-quantize $T"
      cmp -s "$f" "$tmp/q.gguf" && ok "model $i: --type $T = megalodon-quantize f32 $T" \
        || bad "model $i: --type $T differs from megalodon-quantize's $T"
    fi
    if [ $have_py = 1 ]; then
      if why=$("$py" "$tmp/expected.py" "$f" "$T" 2>&1); then ok "model $i $T: types ($why)"
      else bad "model $i $T: $why"; fi
    fi
  done
done

# the same seed, the same bytes; another seed, other bytes
"$mk" $m256 --seed 7 --type q4_k_m "$tmp/again.gguf" >/dev/null
cmp -s "$tmp/again.gguf" "$tmp/m1-q4_k_m.gguf" && ok "same seed, same bytes" || bad "same seed"
"$mk" $m256 --seed 8 --type q4_k_m "$tmp/other.gguf" >/dev/null
cmp -s "$tmp/other.gguf" "$tmp/m1-q4_k_m.gguf" && bad "another seed, same bytes" \
  || ok "another seed, other bytes"

# an unknown type or preset is a usage error
"$mk" --type q5_1 "$tmp/x.gguf" >/dev/null 2>&1
[ $? -eq 2 ] && ok "unknown type refused" || bad "unknown type not refused"
"$mk" --preset mega9B "$tmp/x.gguf" >/dev/null 2>&1
[ $? -eq 2 ] && ok "unknown preset refused" || bad "unknown preset not refused"

# the presets: the sizes of megalodon-train's table
if [ $have_py = 1 ]; then
  for p in mega200M mega1.3B mega1.3B_pg19 mega7.1B mega7.3B; do
    "$mk" --preset "$p" --print-config >"$tmp/mk.json" || { bad "--preset $p"; continue; }
    "$train" --preset "$p" --vocab-size 32000 --print-config >"$tmp/tr.json" \
      || { bad "megalodon-train --preset $p"; continue; }
    if why=$("$py" -c "
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
d = [k for k in a if k != 'n_params' and a[k] != b.get(k)]
sys.exit(' '.join(f'{k}: {a[k]} vs {b.get(k)}' for k in d) if d else 0)" "$tmp/mk.json" "$tmp/tr.json" 2>&1)
    then ok "preset $p as megalodon-train's"; else bad "preset $p: $why"; fi
  done
  "$mk" --preset mega7.3B --print-config \
    | "$py" -c "import json, sys; sys.exit(json.load(sys.stdin)['n_params'] != 7385821312)" && ok "mega7.3B: 7385821312 parameters" || bad "mega7.3B parameter count"
fi

[ $fail -eq 0 ] && echo "test-make-tiny-model: all checks passed"
exit $fail
