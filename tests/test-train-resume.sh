#!/bin/sh
# test-train-resume - megalodon-train checkpoints and exact resumption on a tiny model:
#  - a run of 30 steps without a stop (A) and the same run killed with SIGKILL after some
#    checkpoints exist (B), then resumed with `--resume DIR` alone: the losses of the steps
#    after the checkpoint (and the whole logged history) equal A's exactly, and so does the
#    final model file;
#  - SIGINT and SIGTERM: the current step ends, a checkpoint is written, exit status 3, and
#    the run continues from it;
#  - a truncated checkpoint, one with flipped bytes and one whose stored options were changed
#    are refused when named (exit 1, with the library's or the program's message); `--resume DIR` skips them with a warning and continues from the
#    newest usable one (here step 20), exactly as A; a directory without a usable one is an
#    error;
#  - options that decide the data positions (--seq-len, --seed, --data-order, the data files
#    and their contents) must match the checkpoint.
# The thread count is the same (-t 2) in every run.
#
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR (as set by `make check`); MEGALODON_TRAIN
# overrides the program's path.
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
train=${MEGALODON_TRAIN:-$build/bin/megalodon-train}
vocab=$golden/ppl-byte.gguf # a model with a byte tokenizer (258 tokens)

need "$train"
make_tmp test-train-resume # (it kills the runs it started in the background, $pids, at exit)
# "STEP LOSS" of the log's lines of a type (train or val), steps > FROM
losses() { # LOG TYPE FROM
  grep "\"type\": \"$2\"" "$1" | sed 's/.*"step": \([0-9]*\), "loss": \([^,}]*\).*/\1 \2/' \
    | awk -v f="$3" '$1 > f'
}
nap() { sleep 0.1 2> /dev/null || sleep 1; }
# wait_for CMD...: until CMD succeeds (at most 60 s); 1 on time-out
wait_for() {
  n=0
  until "$@"; do
    n=$((n + 1))
    [ $n -gt 600 ] && return 1
    nap
  done
  return 0
}
n_train_lines() {
  c=$(grep -c '"type": "train"' "$1" 2> /dev/null)
  echo "${c:-0}"
}
has_steps() { [ "$(n_train_lines "$1")" -ge "$2" ]; } # LOG N

tiny_corpus "$tmp/corpus.txt"
tiny_config "$tmp/cfg.json"
opts="--config $tmp/cfg.json --vocab $vocab --data $tmp/corpus.txt -L 32 -B 2 --accum 2 -s 7
  --lr 3e-3 --warmup 3 --schedule cosine --eval-every 10 --eval-batches 1 --log-every 10 -t 2
  --no-plot"

# ---------------------------------------------------------------- A: without a stop
run_cmd "$train" $opts -n 30 -o "$tmp/A.gguf" --checkpoint-every 5 --keep 3
if [ "$rc" -ne 0 ]; then
  bad "the uninterrupted run: exit $rc: $(head -3 "$tmp/err")"
  exit 1
fi
ls "$tmp/A.ckpt" | tr '\n' ' ' > "$tmp/kept"
[ "$(cat "$tmp/kept")" = "step-00000020.ckpt step-00000025.ckpt step-00000030.ckpt " ] \
  && ok "--keep 3 keeps the newest three checkpoints: $(cat "$tmp/kept")" \
  || bad "--keep 3 left: $(cat "$tmp/kept")"

# ---------------------------------------------------------------- B: killed, then resumed
"$train" $opts -n 30 -o "$tmp/B.gguf" --checkpoint-every 5 --keep 0 > "$tmp/B.out" 2> "$tmp/B.err" &
pid=$!
pids="$pid"
wait_for test -e "$tmp/B.ckpt/step-00000010.ckpt" || bad "no checkpoint of step 10 within 60 s"
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null # (no "Killed" from the shell)
brc=$?
pids=""
if [ "$brc" -eq 137 ]; then
  at=$(n_train_lines "$tmp/B.jsonl")
  ok "SIGKILL at step $at of 30 (checkpoints: $(ls "$tmp/B.ckpt" | tr '\n' ' '))"
else
  # it finished first (a fast machine): resume from step 10 as if it had been killed there
  echo "note: the run ended (exit $brc) before SIGKILL: resuming from step 10 instead"
  for f in "$tmp"/B.ckpt/step-*.ckpt; do
    s=$(basename "$f" .ckpt | sed 's/^step-0*//')
    [ "$s" -gt 10 ] && rm -f "$f"
  done
  rm -f "$tmp/B.gguf"
fi
from=$(ls "$tmp/B.ckpt" | sed -n 's/^step-0*\([0-9][0-9]*\)\.ckpt$/\1/p' | sort -n | tail -1)
run_cmd "$train" --resume "$tmp/B.ckpt" -t 2
if [ "$rc" -eq 0 ] && grep -q "^resuming from $tmp/B.ckpt/step-0*$from.ckpt (step $from)" "$tmp/out"; then
  ok "--resume DIR alone (data, options and outputs from the checkpoint) from step $from"
  losses "$tmp/A.jsonl" train "$from" > "$tmp/a.after"
  losses "$tmp/B.jsonl" train "$from" > "$tmp/b.after"
  if [ -s "$tmp/a.after" ] && cmp -s "$tmp/a.after" "$tmp/b.after"; then
    ok "the losses of steps $((from + 1))..30 equal the uninterrupted run's exactly ($(wc -l < "$tmp/a.after") steps, last: $(tail -1 "$tmp/b.after"))"
  else
    bad "the losses after the resume differ: $(diff "$tmp/a.after" "$tmp/b.after" | head -4 | tr '\n' ' ')"
  fi
  losses "$tmp/A.jsonl" train 0 > "$tmp/a.all"
  losses "$tmp/B.jsonl" train 0 > "$tmp/b.all"
  losses "$tmp/A.jsonl" val 0 >> "$tmp/a.all"
  losses "$tmp/B.jsonl" val 0 >> "$tmp/b.all"
  cmp -s "$tmp/a.all" "$tmp/b.all" \
    && ok "the resumed log holds the whole history once: every train and val loss equals A's" \
    || bad "the resumed log differs from A's: $(diff "$tmp/a.all" "$tmp/b.all" | head -4 | tr '\n' ' ')"
  grep -q '"type": "resume"' "$tmp/B.jsonl" && ok "the log records the resume" || bad "no resume line in the log"
  cmp -s "$tmp/A.gguf" "$tmp/B.gguf" && ok "the final model equals the uninterrupted run's, byte for byte" \
    || bad "the final models differ"
else
  bad "resume of the killed run: exit $rc: $(head -3 "$tmp/err") $(head -1 "$tmp/out")"
fi

# ---------------------------------------------------------------- SIGINT and SIGTERM
for sig in INT TERM; do
  "$train" $opts -n 1000 -o "$tmp/$sig.gguf" --checkpoint-every 1000 > "$tmp/$sig.out" 2> "$tmp/$sig.err" &
  pid=$!
  pids="$pid"
  wait_for has_steps "$tmp/$sig.jsonl" 2 || bad "SIG$sig run: no progress in 60 s"
  kill -"$sig" "$pid"
  wait "$pid"
  src=$?
  pids=""
  n=$(sed -n "s/.*stopped by SIG$sig after step \([0-9]*\);.*/\1/p" "$tmp/$sig.err")
  if [ "$src" -eq 3 ] && [ -n "$n" ] && [ -s "$tmp/$sig.ckpt/step-$(printf %08d "$n").ckpt" ] \
    && tail -1 "$tmp/$sig.jsonl" | grep -q '"status": "interrupted"' && [ ! -e "$tmp/$sig.gguf" ]; then
    ok "SIG$sig: exit 3 after step $n with its checkpoint: $(cat "$tmp/$sig.err")"
    run_cmd "$train" --resume -o "$tmp/$sig.gguf" -t 2 -n $((n + 2))
    steps=$(grep '"type": "train"' "$tmp/$sig.jsonl" | sed 's/.*"step": \([0-9]*\),.*/\1/' | tr '\n' ' ')
    [ "$rc" -eq 0 ] && [ "$steps" = "$(seq 1 $((n + 2)) | tr '\n' ' ')" ] && [ -s "$tmp/$sig.gguf" ] \
      && ok "SIG$sig: --resume (the directory of -o) with a longer --steps continues to step $((n + 2))" \
      || bad "SIG$sig: resume: exit $rc, logged steps $steps: $(head -2 "$tmp/err")"
  else
    bad "SIG$sig: exit $src, step '$n': $(cat "$tmp/$sig.err")"
  fi
done

# ---------------------------------------------------------------- corrupt checkpoints
# E.ckpt: step 30 truncated to half, step 25 with 8 bytes near the end overwritten
mkdir "$tmp/E.ckpt"
f30=$tmp/E.ckpt/step-00000030.ckpt
f25=$tmp/E.ckpt/step-00000025.ckpt
size=$(wc -c < "$tmp/A.ckpt/step-00000030.ckpt")
dd if="$tmp/A.ckpt/step-00000030.ckpt" of="$f30" bs=$((size / 2)) count=1 2> /dev/null
cp "$tmp/A.ckpt/step-00000025.ckpt" "$f25"
printf '\377\377\377\377\377\377\377\377' | dd of="$f25" bs=1 seek=$((size - 100)) conv=notrunc 2> /dev/null
cmp -s "$f25" "$tmp/A.ckpt/step-00000025.ckpt" && bad "the byte flip did not change the file"
# D.ckpt: A's three checkpoints with those two replaced
cp -r "$tmp/A.ckpt" "$tmp/D.ckpt"
cp "$f30" "$f25" "$tmp/D.ckpt/"
expect 1 "--resume: the checkpoint is not usable: .*step-00000030\.ckpt" "a truncated checkpoint" \
  "$train" --resume "$tmp/D.ckpt/step-00000030.ckpt" -o "$tmp/D.gguf" --log "$tmp/D.jsonl" -t 2
expect 1 "--resume: the checkpoint is not usable: .*step-00000025\.ckpt" "a checkpoint with flipped bytes" \
  "$train" --resume "$tmp/D.ckpt/step-00000025.ckpt" -o "$tmp/D.gguf" --log "$tmp/D.jsonl" -t 2
expect 1 "--resume: the checkpoint is not usable: .*corpus.txt" "a file that is not a checkpoint" \
  "$train" --resume "$tmp/corpus.txt" -o "$tmp/D.gguf" -t 2
# a changed byte in the options stored in the checkpoint (seq_len 32 -> 62)
mkdir "$tmp/H.ckpt"
cp "$tmp/A.ckpt/step-00000020.ckpt" "$tmp/H.ckpt/"
off=$(grep -boa '"seq_len": 32' "$tmp/H.ckpt/step-00000020.ckpt" 2> /dev/null | head -1 | cut -d: -f1)
if [ -n "$off" ]; then
  printf '6' | dd of="$tmp/H.ckpt/step-00000020.ckpt" bs=1 seek=$((off + 11)) conv=notrunc 2> /dev/null
  expect 1 "step-00000020.ckpt: checkpoint is corrupt: the checksum of its tensor data and train\.\* keys does not match" \
    "a checkpoint whose stored options were changed" "$train" --resume "$tmp/H.ckpt/step-00000020.ckpt" -o "$tmp/D.gguf" --log "$tmp/D.jsonl" -t 2
else
  echo "skip: grep cannot give byte offsets here: the metadata check is not tested"
fi
[ ! -e "$tmp/D.gguf" ] && [ ! -e "$tmp/D.jsonl" ] && ok "nothing written by the refused resumes" \
  || bad "a refused resume wrote files"
run_cmd "$train" --resume "$tmp/D.ckpt" -o "$tmp/D.gguf" --log "$tmp/D.jsonl" -t 2
if [ "$rc" -eq 0 ] && grep -q "^resuming from $tmp/D.ckpt/step-00000020.ckpt (step 20)" "$tmp/out" \
  && grep -q "skipping a checkpoint that is not usable: .*step-00000030.ckpt.*; trying the previous one" "$tmp/err" \
  && grep -q "skipping a checkpoint that is not usable: .*step-00000025.ckpt" "$tmp/err"; then
  ok "--resume DIR skips the two bad checkpoints with a warning and takes step 20"
  losses "$tmp/A.jsonl" train 20 > "$tmp/a.after"
  losses "$tmp/D.jsonl" train 20 > "$tmp/d.after"
  [ -s "$tmp/a.after" ] && cmp -s "$tmp/a.after" "$tmp/d.after" \
    && ok "after the fallback, steps 21..30 equal the uninterrupted run's exactly" \
    || bad "after the fallback the losses differ: $(diff "$tmp/a.after" "$tmp/d.after" | head -4 | tr '\n' ' ')"
  cmp -s "$tmp/A.gguf" "$tmp/D.gguf" && ok "and so does the final model" || bad "the final model differs"
else
  bad "--resume DIR with bad checkpoints: exit $rc: $(head -3 "$tmp/err") $(head -1 "$tmp/out")"
fi
mkdir "$tmp/G.ckpt"
expect 1 "--resume: no checkpoint \(step-N.ckpt\) in '$tmp/G.ckpt'" "an empty checkpoint directory" \
  "$train" --resume "$tmp/G.ckpt" -o "$tmp/G.gguf" -t 2
expect 1 "--resume: no usable checkpoint in '$tmp/E.ckpt' \(2 tried\)" "a directory of bad checkpoints only" \
  "$train" --resume "$tmp/E.ckpt" -o "$tmp/E.gguf" -t 2
expect 1 "--resume: cannot open '$tmp/none.ckpt'" "a missing checkpoint" "$train" --resume "$tmp/none.ckpt" -t 2

# ---------------------------------------------------------------- options that must match
ck=$tmp/A.ckpt/step-00000020.ckpt
expect 2 "--seq-len 16 does not match the checkpoint \(32\)" "another --seq-len" "$train" --resume "$ck" --seq-len 16 -t 2
expect 2 "--batch 3 does not match the checkpoint \(2\)" "another --batch" "$train" --resume "$ck" --batch 3 -t 2
expect 2 "--seed 8 does not match the checkpoint \(7\)" "another --seed" "$train" --resume "$ck" -s 8 -t 2
expect 2 "--data-order sequential does not match the checkpoint \(random\)" "another --data-order" "$train" --resume "$ck" --data-order sequential -t 2
expect 2 "2 data files given, the checkpoint was made with 1" "another number of data files" "$train" --resume "$ck" --data "$tmp/corpus.txt" --data "$tmp/corpus.txt" -t 2
sed 's/lazy/busy/' "$tmp/corpus.txt" > "$tmp/other.txt"
expect 1 "data file 1 \('$tmp/other.txt': [0-9]+ bytes, FNV-1a [0-9a-f]+\) is not the one the checkpoint was made with" \
  "other data" "$train" --resume "$ck" --data "$tmp/other.txt" -t 2
cp "$tmp/corpus.txt" "$tmp/moved.txt"
run_cmd "$train" --resume "$ck" --data "$tmp/moved.txt" -o "$tmp/F.gguf" --log "$tmp/F.jsonl" \
  --checkpoint-dir "$tmp/F.ckpt" -t 2 -n 21
[ "$rc" -eq 0 ] && [ "$(losses "$tmp/F.jsonl" train 0 | wc -l)" -eq 1 ] \
  && ok "the same data under another name is accepted (its contents are checked)" \
  || bad "the same data moved: exit $rc: $(head -2 "$tmp/err")"

exit $fail
