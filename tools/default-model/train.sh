#!/bin/sh
# train.sh - the recipe of the default model (models/megalodon-default.gguf): vocabulary,
# training, evaluation. docs/training.md ("The default model") explains it.
#
#   tools/default-model/train.sh [-w WORKDIR] [--corpus DIR] [--builddir DIR] [--steps N]
#                                [--quick] [--install]
#
#  1. vocabulary: make-vocab.py trains a 4096-piece SentencePiece BPE model on the training
#     texts (deterministic), megalodon-convert --vocab-only turns it into WORKDIR/vocab.gguf;
#  2. training: megalodon-train, a new model of the preset "small" (4 layers, D 256, chunk 256)
#     on the training texts (one document each; the last 1% of the ids, the end of the
#     Sherlock Holmes stories put last, is the validation part) -> WORKDIR/megalodon-default.gguf,
#     WORKDIR/train.jsonl, WORKDIR/loss.png;
#  3. checks and evaluation on the held-out books (corpus eval/): the library's tokenizer
#     gives SentencePiece's ids; megalodon-run perplexity of each whole book against the unigram
#     baseline of unigram.py -> WORKDIR/eval.txt;
#  4. --install copies the model, its tokenizer.model, the log and the plot into the source
#     tree: models/megalodon-default.gguf, models/megalodon-default.tokenizer.model,
#     docs/img/default-model-train.jsonl, docs/img/default-model-loss.png.
#
# --quick trains the preset "tiny" for 20 steps (a check of the recipe in a minute; never
# --install that). --steps N changes the number of optimizer steps.
#
# Needs: a build of this tree (bin/megalodon-train, bin/megalodon-run: --builddir, default the
# current directory if it has them, else the programs on PATH); a python3 with sentencepiece
# and gguf ($PYTHON, default the tree's .venv of tools/install-deps.sh, else python3); xz.
# The corpus is ../shared/data/corpus beside the source tree, or --corpus / $MG_CORPUS_DIR.
# The training runs on all CPUs; about 40 minutes on 2 cores of a 2020s x86-64 server.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
work=default-model.work
corpus=${MG_CORPUS_DIR:-$top/../shared/data/corpus}
builddir=
steps=1000
quick=0
install=0

usage() { sed -n '2,30s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
  -w) work=$2; shift 2 ;;
  --corpus) corpus=$2; shift 2 ;;
  --builddir) builddir=$2; shift 2 ;;
  --steps) steps=$2; shift 2 ;;
  --quick) quick=1; shift ;;
  --install) install=1; shift ;;
  -h | --help) usage 0 ;;
  *) echo "train.sh: unknown option '$1'" >&2; usage 2 >&2 ;;
  esac
done
if [ $quick -eq 1 ] && [ $install -eq 1 ]; then
  echo "train.sh: --quick makes a toy model: it cannot be --install'ed" >&2
  exit 2
fi

# the programs
if [ -z "$builddir" ] && [ -x bin/megalodon-train ]; then builddir=.; fi
if [ -n "$builddir" ]; then
  builddir=$(cd "$builddir" && pwd)
  train=$builddir/bin/megalodon-train
  run=$builddir/bin/megalodon-run
else
  train=$(command -v megalodon-train || true)
  run=$(command -v megalodon-run || true)
fi
for p in "$train" "$run"; do
  if [ -z "$p" ] || [ ! -x "$p" ]; then
    echo "train.sh: megalodon-train and megalodon-run not found: build the tree and give --builddir" >&2
    exit 1
  fi
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$top/.venv/bin/python3" ]; then PYTHON=$top/.venv/bin/python3; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import sentencepiece, gguf' 2>/dev/null; then
  echo "train.sh: $PYTHON cannot import sentencepiece and gguf (run tools/install-deps.sh, or set PYTHON)" >&2
  exit 1
fi
if ! ls "$corpus"/train/*.txt.xz > /dev/null 2>&1 || ! ls "$corpus"/eval/*.txt.xz > /dev/null 2>&1; then
  echo "train.sh: no corpus in '$corpus' (train/*.txt.xz, eval/*.txt.xz): give --corpus" >&2
  exit 1
fi

# Debian's OpenBLAS 0.3.21 does not recognise some AVX-512 CPUs and falls back to slow
# kernels: name the core type when the CPU has the AVX-512 subsets SkylakeX kernels use.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  has=1
  for f in avx512f avx512cd avx512bw avx512dq avx512vl; do
    case " $flags " in *" $f "*) ;; *) has=0 ;; esac
  done
  if [ $has -eq 1 ]; then
    OPENBLAS_CORETYPE=SkylakeX
    export OPENBLAS_CORETYPE
    echo "train.sh: AVX-512 CPU: OPENBLAS_CORETYPE=SkylakeX"
  fi
fi

mkdir -p "$work"
work=$(cd "$work" && pwd)
log() { echo "train.sh: $*"; }

# ---------------------------------------------------------------- 1. vocabulary
log "vocabulary (SentencePiece BPE, 4096 pieces)"
"$PYTHON" "$here/make-vocab.py" --corpus "$corpus" -o "$work/tokenizer"
"$PYTHON" "$top/bin/megalodon-convert.py" --vocab-only --tokenizer "$work/tokenizer.model" \
  --name megalodon-default -o "$work/vocab.gguf"

# ---------------------------------------------------------------- 2. training
# The training texts in name order, except the validation book, which goes last: the
# validation part (--val-fraction, the end of the stream) is the end of that book. The
# training runs in WORKDIR with names relative to it, so that the log and the plot hold no
# machine paths.
val_book=doyle_adventures_of_sherlock_holmes
mkdir -p "$work/train" "$work/eval"
set --
for f in "$corpus"/train/*.txt.xz; do
  b=$(basename "$f" .xz)
  xz -dc "$f" > "$work/train/$b"
  [ "${b%.txt}" = "$val_book" ] || set -- "$@" --data "train/$b"
done
[ -f "$work/train/$val_book.txt" ] && set -- "$@" --data "train/$val_book.txt"
for f in "$corpus"/eval/*.txt.xz; do
  xz -dc "$f" > "$work/eval/$(basename "$f" .xz)"
done

if [ $quick -eq 1 ]; then
  model_opts="--preset tiny"
  steps=20
  sched_opts="--lr 2e-3 --warmup 2 --schedule cosine --lr-end-ratio 0.1"
  eval_opts="--eval-every 10 --eval-batches 2 --checkpoint-every 0"
else
  model_opts="--preset small"
  sched_opts="--lr 2e-3 --warmup 40 --schedule cosine --lr-end-ratio 0.1"
  eval_opts="--eval-every 100 --eval-batches 8 --checkpoint-every 100 --keep 2"
fi
model=$work/megalodon-default.gguf
rm -rf "$model.ckpt"
log "training: megalodon-train $model_opts, $steps steps"
# shellcheck disable=SC2086
(cd "$work" && "$train" $model_opts --vocab vocab.gguf "$@" --val-fraction 0.01 \
  --seq-len 1024 --batch 4 --seed 1 --steps "$steps" $sched_opts $eval_opts --log-every 10 \
  -o megalodon-default.gguf --log train.jsonl --plot loss.png \
  --checkpoint-dir megalodon-default.gguf.ckpt)

# ---------------------------------------------------------------- 3. checks and evaluation
log "the library's tokenizer against SentencePiece on the held-out books"
for f in "$work"/eval/*.txt; do
  b=$(basename "$f" .txt)
  "$run" tokenize -m "$model" -f "$f" | tr -s ' \n' '\n\n' | grep . > "$work/eval/$b.ids"
  "$PYTHON" -c '
import sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    print("\n".join(map(str, sp.encode(f.read()))))' "$work/tokenizer.model" "$f" > "$work/eval/$b.sp.ids"
  if cmp -s "$work/eval/$b.ids" "$work/eval/$b.sp.ids"; then
    log "  $b: the same $(wc -l < "$work/eval/$b.ids") ids"
    rm -f "$work/eval/$b.sp.ids"
  else
    log "  $b: megalodon-run tokenize and SentencePiece differ"
    exit 1
  fi
done
for f in "$work"/train/*.txt; do
  "$run" tokenize -m "$model" -f "$f" > "$work/train/$(basename "$f" .txt).ids"
done

log "perplexity of the held-out books (megalodon-run perplexity, whole books, exact streaming)"
: > "$work/eval.txt"
total_tokens=0
total_nll=0
for f in "$work"/eval/*.txt; do
  b=$(basename "$f" .txt)
  "$run" perplexity -m "$model" -f "$f" --json 2> /dev/null | grep '^{' | tail -1 > "$work/eval/$b.ppl.json"
  echo "$b $(cat "$work/eval/$b.ppl.json")" | tee -a "$work/eval.txt"
done
"$PYTHON" - "$work" <<'EOF' | tee -a "$work/eval.txt"
import glob, json, math, os, sys
tok = nll = 0
for p in sorted(glob.glob(os.path.join(sys.argv[1], "eval", "*.ppl.json"))):
    r = json.load(open(p))
    tok += r["tokens"]
    nll += r["nll"]
print("model, all held-out books: tokens %d  nll/token %.4f  ppl %.2f" % (tok, nll / tok, math.exp(nll / tok)))
EOF
log "unigram baseline (training-token frequencies, add-one smoothing)"
eos=$("$run" info -m "$model" | sed -n 's/^ *EOS  *\([0-9][0-9]*\) .*/\1/p' | head -1)
"$PYTHON" "$here/unigram.py" --vocab-size 4096 --eos "${eos:-2}" \
  --train "$work"/train/*.ids --eval "$work"/eval/*.ids | tee -a "$work/eval.txt"

log "a sample"
"$run" -m "$model" -p "It was a bright cold day" -n 60 -s 1 2> /dev/null | tee -a "$work/eval.txt"
echo

# ---------------------------------------------------------------- 4. into the source tree
if [ $install -eq 1 ]; then
  mkdir -p "$top/models" "$top/docs/img"
  cp "$model" "$top/models/megalodon-default.gguf"
  cp "$work/tokenizer.model" "$top/models/megalodon-default.tokenizer.model"
  cp "$work/train.jsonl" "$top/docs/img/default-model-train.jsonl"
  [ -f "$work/loss.png" ] && cp "$work/loss.png" "$top/docs/img/default-model-loss.png"
  log "installed models/megalodon-default.gguf, models/megalodon-default.tokenizer.model, docs/img/default-model-{train.jsonl,loss.png}"
fi
log "done: $work"
