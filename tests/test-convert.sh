#!/bin/sh
# test-convert - megalodon-convert (bin/megalodon-convert.py) on small random models written in
# the official checkpoint layout by tests/reference/write_official.py:
#   * every variant, unsharded and 2-way model-parallel: the converted file matches the
#     checkpoint (keys, names, ne, types, values bit-exact, byte-identical to the reference
#     GGUF writer) and the reference perplexity recomputed from the file's weights equals
#     the expected one; both layouts give byte-identical files;
#   * megalodon-run perplexity on every file agrees with the expected nll (1e-5 relative,
#     with -b 1, 7 and the chunk size and both CEMA algorithms),
#     when $MG_TOP_BUILDDIR/bin/megalodon-run exists;
#   * --outtype f16/bf16 (rounded exactly as documented; nll within a looser tolerance);
#   * --outtype q8_0: the bytes of gguf.quants and of megalodon-quantize, and its f16 fallback;
#   * a single state-dict file with config.json beside it or given by --config;
#   * bad inputs fail with exit status 1 and a message naming the problem;
#   * --tokenizer embeds a SentencePiece BPE model trained here (read back with gguf.GGUFReader);
#   * --vocab-only writes the same tokenizer keys alone (no tensors), and refuses bad options.
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR, MG_PYTHON (a python3 that can import torch and
# gguf; the test is skipped, exit 77, without one).
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
py=${MG_PYTHON:-}

if [ -z "$py" ]; then
  echo "SKIP: MG_PYTHON is not set (a python3 that can import torch and gguf)"
  exit 77
fi
if ! why=$("$py" -c "import torch, gguf, numpy" 2>&1); then
  echo "SKIP: $py cannot import torch and gguf: $(echo "$why" | tail -1)"
  exit 77
fi

conv="$top/bin/megalodon-convert.py"
wo="$top/tests/reference/write_official.py"
run="$build/bin/megalodon-run"
make_tmp mg-test-convert

# Tolerances. Exact conversions: the reference nll from the file's weights equals the expected
# value up to float64 rounding (1e-9 relative); megalodon-run (float32) within 1e-5 relative.
# Rounded projections (--outtype f16/bf16 of an fp32 checkpoint): 5e-3 / 3e-2 relative.
REL_EXACT=1e-9
REL_RUN=1e-5
REL_F16=5e-3
REL_BF16=3e-2

if [ -x "$run" ]; then have_run=1; else
  have_run=0
  echo "note: $run not built: the megalodon-run perplexity checks are skipped (the reference checks still run)"
fi

# run_ppl NAME GGUF CKPTDIR REL: megalodon-run perplexity vs CKPTDIR/expected.json; exact
# conversions (REL = REL_RUN) with -b 1, 7 and the chunk size (the default) and both CEMA
# algorithms, lossy ones once
run_ppl() {
  [ $have_run -eq 1 ] || return 0
  if [ "$4" = "$REL_RUN" ]; then ppl_variants="1:fft 1:scan 7:fft 7:scan C:fft C:scan"; else ppl_variants="C:auto"; fi
  for pv in $ppl_variants; do
    b=${pv%%:*} cema=${pv#*:}
    bflag=""; [ "$b" = C ] || bflag="-b $b"
    # shellcheck disable=SC2086
    if "$run" perplexity -m "$2" --tokens "$3/tokens.txt" --json $bflag --cema "$cema" > "$tmp/run.out" 2> "$tmp/run.err"; then
      grep '^ *{' "$tmp/run.out" | tail -1 > "$tmp/run.json"
      if res=$("$py" "$wo" compare --expect "$3/expected.json" --got "$tmp/run.json" --rel "$4" 2>&1); then
        ok "$1: megalodon-run perplexity -b $b --cema $cema: $res"
      else
        bad "$1: megalodon-run perplexity -b $b --cema $cema: $res"
      fi
    else
      bad "$1: megalodon-run perplexity -b $b --cema $cema failed: $(cat "$tmp/run.err" "$tmp/run.out" | tail -5)"
    fi
  done
}

# convert NAME ARGS...: run the converter, expecting success
convert() {
  name=$1; shift
  if "$py" "$conv" -q "$@" > "$tmp/conv.out" 2>&1; then
    return 0
  fi
  bad "$name: megalodon-convert $* failed: $(cat "$tmp/conv.out")"
  return 1
}

# ---------------------------------------------------------------- every variant
variants=$("$py" "$wo" variants) || { echo "FAIL: write_official.py variants"; exit 1; }
echo "$variants" | while read -r v mps desc; do echo "variant $v (MP $mps): $desc"; done
if ! out=$("$py" "$wo" write-all --out "$tmp" 2>&1); then
  echo "FAIL: write_official.py write-all: $out"
  exit 1
fi
cases=""
for v in $(echo "$variants" | cut -d' ' -f1); do
  for mp in $(echo "$variants" | awk -v v="$v" '$1 == v {print $2}' | tr ',' ' '); do
    d="$tmp/$v.mp$mp"
    convert "$v MP $mp" "$d" -o "$d.gguf" --name "$v" || continue
    cases="$cases --case $tmp/$v.mp1 $d.gguf auto $REL_EXACT"
    if [ "$mp" != 1 ]; then
      if cmp -s "$tmp/$v.mp1.gguf" "$d.gguf"; then
        ok "$v: the $mp-way sharded checkpoint gives a file byte-identical to the unsharded one"
      else
        bad "$v: the $mp-way sharded and the unsharded checkpoints give different files"
      fi
    fi
    run_ppl "$v MP $mp" "$d.gguf" "$d" $REL_RUN
  done
done

# ---------------------------------------------------------------- --outtype
for ot in f16 bf16 f32; do
  case $ot in f16) rel=$REL_F16; src=base;; bf16) rel=$REL_BF16; src=base;; f32) rel=$REL_EXACT; src=bf16;; esac
  d="$tmp/$src.mp2"
  convert "$src --outtype $ot" "$d" -o "$tmp/$src.$ot.gguf" --outtype $ot --name "$src" || continue
  cases="$cases --case $tmp/$src.mp1 $tmp/$src.$ot.gguf $ot $rel"
  runrel=$rel; [ "$ot" = f32 ] && runrel=$REL_RUN
  run_ppl "$src --outtype $ot" "$tmp/$src.$ot.gguf" "$d" $runrel
done

# ---------------------------------------------------------------- --outtype q8_0
# The base variant made wider (rows of 32 and 64, which fit q8_0's blocks of 32), converted
# to q8_0 and to f32: every projection is Q8_0, every other tensor as in the f32 file, and the
# file equals megalodon-quantize's q8_0 of the f32 file tensor for tensor (when built). The
# base variant itself (rows of 16, 12, 24) falls back to f16, with a warning.
q8ok=1
"$py" -c "import sys; sys.path.insert(0, sys.argv[1]); import write_official as W
W.BASE.update(model_dim=32, z_dim=32, value_dim=64, ffn_hidden_dim=64)
W.write_checkpoint('base', 1, sys.argv[2])" "$top/tests/reference" "$tmp/wide" > "$tmp/wide.out" 2>&1 ||
  { bad "--outtype q8_0: writing the wide checkpoint: $(tail -3 "$tmp/wide.out")"; q8ok=0; }
[ $q8ok -eq 1 ] && convert "wide --outtype q8_0" "$tmp/wide" -o "$tmp/wide.q8_0.gguf" --outtype q8_0 &&
  convert "wide --outtype f32" "$tmp/wide" -o "$tmp/wide.f32.gguf" --outtype f32 || q8ok=0
qz="$build/bin/megalodon-quantize"
if [ $q8ok -eq 1 ] && [ -x "$qz" ]; then
  "$qz" -q "$tmp/wide.f32.gguf" "$tmp/wide.mq.gguf" q8_0 > "$tmp/mq.out" 2>&1 ||
    bad "megalodon-quantize of the wide f32 file: $(tail -3 "$tmp/mq.out")"
fi
if [ $q8ok -eq 1 ]; then
  if res=$("$py" -c "
import re, sys, numpy as np, gguf
from gguf import quants, GGMLQuantizationType as T
q, f = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
proj = re.compile(r'(token_embd|output|blk\.\d+\.(attn_[zvr]|attn_h[12]|ffn_(up|gate|down)))\.weight$')
ft = {t.name: t for t in f.tensors}
n = 0
for t in q.tensors:
    s = ft[t.name]
    if proj.match(t.name):
        assert t.tensor_type == T.Q8_0, (t.name, t.tensor_type)
        assert bytes(t.data) == bytes(quants.quantize(np.asarray(s.data), T.Q8_0)), t.name
        n += 1
    else:
        assert t.tensor_type == s.tensor_type and bytes(t.data) == bytes(s.data), t.name
if sys.argv[3] != '-':
    m = {t.name: t for t in gguf.GGUFReader(sys.argv[3]).tensors}
    for t in q.tensors:
        assert t.tensor_type == m[t.name].tensor_type and bytes(t.data) == bytes(m[t.name].data), t.name
print('%d projections in q8_0%s' % (n, ', the same bytes as megalodon-quantize' if sys.argv[3] != '-' else ''))
" "$tmp/wide.q8_0.gguf" "$tmp/wide.f32.gguf" "$([ -f "$tmp/wide.mq.gguf" ] && echo "$tmp/wide.mq.gguf" || echo -)" 2>&1); then
    ok "--outtype q8_0: $res"
  else
    bad "--outtype q8_0: $(echo "$res" | tail -3)"
  fi
fi
if "$py" "$conv" "$tmp/base.mp1" -o "$tmp/base.q8_0.gguf" --outtype q8_0 > "$tmp/conv.out" 2>&1 &&
   grep -q "row length 16 is not a multiple of 32: stored as f16 instead of q8_0" "$tmp/conv.out"; then
  ok "--outtype q8_0 on rows of 16: f16, with a warning"
else
  bad "--outtype q8_0 on rows of 16: $(tail -3 "$tmp/conv.out")"
fi

# the files against the checkpoints, with the reference (one python process for all)
# shellcheck disable=SC2086
"$py" "$wo" verify $cases || fail=1

# ---------------------------------------------------------------- a single state-dict file
if convert "single file" "$tmp/base.mp1/consolidated.pth" -o "$tmp/single.gguf" --name base &&
   cmp -s "$tmp/single.gguf" "$tmp/base.mp1.gguf"; then
  ok "a single state-dict file with config.json beside it gives the same file as the directory"
else
  bad "single state-dict file: different output"
fi
mkdir -p "$tmp/lone"
cp "$tmp/base.mp1/consolidated.pth" "$tmp/lone/model.pt"
if convert "--config" "$tmp/lone/model.pt" --config "$tmp/base.mp1/config.json" -o "$tmp/lone.gguf" --name base &&
   cmp -s "$tmp/lone.gguf" "$tmp/base.mp1.gguf"; then
  ok "a state-dict file with --config gives the same file as the directory"
else
  bad "--config: different output"
fi

# ---------------------------------------------------------------- bad inputs
# expect_error NAME PATTERN ARGS...: exit status 1 and PATTERN (grep -E) in the message
expect_error() {
  name=$1; pat=$2; shift 2
  "$py" "$conv" -q "$@" > "$tmp/err.out" 2>&1
  rc=$?
  if [ $rc -eq 1 ] && grep -Eq -- "$pat" "$tmp/err.out"; then
    ok "$name: exit 1: $(grep -E -- "$pat" "$tmp/err.out" | head -1)"
  else
    bad "$name: exit $rc, expected 1 and /$pat/: $(cat "$tmp/err.out")"
  fi
  if ls -a "$tmp" "$tmp/out" 2>/dev/null | grep -q '\.tmp$'; then
    bad "$name: a temporary file was left behind"
  fi
}

mkdir -p "$tmp/out"
B=$tmp/base.mp1
S=$tmp/base.mp2
copy_ckpt() { rm -rf "$2"; cp -r "$1" "$2"; }
for e in e1 e2 e3 e5 e6 e11 e12 e13 w1; do copy_ckpt "$B" "$tmp/$e"; done
for e in e4 e7 e8 e9 e10 w2; do copy_ckpt "$S" "$tmp/$e"; done
rm "$tmp/e1/config.json" "$tmp/e3/consolidate_config.json" "$tmp/e4/consolidated.01.pth"
cp "$tmp/e10/consolidated.01.pth" "$tmp/e10/consolidated.02.pth"
echo "not a checkpoint" > "$tmp/e12/consolidated.pth"
# the broken checkpoints (one python process for all)
if ! out=$("$py" - "$tmp" 2>&1 <<'EOF'
import json, os, sys, torch
tmp = sys.argv[1]
def sd_edit(d, name, fn):
    p = os.path.join(tmp, d, name)
    sd = torch.load(p, map_location="cpu")
    fn(sd)
    torch.save(sd, p)
def json_edit(d, name, fn):
    p = os.path.join(tmp, d, name)
    with open(p) as f:
        j = json.load(f)
    fn(j)
    with open(p, "w") as f:
        json.dump(j, f)
def e2(j):
    del j["model"]["model_dim"], j["model"]["cema_ndim"]
json_edit("e2", "config.json", e2)
sd_edit("e5", "consolidated.pth",
        lambda sd: sd.update({"layers.0.mega.wz.weight": sd["layers.0.mega.wz.weight"][:, :15].clone()}))
def e6(sd):
    del sd["layers.1.nffn.fc2.weight"], sd["output.final_norm.bias"]
sd_edit("e6", "consolidated.pth", e6)
sd_edit("e7", "consolidated.01.pth",
        lambda sd: sd.update({"layers.1.mega.wv.weight": torch.cat([sd["layers.1.mega.wv.weight"]] * 2)}))
sd_edit("e8", "consolidated.01.pth", lambda sd: sd.pop("layers.0.mega.cema.omega"))
json_edit("e9", "consolidate_config.json", lambda j: j.update(model_parallel_size=0))
json_edit("e10", "consolidate_config.json", lambda j: j.update(model_parallel_size=3))
json_edit("e11", "config.json", lambda j: j["model"].update(swiglu=True))
sd_edit("e13", "consolidated.pth",
        lambda sd: sd.update({"layers.0.mega.cema.alpha": sd["layers.0.mega.cema.alpha"].long()}))
sd_edit("w1", "consolidated.pth", lambda sd: sd.update({"extra.thing": torch.zeros(3)}))
sd_edit("w2", "consolidated.01.pth",
        lambda sd: sd.update({"layers.0.mega.rmsnorm.weight": sd["layers.0.mega.rmsnorm.weight"] + 0.5}))
EOF
); then
  bad "preparing the broken checkpoints: $out"
fi

expect_error "missing config" "e1/config\.json: not found" "$tmp/e1" -o "$tmp/out/x.gguf"
expect_error "missing config keys" "missing config keys model\.model_dim, model\.cema_ndim" "$tmp/e2" -o "$tmp/out/x.gguf"
expect_error "missing consolidate_config.json" "consolidate_config\.json: not found" "$tmp/e3" -o "$tmp/out/x.gguf"
expect_error "a shard missing" "missing shard for model_parallel_size 2 .*: consolidated\.01\.pth" "$tmp/e4" -o "$tmp/out/x.gguf"
expect_error "wrong shape" "tensor layers\.0\.mega\.wz\.weight: shape \(8, 15\), expected \(8, 16\) = \(z_dim, model_dim\)" "$tmp/e5" -o "$tmp/out/x.gguf"
expect_error "missing tensors" "missing tensors in consolidated\.pth: layers\.1\.nffn\.fc2\.weight, output\.final_norm\.bias" "$tmp/e6" -o "$tmp/out/x.gguf"
expect_error "wrong shard size" "inconsistent shards: tensor layers\.1\.mega\.wv\.weight in consolidated\.01\.pth: shape \(12, 16\), expected \(6, 16\)" "$tmp/e7" -o "$tmp/out/x.gguf"
expect_error "shards with different keys" "inconsistent shards: consolidated\.01\.pth lacks layers\.0\.mega\.cema\.omega" "$tmp/e8" -o "$tmp/out/x.gguf"
expect_error "bad MP size" "bad model_parallel_size 0" "$tmp/e9" -o "$tmp/out/x.gguf"
expect_error "MP size not dividing the model" "bad model_parallel_size 3 .*model_dim = 16 is not divisible by it" "$tmp/e10" -o "$tmp/out/x.gguf"
expect_error "option without its tensors" "missing tensors in consolidated\.pth: layers\.0\.nffn\.fc3\.weight" "$tmp/e11" -o "$tmp/out/x.gguf"
expect_error "not a state dict" "consolidated\.pth: cannot read as a PyTorch state dict" "$tmp/e12" -o "$tmp/out/x.gguf"
expect_error "integer weights" "tensor layers\.0\.mega\.cema\.alpha in consolidated\.pth: dtype int64, expected a floating-point tensor" "$tmp/e13" -o "$tmp/out/x.gguf"

expect_error "output not writable" "x\.gguf: cannot write: directory .* does not exist" "$B" -o "$tmp/out/missing-dir/x.gguf"
mkdir -p "$tmp/out/ro"; chmod a-w "$tmp/out/ro"
if touch "$tmp/out/ro/probe" 2>/dev/null; then
  rm -f "$tmp/out/ro/probe"; echo "note: running as a user who can write anywhere: read-only directory case skipped"
else
  expect_error "output directory read-only" "ro/x\.gguf: cannot write: Permission denied" "$B" -o "$tmp/out/ro/x.gguf"
fi
chmod u+w "$tmp/out/ro"

expect_error "missing checkpoint" "nonexistent: not found" "$tmp/nonexistent" -o "$tmp/out/x.gguf"
expect_error "a shard given alone" "one shard of a 2-way model-parallel checkpoint" "$S/consolidated.00.pth" -o "$tmp/out/x.gguf"
expect_error "bad --outtype" "invalid choice: 'q4'" "$B" -o "$tmp/out/x.gguf" --outtype q4

# expect_warning NAME DIR PATTERN: DIR converts with a warning matching PATTERN (grep) into
# the bytes of the base variant's conversion
expect_warning() {
  name=$1 dir=$2 pat=$3
  if "$py" "$conv" "$dir" -o "$dir.gguf" --name base > "$dir.out" 2>&1 &&
     grep -q "$pat" "$dir.out" && cmp -s "$dir.gguf" "$tmp/base.mp1.gguf"; then
    ok "$name: $(grep warning "$dir.out")"
  else
    bad "$name: $(cat "$dir.out")"
  fi
}
# unknown tensors are reported, not fatal; the result is unchanged
expect_warning "unknown tensor" "$tmp/w1" \
  "warning: tensors not used by this configuration, ignored: extra\.thing"
# replicated tensors that differ between shards: rank 0's copy (docs/model.md §17), with a warning
expect_warning "replicated tensors differing between shards" "$tmp/w2" \
  "warning: replicated tensor layers\.0\.mega\.rmsnorm\.weight differs between consolidated\.00\.pth and consolidated\.01\.pth (max abs diff 0\.5)"

# an existing output file is replaced atomically
cp "$tmp/heads1.mp1.gguf" "$tmp/out/replace.gguf"
if convert "replace" "$B" -o "$tmp/out/replace.gguf" --name base && cmp -s "$tmp/out/replace.gguf" "$tmp/base.mp1.gguf" &&
   [ "$(ls -a "$tmp/out" | grep -c '\.tmp$')" -eq 0 ]; then
  ok "an existing output file is replaced, no temporary file left"
else
  bad "replacing an existing output file"
fi

# ---------------------------------------------------------------- --tokenizer
if ! "$py" -c "import sentencepiece" 2>/dev/null; then
  echo "note: $py has no sentencepiece module: the --tokenizer checks are skipped"
else
  corpus="$top/../shared/data/corpus/train"
  if tk=$("$py" - "$corpus" "$tmp/sp" <<'EOF' 2>&1
import glob, lzma, os, random, sys
import sentencepiece as spm
corpus, prefix = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(corpus, "*.xz")))
if files:
    with lzma.open(files[0], "rt", encoding="utf-8", errors="replace") as f:
        text = f.read(300000)
    src = os.path.basename(files[0])
else:
    rng = random.Random(5)
    words = ("the of and to in a is that for it as was with be by on not he this are or his from at "
             "which but have an they you were her she there been one all we their has would when if "
             "so no will more time about can said them some could into two then do first any like "
             "chunk moving average gated attention megalodon sequence model token").split()
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))).capitalize() + "."
                     for _ in range(4000))
    src = "generated text"
with open(prefix + ".txt", "w", encoding="utf-8") as f:
    f.write(text)
# like the LLaMA tokenizer: BPE, byte fallback, no normalization, digits split
spm.SentencePieceTrainer.train(input=prefix + ".txt", model_prefix=prefix, vocab_size=400,
                               model_type="bpe", byte_fallback=True, user_defined_symbols=["<sep>"],
                               character_coverage=1.0, normalization_rule_name="identity",
                               remove_extra_whitespaces=False, split_digits=True, minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
print(sp.get_piece_size(), src)
EOF
  ); then
    nsp=${tk%% *}
    ok "trained a SentencePiece BPE model: $nsp pieces from ${tk#* }"
    # check_tok GGUF NVOCAB: the tokenizer keys read back with gguf.GGUFReader
    check_tok() {
      "$py" - "$1" "$tmp/sp.model" "$2" <<'EOF'
import sys
import gguf
import sentencepiece as spm
path, spmodel, nvocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = gguf.GGUFReader(path)
f = {k: v for k, v in r.fields.items()}
def val(k):
    return f[k].contents()
def vtype(k):
    return f[k].types[0]
sp = spm.SentencePieceProcessor(model_file=spmodel)
n = sp.get_piece_size()
err = []
T = gguf.GGUFValueType
if val("tokenizer.ggml.model") != "llama":
    err.append("model %r" % val("tokenizer.ggml.model"))
tokens, scores, types = val("tokenizer.ggml.tokens"), val("tokenizer.ggml.scores"), val("tokenizer.ggml.token_type")
if f["tokenizer.ggml.scores"].types != [T.ARRAY, T.FLOAT32] or f["tokenizer.ggml.token_type"].types != [T.ARRAY, T.INT32]:
    err.append("array element types %s %s" % (f["tokenizer.ggml.scores"].types, f["tokenizer.ggml.token_type"].types))
if not len(tokens) == len(scores) == len(types) == nvocab:
    err.append("lengths %d %d %d, expected %d" % (len(tokens), len(scores), len(types), nvocab))
for i in range(n):
    want = 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i) \
        else 4 if sp.id_to_piece(i) == "<sep>" else 1
    if tokens[i] != sp.id_to_piece(i) or scores[i] != sp.get_score(i) or types[i] != want:
        err.append("token %d: %r %r %r, expected %r %r %r" % (i, tokens[i], scores[i], types[i],
                                                             sp.id_to_piece(i), sp.get_score(i), want))
        break
extra = nvocab - n
ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "unknown": sp.unk_id(), "padding": sp.pad_id()}
if extra:
    # the official Tokenizer gives the missing pad the first additional id
    assert sp.pad_id() == -1
    ids["padding"] = n
    if (tokens[n], types[n], scores[n]) != ("<pad>", 3, 0.0):
        err.append("first extra row %r %r %r, expected '<pad>' 3 0.0" % (tokens[n], types[n], scores[n]))
    for j in range(1, extra):
        if (tokens[n + j], types[n + j], scores[n + j]) != ("<unused_%d>" % j, 5, 0.0):
            err.append("extra row %d: %r %r %r" % (n + j, tokens[n + j], types[n + j], scores[n + j]))
            break
for k, want in ids.items():
    key = "tokenizer.ggml.%s_token_id" % k
    if want < 0:
        if key in f:
            err.append("%s present, the tokenizer has none" % key)
    elif key not in f or val(key) != want or vtype(key) != T.UINT32:
        err.append("%s = %r, expected %d (uint32)" % (key, val(key) if key in f else None, want))
for k in ("add_bos_token", "add_space_prefix"):
    key = "tokenizer.ggml." + k
    if key not in f or vtype(key) != T.BOOL or val(key) is not True:
        err.append("%s not bool true" % key)
if err:
    print("; ".join(err))
    sys.exit(1)
print("%d tokens (%d pieces + %d extra), ids bos %d eos %d unk %d pad %s" % (
    nvocab, n, extra, ids["bos"], ids["eos"], ids["unknown"], ids["padding"] if ids["padding"] >= 0 else "none"))
EOF
    }
    for nv in $((nsp + 256)) "$nsp"; do
      d="$tmp/tok$nv"
      if ! out=$("$py" "$wo" write --variant base --mp 2 --out "$d" --vocab-size "$nv" \
                   --additional-vocab-size $((nv - nsp)) 2>&1); then
        bad "write_official --vocab-size $nv: $out"; continue
      fi
      convert "tokenizer" "$d" -o "$d.gguf" --tokenizer "$tmp/sp.model" || continue
      if res=$(check_tok "$d.gguf" "$nv" 2>&1); then ok "--tokenizer, vocab_size $nv: $res"; else bad "--tokenizer, vocab_size $nv: $res"; fi
      if grep -q warning "$tmp/conv.out"; then bad "--tokenizer, vocab_size $nv: $(cat "$tmp/conv.out")"; fi
      run_ppl "tokenizer, vocab_size $nv" "$d.gguf" "$d" $REL_RUN     # the tokenizer keys must not disturb the model
      if [ $have_run -eq 1 ]; then
        # the library's tokenizer, from the embedded keys, against SentencePiece itself
        text=$(printf 'Emma Woodhouse, handsome, clever, and rich \342\200\224 1234 \342\202\254!\n  two  spaces<sep>\tend')
        want=$("$py" -c 'import sys, sentencepiece as s; p = s.SentencePieceProcessor(model_file=sys.argv[1]); print(" ".join(map(str, [p.bos_id()] + p.encode(sys.argv[2]))))' "$tmp/sp.model" "$text")
        got=$("$run" tokenize -m "$d.gguf" --bos -p "$text" 2>&1 | tr -s ' \n' '  ' | sed 's/ *$//')
        if [ "$got" = "$want" ]; then
          ok "--tokenizer, vocab_size $nv: megalodon-run tokenize agrees with SentencePiece ($(echo "$want" | wc -w) ids)"
        else
          bad "--tokenizer, vocab_size $nv: megalodon-run tokenize: '$got', SentencePiece: '$want'"
        fi
      fi
    done
    expect_error "tokenizer larger than the vocabulary" "the tokenizer has $nsp pieces but the model's vocab_size is 37" \
      "$B" -o "$tmp/out/x.gguf" --tokenizer "$tmp/sp.model"

    # --vocab-only: a file with the tokenizer keys alone (general.architecture megalodon-vocab,
    # general.name, no tensors), the same keys and values as embedded in a model above
    for nv in "$nsp" $((nsp + 256)); do
      vs=""; [ "$nv" = "$nsp" ] || vs="--vocab-size $nv"
      # shellcheck disable=SC2086
      convert "--vocab-only${vs:+ $vs}" --vocab-only --tokenizer "$tmp/sp.model" -o "$tmp/vocab$nv.gguf" \
        --name test-vocab $vs || continue
      if grep -q warning "$tmp/conv.out"; then bad "--vocab-only${vs:+ $vs}: $(cat "$tmp/conv.out")"; fi
      if res=$(check_tok "$tmp/vocab$nv.gguf" "$nv" 2>&1); then ok "--vocab-only${vs:+ $vs}: $res"; else bad "--vocab-only${vs:+ $vs}: $res"; fi
      if res=$("$py" - "$tmp/vocab$nv.gguf" "$tmp/tok$nv.gguf" <<'EOF' 2>&1
import sys
import gguf
v, m = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
err = []
keys = [k for k in v.fields if not k.startswith("GGUF.")]
want = ["general.architecture", "general.name"] + [k for k in m.fields if k.startswith("tokenizer.")]
if keys != want:
    err.append("keys %s, expected %s" % (keys, want))
if v.fields["general.architecture"].contents() != "megalodon-vocab":
    err.append("general.architecture %r" % v.fields["general.architecture"].contents())
if v.fields["general.name"].contents() != "test-vocab":
    err.append("general.name %r" % v.fields["general.name"].contents())
if v.tensors:
    err.append("%d tensors" % len(v.tensors))
for k in want[2:]:
    if k in v.fields and (v.fields[k].types != m.fields[k].types or v.fields[k].contents() != m.fields[k].contents()):
        err.append("%s differs from the model's" % k)
if err:
    print("; ".join(err))
    sys.exit(1)
print("%d keys, no tensors, tokenizer keys identical to the model's" % len(keys))
EOF
      ); then ok "--vocab-only${vs:+ $vs}: $res"; else bad "--vocab-only${vs:+ $vs}: $res"; fi
    done
    expect_error "--vocab-only without --tokenizer" "--vocab-only needs --tokenizer" \
      --vocab-only -o "$tmp/out/x.gguf"
    expect_error "--vocab-only with a checkpoint" "--vocab-only takes no CHECKPOINT" \
      "$B" --vocab-only --tokenizer "$tmp/sp.model" -o "$tmp/out/x.gguf"
    expect_error "--vocab-only with --outtype" "--outtype does not apply to --vocab-only" \
      --vocab-only --tokenizer "$tmp/sp.model" -o "$tmp/out/x.gguf" --outtype f16
    expect_error "--vocab-size below the pieces" "--vocab-size 37: .*has $nsp pieces" \
      --vocab-only --tokenizer "$tmp/sp.model" -o "$tmp/out/x.gguf" --vocab-size 37
    expect_error "--vocab-size without --vocab-only" "--vocab-size is only for --vocab-only" \
      "$B" -o "$tmp/out/x.gguf" --vocab-size 500
    expect_error "--vocab-only, not a SentencePiece model" "not a SentencePiece model" \
      --vocab-only --tokenizer "$B/config.json" -o "$tmp/out/x.gguf"
    if [ -e "$tmp/out/x.gguf" ]; then bad "--vocab-only: a failed run left its output"; fi
  else
    bad "training a SentencePiece model: $tk"
  fi
fi

if [ $fail -eq 0 ]; then echo "all megalodon-convert checks passed"; fi
exit $fail
