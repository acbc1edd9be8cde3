#!/bin/sh
# test-train-cli - megalodon-train end to end on a tiny model: --help and --version; every kind
# of bad option (exit 2), bad data and bad JSON config (exit 1) with its message;
# --print-config of the presets and its round trip through --config; a new model from a
# preset; the loss going down on a tiny repetitive corpus; the model written at the end
# loading in megalodon-run (info, generation, perplexity close to the validation loss); the
# JSONL log; the plot (with gnuplot, and the note without it); a non-finite loss stopping the
# run with the last good checkpoint kept; training on token ids and continuing a model (-m).
#
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR (as set by `make check`); MEGALODON_TRAIN and
# MEGALODON_RUN override the programs' paths.
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
train=${MEGALODON_TRAIN:-$build/bin/megalodon-train}
run=${MEGALODON_RUN:-$build/bin/megalodon-run}
vocab=$golden/ppl-byte.gguf # a model with a byte tokenizer (258 tokens)

need "$train" "$run"
make_tmp test-train-cli

# the losses of the log's lines of a type, one per line
losses() { grep "\"type\": \"$2\"" "$1" | sed 's/.*"loss": \([^,}]*\).*/\1/'; }

# ---------------------------------------------------------------- data and a tiny config
tiny_corpus "$tmp/corpus.txt"
tiny_config "$tmp/cfg.json"
new="--config $tmp/cfg.json --vocab $vocab"
small="-L 32 -B 4 -t 2 --no-plot"

# ---------------------------------------------------------------- help and version
run_cmd "$train" --help
if [ "$rc" -eq 0 ] && grep -q "^usage: megalodon-train" "$tmp/out"; then
  missing=""
  for opt in --preset --config --model --vocab --vocab-size --print-config --data --tokens \
    --val-fraction --seq-len --batch --accum --data-order --seed --steps --lr --warmup \
    --schedule --lr-init-ratio --lr-end-ratio --weight-decay --clip --beta1 --beta2 --adam-eps \
    --threads --cema --output --log --plot --no-plot --log-every --eval-every --eval-batches \
    --checkpoint-every --checkpoint-dir --keep --resume --help --version; do
    grep -q -- "$opt" "$tmp/out" || missing="$missing $opt"
  done
  presets=""
  for p in tiny small base mega200M mega1.3B mega1.3B_pg19 mega7.1B mega7.3B; do
    grep -Eq "^ +$p +[0-9]" "$tmp/out" || presets="$presets $p"
  done
  if [ -z "$missing$presets" ] && grep -q "(default: 0.05)" "$tmp/out" \
    && grep -q "(default: random)" "$tmp/out" && grep -q "(default: 1000)" "$tmp/out"; then
    ok "help describes every option, the presets and the defaults"
  else
    bad "help lacks options [$missing ] or presets [$presets ] or defaults"
  fi
else
  bad "--help: exit $rc"
fi
run_cmd "$train" --version
[ "$rc" -eq 0 ] && grep -Eq "^megalodon-train \(libmegalodon [0-9]+\.[0-9]+\.[0-9]+\)" "$tmp/out" \
  && ok "--version: $(cat "$tmp/out")" || bad "--version: exit $rc: $(cat "$tmp/out")"

# ---------------------------------------------------------------- bad options (exit 2)
base="$new --data $tmp/corpus.txt -o $tmp/x.gguf -t 2 --no-plot"
expect 2 "unknown option '--frobnicate'" "unknown option" "$train" --frobnicate
expect 2 "unknown preset 'huge' for --preset: expected one of tiny" "unknown preset" "$train" --preset huge
expect 2 "invalid value '0' for --batch: must be in \[1," "batch 0" "$train" $base --batch 0
expect 2 "invalid value 'x' for --steps: expected an integer" "steps not a number" "$train" $base --steps x
expect 2 "invalid value '-1' for --lr: must be > 0" "negative lr" "$train" $base --lr -1
expect 2 "invalid value '1' for --val-fraction: must be in \[0, 1\)" "val-fraction 1" "$train" $base --val-fraction 1
expect 2 "invalid value 'step' for --schedule: expected linear, cosine or constant" "bad schedule" "$train" $base --schedule step
expect 2 "invalid value 'shuffled' for --data-order: expected random or sequential" "bad order" "$train" $base --data-order shuffled
expect 2 "invalid value 'fast' for --cema: expected auto, fft or scan" "bad cema" "$train" $base --cema fast
expect 2 "invalid value '-3' for --seed" "negative seed" "$train" $base --seed -3
expect 2 "option '--lr' needs a value" "missing value" "$train" $base --lr
expect 2 "option '--no-plot' takes no value" "value for a flag" "$train" $base --no-plot=1
expect 2 "unexpected argument 'extra'" "stray argument" "$train" $base extra
expect 2 "no model: give --preset NAME, --config FILE or -m MODEL" "no model" "$train" --data "$tmp/corpus.txt" -o "$tmp/x.gguf"
expect 2 "cannot be combined with --preset or --config" "-m and --preset" "$train" -m "$vocab" --preset tiny --data "$tmp/corpus.txt" -o "$tmp/x.gguf"
expect 2 "-m brings its own vocabulary" "-m and --vocab-size" "$train" -m "$vocab" --vocab-size 10 --data "$tmp/corpus.txt" -o "$tmp/x.gguf"
expect 2 "give --vocab FILE or --vocab-size N, not both" "--vocab and --vocab-size" "$train" --preset tiny --vocab "$vocab" --vocab-size 300 --data "$tmp/corpus.txt" -o "$tmp/x.gguf"
expect 2 "-o OUT.gguf is required" "no output" "$train" $new --data "$tmp/corpus.txt"
expect 2 "no data: give --data FILE" "no data" "$train" $new -o "$tmp/x.gguf"
expect 2 "a new model needs a vocabulary" "no vocabulary" "$train" --preset tiny --data "$tmp/corpus.txt" -o "$tmp/x.gguf"
expect 2 "--resume continues the checkpoint's model: --preset cannot be given" "--resume with --preset" "$train" --resume "$tmp" --preset tiny
expect 2 "--resume without a path looks in the checkpoint directory" "--resume without a place" "$train" --resume -t 2
expect 2 "--seq-len 20: must be below the chunk size \(16\) or a multiple of it" "seq-len not fitting the chunk" "$train" $base --seq-len 20
[ ! -e "$tmp/x.gguf" ] && ok "no output after the errors" || bad "an output was written by a failing run"

# ---------------------------------------------------------------- bad data (exit 1)
printf 'hi' > "$tmp/short.txt"
expect 1 "cannot open '$tmp/none.txt'" "missing data file" "$train" $new --data "$tmp/none.txt" -o "$tmp/x.gguf" $small
expect 1 "the training data has 4 ids: fewer than one row of --seq-len \+ 1 = 33" "data shorter than a row" "$train" $new --data "$tmp/short.txt" --val-fraction 0 -o "$tmp/x.gguf" $small
expect 1 "the validation part .* fewer than one row" "validation part too short" "$train" $new --data "$tmp/corpus.txt" --val-fraction 0.001 -o "$tmp/x.gguf" $small
printf 'ab\377cd' > "$tmp/bad-utf8.txt"
expect 1 "not valid UTF-8 \(byte offset 2: 0xff\)" "text that is not UTF-8" "$train" $new --data "$tmp/bad-utf8.txt" -o "$tmp/x.gguf" $small
printf '1 2 3\n4 300 5\n' > "$tmp/bad.ids"
expect 1 "bad.ids: token 5 \(line 2\): id 300 is out of range \[0, 258\)" "token id out of range" "$train" $new --tokens "$tmp/bad.ids" -o "$tmp/x.gguf" $small
printf '1 2 x3\n' > "$tmp/bad2.ids"
expect 1 "'x3' is not a token id" "a word that is not an id" "$train" $new --tokens "$tmp/bad2.ids" -o "$tmp/x.gguf" $small
expect 1 "the model has no tokenizer to read text with" "text without a tokenizer" "$train" --config "$tmp/cfg.json" --vocab-size 258 --data "$tmp/corpus.txt" -o "$tmp/x.gguf" $small
# a vocabulary file without a tokenizer; a config whose vocabulary is smaller than it
expect 1 "base\.gguf: no tokenizer vocabulary \(tokenizer\.ggml\.tokens\)" "--vocab without a tokenizer" \
  "$train" --config "$tmp/cfg.json" --vocab "$top/tests/golden/base.gguf" --data "$tmp/corpus.txt" -o "$tmp/x.gguf" $small
sed 's/"norm_groups": 4}/"norm_groups": 4, "n_vocab": 100}/' "$tmp/cfg.json" > "$tmp/cfg-v100.json"
expect 1 "n_vocab 100 is smaller than the tokenizer of --vocab .*ppl-byte.gguf \(258 tokens\)" "n_vocab below the vocabulary" \
  "$train" --config "$tmp/cfg-v100.json" --vocab "$vocab" --data "$tmp/corpus.txt" -o "$tmp/x.gguf" $small
expect 1 "--vocab $tmp/corpus.txt: " "--vocab that is not GGUF" "$train" --config "$tmp/cfg.json" --vocab "$tmp/corpus.txt" --data "$tmp/corpus.txt" -o "$tmp/x.gguf" $small

# ---------------------------------------------------------------- bad JSON configs (exit 1)
bad_config() { # WHAT PATTERN JSON
  printf '%s\n' "$3" > "$tmp/bad.json"
  expect 1 "$2" "config: $1" "$train" --config "$tmp/bad.json" --vocab "$vocab" --data "$tmp/corpus.txt" -o "$tmp/x.gguf" $small
}
bad_config "syntax" "not a flat JSON object: line 1, column 16: expected a key" '{"n_layer": 2, }'
bad_config "not an object" "expected a JSON object" '[1, 2]'
bad_config "empty file" "empty input" ''
bad_config "text after the object" "unexpected text after the object" '{"n_layer": 2} x'
bad_config "unknown key" "line 2: unknown key \"layers\"" '{"n_layer": 2,
 "layers": 2}'
bad_config "string for an integer" "\"n_embd\" must be an integer, not a string" '{"n_embd": "32"}'
bad_config "fraction for an integer" "\"n_embd\" must be an integer \(got 32.5\)" '{"n_embd": 32.5}'
bad_config "negative size" "\"n_layer\" = -1 is out of range \[1," '{"n_layer": -1}'
bad_config "flag not boolean" "\"swiglu\" must be true or false \(or 0 or 1\), not another number" '{"swiglu": 2}'
bad_config "number for a flag" "\"share_emb\" must be true or false .*not a string" '{"share_emb": "yes"}'
bad_config "nested value" "key \"n_ff\": nested objects and arrays are not supported" '{"n_ff": [64]}'
bad_config "duplicate key" "duplicate key \"n_ff\"" '{"n_ff": 64, "n_ff": 32}'
bad_config "bad number" "column 11: bad number: no leading zeros" '{"n_ff": 064}'
bad_config "bad exponent" "bad number: a digit must follow the exponent" '{"norm_eps": 1e}'
bad_config "bad escape" "bad escape '\\\\q'" '{"n_ff\q": 1}'
bad_config "unterminated string" "unterminated string \(the line ends inside it\)" '{"n_ff'
bad_config "zero eps" "\"norm_eps\" = 0 must be positive" '{"norm_eps": 0}'
bad_config "inconsistent shape" "model config: n_embd 32 is not divisible by norm_groups 5" '{"n_layer": 1, "n_embd": 32, "z_dim": 16, "value_dim": 32, "n_head": 1, "n_ff": 32, "cema_ndim": 2, "chunk_size": 16, "norm_groups": 5}'
bad_config "odd RoPE dimension" "z_dim / n_head = 15 is odd" '{"n_layer": 1, "n_embd": 32, "z_dim": 15, "value_dim": 32, "n_head": 1, "n_ff": 32, "cema_ndim": 2, "chunk_size": 16, "norm_groups": 4}'

# ---------------------------------------------------------------- --print-config
run_cmd "$train" --preset mega200M --vocab-size 32000 --print-config
grep -q '"n_layer": 12,' "$tmp/out" && grep -q '"n_embd": 1024,' "$tmp/out" && grep -q '"n_ff": 2560,' \
  "$tmp/out" && grep -q '"n_vocab": 32000,' "$tmp/out" && ok "mega200M preset (docs/model.md §13)" \
  || bad "mega200M preset: $(tr -d '\n' < "$tmp/out")"
run_cmd "$train" --preset mega1.3B_pg19 --vocab-size 32000 --print-config
grep -q '"n_ff": 3584,' "$tmp/out" && grep -q '"swiglu": true,' "$tmp/out" && grep -q '"share_emb": true,' \
  "$tmp/out" && grep -q '"scale_emb": true,' "$tmp/out" && ok "mega1.3B_pg19 preset" || bad "mega1.3B_pg19 preset"
run_cmd "$train" --preset small --vocab "$vocab" --print-config
cp "$tmp/out" "$tmp/small.json"
run_cmd "$train" --config "$tmp/small.json" --print-config
if cmp -s "$tmp/out" "$tmp/small.json" && grep -q '"n_vocab": 258,' "$tmp/small.json" \
  && grep -q '"chunk_size": 256,' "$tmp/small.json"; then
  ok "--print-config round trip through --config (vocabulary from --vocab: 258)"
else
  bad "--print-config round trip"
fi
printf '{"n_layer": 3}\n' > "$tmp/over.json"
run_cmd "$train" --preset tiny --config "$tmp/over.json" --vocab-size 100 --print-config
grep -q '"n_layer": 3,' "$tmp/out" && grep -q '"n_embd": 64,' "$tmp/out" \
  && ok "--config over --preset changes only its keys" || bad "--config over --preset"

# ---------------------------------------------------------------- a new model from a preset
run_cmd "$train" --preset tiny --vocab "$vocab" --data "$tmp/corpus.txt" -o "$tmp/tiny.gguf" \
  -L 16 -B 2 -n 2 -t 2 --no-plot --checkpoint-every 0
if [ "$rc" -eq 0 ] && [ -s "$tmp/tiny.gguf" ]; then
  run_cmd "$run" info -m "$tmp/tiny.gguf"
  if [ "$rc" -eq 0 ] && grep -Eq "n_embd \(D\) +64 " "$tmp/out" && grep -Eq "chunk_size \(C\) +64 " \
    "$tmp/out" && grep -Eq "n_vocab \(V\) +258 " "$tmp/out" && grep -q "^tokenizer: byte" "$tmp/out"; then
    ok "--preset tiny: the model file has the preset's shape and the tokenizer of --vocab"
  else
    bad "--preset tiny: megalodon-run info: exit $rc: $(head -5 "$tmp/out")"
  fi
  [ ! -e "$tmp/tiny.ckpt" ] || [ -z "$(ls "$tmp/tiny.ckpt")" ] \
    && ok "--checkpoint-every 0 writes no checkpoint" || bad "--checkpoint-every 0 wrote $(ls "$tmp/tiny.ckpt")"
else
  bad "--preset tiny: exit $rc: $(head -3 "$tmp/err")"
fi

# ---------------------------------------------------------------- training: the loss goes down
run_cmd "$train" $new --data "$tmp/corpus.txt" -o "$tmp/m.gguf" -L 32 -B 4 -n 40 --lr 3e-3 \
  --eval-every 10 --eval-batches 2 --checkpoint-every 20 --log-every 10 -t 2
cp "$tmp/out" "$tmp/train.out"
cp "$tmp/err" "$tmp/train.err"
if [ "$rc" -ne 0 ]; then
  bad "training run: exit $rc: $(head -3 "$tmp/err")"
else
  losses "$tmp/m.jsonl" train > "$tmp/train.losses"
  first=$(head -5 "$tmp/train.losses" | awk '{ s += $1 } END { print s / NR }')
  last=$(tail -5 "$tmp/train.losses" | awk '{ s += $1 } END { print s / NR }')
  if awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < 0.5 * f) }'; then
    ok "the loss goes down: mean of the first 5 steps $first, of the last 5 $last"
  else
    bad "the loss did not halve: first 5 steps $first, last 5 $last"
  fi
  vfirst=$(losses "$tmp/m.jsonl" val | head -1)
  vlast=$(losses "$tmp/m.jsonl" val | tail -1)
  awk -v f="$vfirst" -v l="$vlast" 'BEGIN { exit !(l < f && l < 2.0) }' \
    && ok "the validation loss goes down: $vfirst -> $vlast" || bad "validation loss $vfirst -> $vlast"
  grep -Eq "^step 10/40  loss [0-9.]+  lr [0-9.e+-]+  grad [0-9.]+  [0-9]+ tok/s  ETA " "$tmp/train.out" \
    && grep -Eq "^step 40/40  validation loss [0-9.]+  ppl [0-9.]+" "$tmp/train.out" \
    && ok "progress lines: $(grep '^step 10/40' "$tmp/train.out" | head -1)" \
    || bad "progress lines: $(head -5 "$tmp/train.out")"

  # ---------------------------------------------------------------- the model file
  run_cmd "$run" -m "$tmp/m.gguf" -p "the quick" -n 24 --temp 0 -t 2
  if [ "$rc" -eq 0 ] && [ "$(wc -c < "$tmp/out")" -gt 9 ]; then
    ok "megalodon-run generates from the trained model: $(tr '\n' ' ' < "$tmp/out")"
  else
    bad "generation from the trained model: exit $rc: $(head -3 "$tmp/err")"
  fi
  run_cmd "$run" perplexity -m "$tmp/m.gguf" -f "$tmp/corpus.txt" --json -t 2
  ppl=$(sed -n 's/.*"ppl": \([0-9.e+-]*\).*/\1/p' "$tmp/out")
  awk -v p="$ppl" -v l="$vlast" 'BEGIN { exit !(p != "" && p < 3 && p < 2 * exp(l)) }' \
    && ok "perplexity of the corpus with the saved model: $ppl (validation ppl $(awk -v l="$vlast" 'BEGIN { print exp(l) }'))" \
    || bad "perplexity of the saved model: '$ppl' (validation loss $vlast)"

  # ---------------------------------------------------------------- the log
  log=$tmp/m.jsonl
  n_lines=$(wc -l < "$log")
  n_obj=$(grep -c '^{.*}$' "$log")
  n_train=$(grep -c '"type": "train"' "$log")
  n_val=$(grep -c '"type": "val"' "$log")
  steps=$(grep '"type": "train"' "$log" | sed 's/.*"step": \([0-9]*\),.*/\1/' | tr '\n' ' ')
  want_steps=$(seq 1 40 | tr '\n' ' ')
  if [ "$n_lines" -eq "$n_obj" ] && [ "$n_train" -eq 40 ] && [ "$n_val" -eq 4 ] \
    && [ "$steps" = "$want_steps" ] && head -1 "$log" | grep -q '"type": "start"' \
    && tail -1 "$log" | grep -q '"type": "end", "step": 40, "status": "done"' \
    && [ "$(grep -c '"type": "checkpoint"' "$log")" -eq 2 ] \
    && ! grep -q '"loss": null' "$log"; then
    ok "JSONL log: $n_lines lines: start, 40 train (steps 1..40), 4 val, 2 checkpoints, end"
  else
    bad "JSONL log: $n_lines lines ($n_obj objects), $n_train train, $n_val val, steps: $steps"
  fi
  py=${MG_PYTHON:-python3}
  if command -v "$py" > /dev/null 2>&1 && "$py" -c 'import json' 2> /dev/null; then
    if "$py" - "$log" <<'EOF'
import json, math, sys
need = {"start": ["step", "n_params", "seq_len", "batch"],
        "train": ["step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"],
        "val": ["step", "loss", "ppl", "tokens"], "checkpoint": ["step", "path"],
        "end": ["step", "status", "message"]}
for n, line in enumerate(open(sys.argv[1]), 1):
    o = json.loads(line)
    for k in need[o["type"]]:
        assert k in o, (n, k)
    if o["type"] in ("train", "val"):
        assert math.isfinite(o["loss"]) and o["loss"] > 0, n
EOF
    then ok "every log line parses as JSON with its keys ($py)"
    else bad "the log does not parse as JSON lines ($py)"
    fi
  else
    echo "skip: no python3 with json to parse the log strictly (the grep checks above ran)"
  fi

  # ---------------------------------------------------------------- the plot
  if command -v gnuplot > /dev/null 2>&1; then
    if [ -s "$tmp/m.png" ] && [ "$(head -c 4 "$tmp/m.png" | od -An -c | tr -d ' ')" = "211PNG" ] \
      && grep -q "^plot: $tmp/m.png" "$tmp/train.out"; then
      ok "plot drawn: m.png ($(wc -c < "$tmp/m.png") bytes)"
    else
      bad "no PNG plot although gnuplot is installed: $(cat "$tmp/train.err")"
    fi
  else
    echo "skip: gnuplot is not installed: the PNG plot is not checked"
  fi
fi
MEGALODON_GNUPLOT=$tmp/no-gnuplot "$train" $new --data "$tmp/corpus.txt" -o "$tmp/p.gguf" -L 32 -B 2 \
  -n 2 -t 2 --checkpoint-every 0 > "$tmp/out" 2> "$tmp/err"
rc=$?
[ "$rc" -eq 0 ] && grep -q "note: gnuplot is not installed" "$tmp/out" && [ ! -e "$tmp/p.png" ] \
  && ok "without gnuplot: a note, no plot, exit 0" || bad "without gnuplot: exit $rc, $(cat "$tmp/out")"

# ---------------------------------------------------------------- a fresh run refuses old checkpoints
expect 1 "already holds checkpoints of another run: continue it with --resume" "checkpoint directory in use" \
  "$train" $new --data "$tmp/corpus.txt" -o "$tmp/m.gguf" -n 2 $small

# ---------------------------------------------------------------- a non-finite loss
run_cmd "$train" $new --data "$tmp/corpus.txt" -o "$tmp/nan.gguf" -n 20 --lr 1e30 --clip 0 \
  --weight-decay 0 --checkpoint-every 1 --keep 2 $small
if [ "$rc" -eq 1 ] && grep -q "the loss or the gradient is not finite" "$tmp/err" \
  && grep -Eq "the last checkpoint is .*step-0+[0-9]+\.ckpt" "$tmp/err"; then
  ck=$(sed -n 's/.*the last checkpoint is \(.*step-0*[0-9]*\.ckpt\).*/\1/p' "$tmp/err")
  if [ -s "$ck" ] && [ ! -e "$tmp/nan.gguf" ] && tail -1 "$tmp/nan.jsonl" | grep -q '"status": "error"'; then
    ok "a non-finite loss stops the run (exit 1, no model, last good checkpoint $(basename "$ck") kept)"
  else
    bad "non-finite loss: checkpoint '$ck', model or log end wrong"
  fi
else
  bad "non-finite loss: exit $rc: $(head -3 "$tmp/err")"
fi

# ---------------------------------------------------------------- token ids, -m
"$run" tokenize -m "$vocab" -f "$tmp/corpus.txt" > "$tmp/corpus.ids" 2> /dev/null
run_cmd "$train" --config "$tmp/cfg.json" --vocab-size 258 --tokens "$tmp/corpus.ids" \
  -o "$tmp/ids.gguf" -n 3 --data-order sequential --accum 2 --checkpoint-every 0 $small
n_ids=$(wc -c < "$tmp/corpus.txt") # one id per byte
if [ "$rc" -eq 0 ] && grep -q "^data: $n_ids ids" "$tmp/out"; then
  run_cmd "$run" info -m "$tmp/ids.gguf"
  grep -q "^tokenizer: none" "$tmp/out" && ok "--tokens with --vocab-size: $n_ids ids, sequential order, accumulation; a model without a tokenizer" \
    || bad "--vocab-size: the model has a tokenizer: $(grep tokenizer "$tmp/out")"
else
  bad "--tokens: exit $rc: $(head -3 "$tmp/err") $(grep '^data' "$tmp/out")"
fi
if [ -s "$tmp/m.gguf" ]; then
  run_cmd "$train" -m "$tmp/m.gguf" --data "$tmp/corpus.txt" -o "$tmp/m2.gguf" -n 2 --lr 1e-4 \
    --checkpoint-every 0 $small
  l1=$(losses "$tmp/m2.jsonl" train | head -1)
  [ "$rc" -eq 0 ] && awk -v l="$l1" -v v="$vlast" 'BEGIN { exit !(l != "" && l < 2.0) }' \
    && ok "-m continues the trained model (first loss $l1)" || bad "-m: exit $rc, first loss '$l1'"
fi

exit $fail
