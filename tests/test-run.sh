#!/bin/sh
# test-run - megalodon-run end to end: the help of every mode, --version; perplexity against
# the PyTorch reference (tests/golden/ppl-*.json, made by tests/reference/perplexity_ref.py)
# for several call sizes, both CEMA algorithms, the official statistics window, per-token
# values and a document split in two with --state-out/--state-in; generation that does not
# depend on the thread count and continues exactly from a saved state; interactive turns
# that continue the same state; the text paths (tokenize, -f, -p) on a model with a byte
# tokenizer; and every bad input with its exit status (2 usage, 1 runtime) and message.
#
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR (as set by `make check`); MEGALODON_RUN and
# MG_MAKE_TINY_MODEL override the programs' paths.
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
run=${MEGALODON_RUN:-$build/bin/megalodon-run}
maker=${MG_MAKE_TINY_MODEL:-$build/tests/make-tiny-model}

need "$run"
make_tmp test-run

# ---------------------------------------------------------------- helpers
# max |a_i - b_i| of two JSON arrays (given as the text between the brackets), or "len" if
# the lengths differ
max_diff() {
  echo "$1" | tr -d '[] ' | tr ',' '\n' > "$tmp/a.list"
  echo "$2" | tr -d '[] ' | tr ',' '\n' > "$tmp/b.list"
  if [ "$(wc -l < "$tmp/a.list")" -ne "$(wc -l < "$tmp/b.list")" ]; then echo len; return; fi
  paste "$tmp/a.list" "$tmp/b.list" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d }
    END { printf "%.3g\n", m }'
}
jarray() { sed -n "s/.*\"$2\": \(\[[^]]*\]\).*/\1/p" "$1" | head -1; }

# ---------------------------------------------------------------- help and version
for mode in "" generate perplexity tokenize info; do
  run_cmd "$run" $mode --help
  if [ "$rc" -eq 0 ] && grep -q "^usage: megalodon-run" "$tmp/out" && grep -q -- "--model FILE" "$tmp/out"; then
    ok "help of '${mode:-the program}'"
  else
    bad "help of '${mode:-the program}': exit $rc"
  fi
done
run_cmd "$run" --help
grep -q "perplexity" "$tmp/out" && grep -q "tokenize" "$tmp/out" && grep -q -- "--temp T" "$tmp/out" \
  && grep -q "(default: 0.80)" "$tmp/out" && ok "program help lists the modes and the defaults" \
  || bad "program help lacks modes or defaults"
run_cmd "$run" perplexity --help
grep -q -- "--official-window" "$tmp/out" && grep -q -- "--per-token" "$tmp/out" \
  && ! grep -q -- "--temp" "$tmp/out" && ok "perplexity help has its own options" \
  || bad "perplexity help"
run_cmd "$run" tokenize --help
grep -q -- "--pieces" "$tmp/out" && grep -q -- "--bos" "$tmp/out" && ok "tokenize help" || bad "tokenize help"
run_cmd "$run" --version
if [ "$rc" -eq 0 ] && grep -Eq "libmegalodon [0-9]+\.[0-9]+\.[0-9]+" "$tmp/out"; then
  ok "version: $(cat "$tmp/out")"
else
  bad "--version: exit $rc: $(cat "$tmp/out")"
fi
# an empty MEGALODON_MODEL turns the default model off (tests/test-default-model.sh tests it)
expect 2 "-m FILE is required" "no arguments, no default model" env MEGALODON_MODEL= "$run"
grep -q "Run 'megalodon-run --help' for usage" "$tmp/err" && ok "usage errors point to --help" || bad "no --help hint"

# ---------------------------------------------------------------- perplexity vs the reference
# ppl_check CASE WHAT EXPECT_KEY ARGS...: --json nll within 1e-4 relative of the reference
ppl_check() {
  case_=$1 what=$2 key=$3
  shift 3
  g=$golden/$case_.json
  model=$golden/$(gget "$g" model | tr -d '"')
  toks=$golden/$(gget "$g" tokens_file | tr -d '"')
  want=$(gget "$g" "$key")
  scored=$(gget "$g" scored)
  run_cmd "$run" perplexity -m "$model" --tokens "$toks" --json "$@"
  nll=$(jget "$tmp/out" nll)
  n=$(jget "$tmp/out" tokens)
  ppl=$(jget "$tmp/out" ppl)
  wppl=$(gget "$g" "$(echo "$key" | sed 's/nll/ppl/')")
  if [ "$rc" -eq 0 ] && [ "$n" = "$scored" ] && rel_close "$nll" "$want" 1e-4 && rel_close "$ppl" "$wppl" 1e-4; then
    ok "perplexity $case_ $what: nll $nll (reference $want), ppl $ppl, $n tokens"
  else
    bad "perplexity $case_ $what: exit $rc, tokens '$n', nll '$nll' vs $want, ppl '$ppl' vs $wppl: $(head -2 "$tmp/err")"
  fi
}

for c in ppl-base ppl-heads2; do
  ppl_check $c "default" exact_nll
  ppl_check $c "-b 8 (C)" exact_nll -b 8
  ppl_check $c "-b 1" exact_nll -b 1
  ppl_check $c "-b 3" exact_nll -b 3
  ppl_check $c "-b 40 --cema fft" exact_nll -b 40 --cema fft
  ppl_check $c "-b 40 --cema scan" exact_nll -b 40 --cema scan
  ppl_check $c "-b 3 --cema fft" exact_nll -b 3 --cema fft
  ppl_check $c "-b 1 --cema scan -t 1" exact_nll -b 1 --cema scan -t 1
  ppl_check $c "--official-window" window_nll --official-window
  ppl_check $c "--official-window --cema scan -t 2" window_nll --official-window --cema scan -t 2
done
grep -q "perplexity: 149/149 tokens" "$tmp/err" && ok "progress on stderr" || bad "no progress line: $(cat "$tmp/err")"

# per-token values
g=$golden/ppl-base.json
for mode in exact window; do
  opt=""
  [ $mode = window ] && opt=--official-window
  run_cmd "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --json --per-token $opt
  d=$(max_diff "$(jarray "$tmp/out" per_token_nll)" "$(gget "$g" ${mode}_per_token_nll)")
  if [ "$rc" -eq 0 ] && [ "$d" != len ] && awk -v d="$d" 'BEGIN { exit !(d < 1e-4) }'; then
    ok "--per-token ($mode): 249 values, max abs difference $d from the reference"
  else
    bad "--per-token ($mode): exit $rc, difference '$d'"
  fi
done
# the text form of --per-token: one line per scored token plus the summary
run_cmd "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --per-token
if [ "$rc" -eq 0 ] && [ "$(grep -c '^[0-9]* [0-9]* [0-9.e+-]*$' "$tmp/out")" -eq 249 ] \
   && grep -q "^perplexity: 62.07" "$tmp/out"; then
  ok "--per-token text: 249 lines and '$(tail -1 "$tmp/out")'"
else
  bad "--per-token text: exit $rc: $(tail -2 "$tmp/out")"
fi

# ---------------------------------------------------------------- --isa and -v
# every kernel table this machine has gives the reference's result; -v names the one chosen
run_cmd "$run" info -m "$golden/base.gguf" -v
tables=$(sed -n 's/^backend: .*best first: \(.*\))$/\1/p' "$tmp/err")
best=${tables%% *}
if [ "$rc" -eq 0 ] && [ -n "$tables" ] && grep -q "^backend: cpu/$best (--isa auto" "$tmp/err"; then
  ok "info -v: $(cat "$tmp/err")"
else
  bad "info -v: exit $rc: $(cat "$tmp/err")"
fi
# -v names the BLAS kernel and warns when it is older than an AVX2 CPU (OpenBLAS with
# DYNAMIC_ARCH takes OPENBLAS_CORETYPE; another BLAS ignores it and is only named)
grep -q "^blas: " "$tmp/err" && ok "info -v names the BLAS: $(grep '^blas: ' "$tmp/err")" \
  || bad "info -v does not name the BLAS: $(cat "$tmp/err")"
run_cmd env OPENBLAS_CORETYPE=Prescott "$run" info -m "$golden/base.gguf" -v
if ! grep -q "^blas: .*kernel Prescott" "$tmp/err"; then
  echo "note: OPENBLAS_CORETYPE=Prescott not taken ($(grep '^blas: ' "$tmp/err")): no warning check"
elif [ "${tables#*avx2}" != "$tables" ]; then
  [ "$rc" -eq 0 ] && grep -q "^warning: .*Prescott kernel.*OPENBLAS_CORETYPE=Haswell" "$tmp/err" \
    && ok "the Prescott kernel on an AVX2 CPU is warned about" \
    || bad "no warning for the Prescott kernel on an AVX2 CPU: $(cat "$tmp/err")"
  run_cmd env OPENBLAS_CORETYPE=Haswell "$run" info -m "$golden/base.gguf" -v
  grep -q "^blas: .*kernel Haswell" "$tmp/err" && ! grep -q "^warning" "$tmp/err" \
    && ok "no warning with the Haswell kernel" || bad "OPENBLAS_CORETYPE=Haswell: $(cat "$tmp/err")"
else
  ! grep -q "^warning" "$tmp/err" && ok "no warning for the Prescott kernel on a CPU without AVX2" \
    || bad "a warning on a CPU without AVX2: $(cat "$tmp/err")"
fi
for isa in $tables; do
  ppl_check ppl-base "--isa $isa" exact_nll --isa $isa -v -b 3
  grep -q "^backend: cpu/$isa (--isa $isa;" "$tmp/err" && grep -q "^cema: auto requested" "$tmp/err" \
    && ok "-v: $(head -1 "$tmp/err")" || bad "--isa $isa -v: $(head -2 "$tmp/err")"
done
ppl_check ppl-base "--isa auto --cema scan -v" exact_nll --isa auto --cema scan -v
grep -q "^cema: scan requested$" "$tmp/err" && ok "-v names the CEMA algorithm asked for" \
  || bad "-v --cema scan: $(head -2 "$tmp/err")"
run_cmd env MEGALODON_ISA=scalar "$run" info -m "$golden/base.gguf" -v
grep -q "^backend: cpu/scalar (--isa auto, MEGALODON_ISA=scalar;" "$tmp/err" \
  && ok "--isa auto follows MEGALODON_ISA" || bad "MEGALODON_ISA=scalar: $(head -1 "$tmp/err")"
run_cmd env MEGALODON_ISA=scalar "$run" info -m "$golden/base.gguf" -v --isa "$best"
grep -q "^backend: cpu/$best (--isa $best;" "$tmp/err" && ok "--isa $best overrides MEGALODON_ISA" \
  || bad "--isa over MEGALODON_ISA: $(head -1 "$tmp/err")"
run_cmd "$run" tokenize -m "$golden/base.gguf" -p x --isa scalar --verbose
grep -q "^backend: cpu/scalar" "$tmp/err" && ! grep -q "^cema" "$tmp/err" && ok "tokenize -v" \
  || bad "tokenize -v: $(cat "$tmp/err")"
# a table that is not here: a runtime error with the library's message
missing=""
for isa in neon avx2 avx512; do
  case " $tables " in *" $isa "*) ;; *) missing=$isa; break ;; esac
done
if [ -n "$missing" ]; then
  expect 1 "^error: --isa $missing: .*kernel table '$missing' is not built in or not supported by this CPU \(available: $tables\)" \
    "--isa $missing (not here)" "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --isa $missing
  expect 1 "^error: --isa $missing: " "--isa $missing in info" "$run" info -m "$golden/base.gguf" --isa=$missing
else
  echo "skip: every kernel table is here: no --isa to refuse"
fi
for mode in generate perplexity tokenize info; do
  run_cmd "$run" $mode --help
  grep -q -- "--isa NAME" "$tmp/out" && grep -q -- "-v, --verbose" "$tmp/out" || bad "$mode --help lacks --isa or -v"
done

# a document in two parts: A = t0..t100, B = t100..t249 (B starts with A's last token)
tr -s ' \n' '\n\n' < "$golden/ppl-base.tokens" | grep . > "$tmp/all.ids"
head -n 101 "$tmp/all.ids" > "$tmp/a.ids"
tail -n +101 "$tmp/all.ids" > "$tmp/b.ids"
run_cmd "$run" perplexity -m "$golden/base.gguf" --tokens "$tmp/a.ids" --json --state-out "$tmp/a.state" -b 5
nll_a=$(jget "$tmp/out" nll) rc_a=$rc
run_cmd "$run" perplexity -m "$golden/base.gguf" --tokens "$tmp/b.ids" --json --state-in "$tmp/a.state" -b 1 --cema scan
nll_b=$(jget "$tmp/out" nll) n_b=$(jget "$tmp/out" tokens)
sum=$(awk -v a="$nll_a" -v b="$nll_b" 'BEGIN { printf "%.10g", a + b }')
want=$(gget "$g" exact_nll)
if [ "$rc_a" -eq 0 ] && [ "$rc" -eq 0 ] && [ "$n_b" = 149 ] && rel_close "$sum" "$want" 1e-4; then
  ok "--state-out/--state-in: $nll_a + $nll_b = $sum, single run $want"
else
  bad "--state-out/--state-in: exits $rc_a/$rc, $nll_a + $nll_b = $sum vs $want"
fi
run_cmd "$run" info -m "$golden/base.gguf" --state-in "$tmp/a.state"
grep -q "100 tokens consumed" "$tmp/out" && ok "info describes a state file (100 tokens)" \
  || bad "info --state-in: $(grep state "$tmp/out")"

# ---------------------------------------------------------------- generation
tiny=$tmp/tiny.gguf
if "$maker" "$tiny" > /dev/null 2>&1; then
  printf '1 2 3 4 5\n6 7\n' > "$tmp/prompt.ids"
  gen() { "$run" -m "$tiny" --tokens "$tmp/prompt.ids" "$@"; }
  gen -n 48 -s 7 -t 1 > "$tmp/g1" 2> "$tmp/g1.err"; r1=$?
  gen -n 48 -s 7 -t 2 > "$tmp/g2" 2> "$tmp/g2.err"; r2=$?
  gen -n 48 -s 8 -t 2 > "$tmp/g3" 2> /dev/null
  n_words=$(wc -w < "$tmp/g1")
  if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && cmp -s "$tmp/g1" "$tmp/g2" && [ "$n_words" -eq 55 ]; then
    ok "generation with seed 7: same 48 tokens with -t 1 and -t 2: $(cut -c1-60 "$tmp/g1")..."
  else
    bad "generation -t 1 vs -t 2: exits $r1/$r2, $n_words words: $(cat "$tmp/g1") / $(cat "$tmp/g2")"
  fi
  cmp -s "$tmp/g1" "$tmp/g3" && bad "seeds 7 and 8 gave the same text" || ok "another seed, another text"
  grep -q "^load time: " "$tmp/g1.err" && grep -Eq "^prompt: 7 tokens in .* tokens/s" "$tmp/g1.err" \
    && grep -Eq "^generation: 48 tokens in .* tokens/s" "$tmp/g1.err" \
    && ok "timings on stderr: $(grep '^generation' "$tmp/g1.err")" || bad "timings: $(cat "$tmp/g1.err")"
  for t in 1 2; do gen -n 40 --temp 0 --cema scan -t $t > "$tmp/greedy$t" 2> /dev/null; done
  cmp -s "$tmp/greedy1" "$tmp/greedy2" && ok "greedy generation independent of threads" \
    || bad "greedy generation differs between -t 1 and -t 2"
  gen -n 16 --temp 0 --no-display-prompt > "$tmp/np" 2> /dev/null
  [ "$(wc -w < "$tmp/np")" -eq 16 ] && ok "--no-display-prompt prints only the 16 new tokens" \
    || bad "--no-display-prompt: $(cat "$tmp/np")"

  # continuing from a saved state (greedy): P -> g1..g5 (saved), then [9] -> h1..h5;
  # equals a single run from P g1..g5 9
  gen -n 5 --temp 0 --state-out "$tmp/gen.state" > "$tmp/s1" 2> /dev/null
  echo 9 > "$tmp/nine.ids"
  "$run" -m "$tiny" --tokens "$tmp/nine.ids" --state-in "$tmp/gen.state" -n 5 --temp 0 \
    --no-display-prompt > "$tmp/s2" 2> "$tmp/s2.err"; r2=$?
  { cat "$tmp/s1"; echo 9; } | tr -s ' \n' '\n\n' | grep . > "$tmp/whole.ids"
  "$run" -m "$tiny" --tokens "$tmp/whole.ids" -n 5 --temp 0 --no-display-prompt > "$tmp/s3" 2> /dev/null
  if [ $r2 -eq 0 ] && [ -s "$tmp/s2" ] && cmp -s "$tmp/s2" "$tmp/s3"; then
    ok "generation continued from --state-out/--state-in equals one run: $(cat "$tmp/s2")"
  else
    bad "generation from a saved state: exit $r2: '$(cat "$tmp/s2")' vs '$(cat "$tmp/s3")' $(head -2 "$tmp/s2.err")"
  fi

  # interactive: turns continue the state; a bad line is reported and skipped
  printf '1 2 3\nnot-an-id\n4 5\n' | "$run" -m "$tiny" -i --tokens "$tmp/prompt.ids" -n 4 --temp 0 \
    > "$tmp/i1" 2> "$tmp/i1.err"; ri=$?
  # the same turns as single runs: prompt + 4, + "1 2 3" + 4, + "4 5" + 4
  words=$(cat "$tmp/i1")
  set -- $words
  if [ $ri -eq 0 ] && [ $# -eq 19 ] && grep -q "'not-an-id' is not a token id" "$tmp/i1.err"; then
    p_g=$(echo "$words" | cut -d' ' -f1-11)
    echo "$p_g 1 2 3" | tr ' ' '\n' > "$tmp/turn2.ids"
    t2=$("$run" -m "$tiny" --tokens "$tmp/turn2.ids" -n 4 --temp 0 --no-display-prompt 2> /dev/null)
    t2i=$(echo "$words" | cut -d' ' -f12-15)
    t3i=$(echo "$words" | cut -d' ' -f16-19)
    # the turns' inputs are not echoed: the single-run documents put them back
    echo "$p_g 1 2 3 $t2i 4 5" | tr ' ' '\n' > "$tmp/turn3.ids"
    t3=$("$run" -m "$tiny" --tokens "$tmp/turn3.ids" -n 4 --temp 0 --no-display-prompt 2> /dev/null)
    if [ "$t2" = "$t2i" ] && [ "$t3" = "$t3i" ]; then
      ok "interactive: 3 turns continue one state ($t2i | $t3i)"
    else
      bad "interactive turns: '$t2i' vs '$t2', '$t3i' vs '$t3'"
    fi
  else
    bad "interactive: exit $ri, $# words: $words; $(head -3 "$tmp/i1.err")"
  fi
  # state size does not depend on the context: info prints it
  run_cmd "$run" info -m "$tiny"
  grep -Eq "^state: [0-9]+ bytes" "$tmp/out" && grep -q "^parameters: " "$tmp/out" \
    && ok "info: $(grep '^parameters' "$tmp/out"); $(grep '^state' "$tmp/out" | cut -d'(' -f1)" \
    || bad "info: exit $rc"
else
  bad "cannot make a tiny model with $maker"
fi

# ---------------------------------------------------------------- long documents (--tokens)
# ids N SEED: N pseudo-random ids in [0, 64), 20 to a line
ids() { awk -v n="$1" -v s="$2" 'BEGIN { srand(s); for (i = 1; i <= n; i++)
  printf "%d%s", int(rand() * 64), (i % 20 == 0 || i == n) ? "\n" : " " }'; }
if [ -f "$tiny" ]; then
  # 30000 ids (about 90 KB: several of the reader's 64 KB blocks, ids cut at their edges)
  ids 30000 1 > "$tmp/long.ids"
  ppl() { "$run" perplexity -m "$tiny" -t 1 --json "$@"; }
  for w in "" --official-window; do
    ppl --tokens "$tmp/long.ids" $w > "$tmp/l1" 2> "$tmp/l1.err"; r1=$?
    ppl --tokens - $w < "$tmp/long.ids" > "$tmp/l2" 2> "$tmp/l2.err"; r2=$?
    ppl --tokens "$tmp/long.ids" $w --per-token > "$tmp/l3" 2> /dev/null; r3=$?
    n_pt=$(jarray "$tmp/l3" per_token_nll | tr ',' '\n' | grep -c '[0-9]')
    sum_pt=$(jarray "$tmp/l3" per_token_nll | tr -d '[] ' | tr ',' '\n' | awk '{ s += $1 } END { printf "%.10g", s }')
    if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ $r3 -eq 0 ] && [ "$(jget "$tmp/l1" tokens)" = 29999 ] \
       && [ "$(cat "$tmp/l1")" = "$(cat "$tmp/l2")" ] && [ "$(jget "$tmp/l3" nll)" = "$(jget "$tmp/l1" nll)" ] \
       && [ "$n_pt" -eq 29999 ] && rel_close "$sum_pt" "$(jget "$tmp/l1" nll)" 1e-8 \
       && grep -q "perplexity: 29999/29999 tokens" "$tmp/l1.err" \
       && grep -q "reading standard input as it comes" "$tmp/l2.err" \
       && grep -q "perplexity: 29999 tokens, ppl" "$tmp/l2.err"; then
      ok "30000 ids ${w:-(exact)}: a file and a pipe give $(jget "$tmp/l1" nll); --per-token streams 29999 values"
    else
      bad "30000 ids ${w:-(exact)}: exits $r1/$r2/$r3, '$(cat "$tmp/l1")' vs '$(cat "$tmp/l2")', $n_pt per-token values summing to $sum_pt; $(head -2 "$tmp/l2.err")"
    fi
  done
  # a bad id far into the file: a regular file is checked before anything is computed
  awk 'NR == 1400 { $7 = "1e3" } { print }' "$tmp/long.ids" > "$tmp/long-bad.ids"
  expect 1 "long-bad.ids: token 27987 \(line 1400\): '1e3' is not a token id" "a bad id at token 27987" \
    "$run" perplexity -m "$tiny" --tokens "$tmp/long-bad.ids" --json
  [ ! -s "$tmp/out" ] && ok "... found before any output" || bad "a bad id in a file: output before the error: $(cut -c1-80 "$tmp/out")"
  # from a pipe it is found when it is reached
  run_cmd sh -c "cat '$tmp/long-bad.ids' | '$run' perplexity -m '$tiny' --tokens - -t 1"
  [ "$rc" -eq 1 ] && grep -q "^error: -: token 27987 (line 1400)" "$tmp/err" \
    && ok "a bad id in a pipe: exit 1 when it is reached" || bad "a bad id in a pipe: exit $rc $(tail -1 "$tmp/err")"
  printf '1' | "$run" perplexity -m "$tiny" --tokens - > /dev/null 2> "$tmp/err"; rc=$?
  [ "$rc" -eq 1 ] && grep -q "the document has 1" "$tmp/err" && ok "one id from a pipe is too short" \
    || bad "one id from a pipe: exit $rc $(cat "$tmp/err")"
  printf '1 2' | "$run" perplexity -m "$tiny" --tokens - --json > "$tmp/out" 2> /dev/null
  [ "$(jget "$tmp/out" tokens)" = 1 ] && ok "two ids from a pipe, the last without a newline" \
    || bad "two ids from a pipe: $(cat "$tmp/out")"

  # constant memory: the peak RSS of 200000 ids is that of 16384 (the ids are not held)
  if ! /usr/bin/time -f %M -o "$tmp/rss" true > /dev/null 2>&1; then
    echo "skip: peak-RSS check: no GNU /usr/bin/time (with -f and -o) here"
  elif ASAN_OPTIONS=help=1 "$run" --version 2>&1 | grep -q AddressSanitizer; then
    echo "skip: peak-RSS check: $run is built with AddressSanitizer, whose memory use is not the program's"
  else
    ids 16384 2 > "$tmp/short.ids"
    ids 200000 3 > "$tmp/huge.ids"
    # peak_rss FILE: kB, with --official-window --per-token (every path that could grow)
    peak_rss() {
      /usr/bin/time -f %M -o "$tmp/rss" "$run" perplexity -m "$tiny" -t 1 --tokens "$1" --json \
        --per-token --official-window > "$tmp/rss.out" 2> /dev/null || echo "exit $?" >> "$tmp/rss"
      tail -1 "$tmp/rss"
    }
    k1=$(peak_rss "$tmp/short.ids")
    n1=$(jget "$tmp/rss.out" tokens)
    k2=$(peak_rss "$tmp/huge.ids")
    n2=$(jget "$tmp/rss.out" tokens)
    # allowed: 5% of the short run, at least 512 kB (the peak varies by about 200 kB from
    # run to run); holding the ids would add 800 kB, the per-token values 1.6 MB more
    if [ "$n1" = 16383 ] && [ "$n2" = 199999 ] && awk -v a="$k1" -v b="$k2" 'BEGIN {
         lim = a / 20; if (lim < 512) lim = 512; exit !(a > 0 && b - a <= lim) }'; then
      ok "peak RSS: $k1 kB for 16384 ids, $k2 kB for 200000 ids"
    else
      bad "peak RSS grows with the document: $k1 kB for 16384 ids ($n1 scored), $k2 kB for 200000 ($n2 scored)"
    fi
  fi
fi

# info lists every tensor of the file with its type and shape
run_cmd "$run" info -m "$golden/base.gguf"
if [ "$rc" -eq 0 ] && grep -q "^tensors: 60$" "$tmp/out" \
   && grep -Eq "^  blk.1.attn_z.weight +f32 +\[16, 8\]" "$tmp/out" \
   && grep -q "^name: golden-base" "$tmp/out"; then
  ok "info: name, $(grep '^tensors' "$tmp/out"), shapes"
else
  bad "info tensor table: exit $rc: $(grep -A2 '^tensors' "$tmp/out")"
fi

# ---------------------------------------------------------------- text (byte tokenizer)
byte=$golden/ppl-byte.gguf
run_cmd "$run" info -m "$byte"
if [ "$rc" -eq 0 ] && grep -q "^tokenizer: byte" "$tmp/out"; then
  run_cmd "$run" tokenize -m "$byte" -p "Hi é"
  [ "$rc" -eq 0 ] && [ "$(cat "$tmp/out")" = "72 105 32 195 169" ] && ok "tokenize: $(cat "$tmp/out")" \
    || bad "tokenize: exit $rc: $(cat "$tmp/out") $(cat "$tmp/err")"
  run_cmd "$run" tokenize -m "$byte" -p "Hi" --bos
  [ "$(cat "$tmp/out")" = "256 72 105" ] && ok "tokenize --bos: $(cat "$tmp/out")" || bad "tokenize --bos: $(cat "$tmp/out")"
  run_cmd "$run" tokenize -m "$byte" -p "a b" --pieces --bos
  [ "$(cat "$tmp/out")" = "<s> <0x61> <0x20> <0x62>" ] && ok "tokenize --pieces: $(cat "$tmp/out")" \
    || bad "tokenize --pieces: $(cat "$tmp/out")"
  run_cmd "$run" tokenize -m "$byte" -f "$golden/ppl-byte.txt" --bos
  tr -s ' \n' '\n\n' < "$golden/ppl-byte.tokens" | grep . | sed '$d' | tr '\n' ' ' | sed 's/ $//' > "$tmp/want"
  [ "$(cat "$tmp/out")" = "$(cat "$tmp/want")" ] && ok "tokenize -f equals the reference's ids" \
    || bad "tokenize -f: $(cut -c1-80 "$tmp/out")"

  g=$golden/ppl-byte.json
  for w in exact window; do
    opt=""
    [ $w = window ] && opt=--official-window
    run_cmd "$run" perplexity -m "$byte" -f "$golden/ppl-byte.txt" --json $opt
    nll=$(jget "$tmp/out" nll)
    want=$(gget "$g" ${w}_nll)
    if [ "$rc" -eq 0 ] && [ "$(jget "$tmp/out" tokens)" = "$(gget "$g" scored)" ] && rel_close "$nll" "$want" 1e-4; then
      ok "perplexity -f text ($w, BOS and EOS added): nll $nll, reference $want"
    else
      bad "perplexity -f text ($w): exit $rc, $(cat "$tmp/out") vs $want $(head -2 "$tmp/err")"
    fi
  done
  run_cmd "$run" perplexity -m "$byte" -f "$golden/ppl-byte.txt" --json --no-bos --no-eos
  [ "$(jget "$tmp/out" tokens)" = "$(($(gget "$g" text_bytes) - 1))" ] \
    && ok "--no-bos --no-eos: $(jget "$tmp/out" tokens) scored tokens" || bad "--no-bos --no-eos: $(cat "$tmp/out")"

  for t in 1 2; do
    "$run" -m "$byte" -p "The official evaluation" -n 40 -s 3 -t $t > "$tmp/text$t" 2> /dev/null
  done
  if cmp -s "$tmp/text1" "$tmp/text2" && head -c 23 "$tmp/text1" | grep -q "^The official evaluation$"; then
    ok "text generation: the prompt, then 40 tokens, the same with -t 1 and -t 2"
  else
    bad "text generation differs or lacks the prompt: $(head -c 80 "$tmp/text1")"
  fi
  expect 1 "cannot open '$tmp/none.txt'" "missing text file" "$run" perplexity -m "$byte" -f "$tmp/none.txt"
  expect 1 "cannot open '$tmp/none.txt'" "missing prompt file" "$run" -m "$byte" -f "$tmp/none.txt"
  printf 'Hello\n\nthere\n' | "$run" -m "$byte" -i -n 8 --temp 0 > "$tmp/it" 2> "$tmp/it.err"; ri=$?
  [ $ri -eq 0 ] && [ "$(grep -c '^> ' "$tmp/it.err")" -ge 3 ] && ok "interactive text mode (3 turns)" \
    || bad "interactive text mode: exit $ri $(head -3 "$tmp/it.err")"
else
  echo "skip: the library has no tokenizer yet (ppl-byte.gguf loads without one): text tests skipped"
fi

# ---------------------------------------------------------------- bad input
base=$golden/base.gguf
toks=$golden/ppl-base.tokens
expect 2 "unknown option '--bogus'" "unknown option" "$run" perplexity -m "$base" --tokens "$toks" --bogus
expect 2 "unknown option '-x'" "unknown short option" "$run" -m "$base" -x
expect 2 "option '-m' needs a value" "missing value" "$run" info -m
expect 2 "option '--temp' needs a value" "missing value at the end" "$run" -m "$base" --tokens "$toks" --temp
expect 2 "invalid value 'abc' for -n: expected an integer" "-n abc" "$run" -m "$base" --tokens "$toks" -n abc
expect 2 "invalid value '-1' for --temp: must be >= 0" "--temp -1" "$run" -m "$base" --tokens "$toks" --temp -1
expect 2 "invalid value 'nan' for --temp" "--temp nan" "$run" -m "$base" --tokens "$toks" --temp nan
expect 2 "invalid value '1.5' for --top-p: must be in \[0, 1\]" "--top-p 1.5" "$run" -m "$base" --top-p 1.5
expect 2 "invalid value '0' for --repeat-penalty: must be > 0" "--repeat-penalty 0" "$run" -m "$base" --repeat-penalty 0
expect 2 "invalid value 'x' for -s" "-s x" "$run" -m "$base" -s x
expect 2 "invalid value '-2' for -t" "-t -2" "$run" -m "$base" -t -2
expect 2 "invalid value '0' for -b: must be in \[1, " "perplexity -b 0" "$run" perplexity -m "$base" --tokens "$toks" -b 0
expect 2 "invalid value '4x' for --batch-size" "perplexity --batch-size=4x" "$run" perplexity -m "$base" --tokens "$toks" --batch-size=4x
expect 2 "invalid value 'fast' for --cema: expected fft, scan or auto" "--cema fast" "$run" perplexity -m "$base" --tokens "$toks" --cema fast
expect 2 "invalid value 'sse2' for --isa: expected auto, scalar, avx2, avx512 or neon" "--isa sse2" "$run" perplexity -m "$base" --tokens "$toks" --isa sse2
expect 2 "invalid value 'AVX2' for --isa: expected auto, scalar" "--isa AVX2 (info)" "$run" info -m "$base" --isa AVX2
expect 2 "option '--isa' needs a value" "--isa without a value" "$run" tokenize -m "$base" -p x --isa
expect 2 "option '--temp' is not used by the perplexity mode" "option of another mode" "$run" perplexity -m "$base" --tokens "$toks" --temp 1
expect 2 "option '--json' is not used by the generate mode" "perplexity option in generate" "$run" -m "$base" --json
expect 2 "-m FILE is required" "no model" env MEGALODON_MODEL= "$run" perplexity --tokens "$toks"
expect 2 "give the document with -f FILE or --tokens FILE" "perplexity without a document" "$run" perplexity -m "$base"
expect 2 "give the document with -f FILE or --tokens FILE" "perplexity with two documents" "$run" perplexity -m "$base" -f "$toks" --tokens "$toks"
expect 2 "give the text with -p TEXT or -f FILE" "tokenize without text" "$run" tokenize -m "$base"
expect 2 "give at most one of -p, -f and --tokens" "generate with two prompts" "$run" -m "$base" -p x --tokens "$toks"
expect 2 "-b cannot be set" "--official-window with -b" "$run" perplexity -m "$base" --tokens "$toks" --official-window -b 8
expect 2 "cannot be combined with --state-in" "--official-window with --state-in" "$run" perplexity -m "$base" --tokens "$toks" --official-window --state-in x
expect 2 "unexpected argument 'extra'" "stray argument" "$run" perplexity -m "$base" --tokens "$toks" extra
expect 2 "option '--json' takes no value" "--flag=value" "$run" perplexity -m "$base" --tokens "$toks" --json=1
expect 1 "cannot load model: .*none.gguf.*No such file" "missing model" "$run" perplexity -m "$tmp/none.gguf" --tokens "$toks"
expect 1 "cannot load model" "a token file as the model" "$run" info -m "$toks"
expect 1 "cannot open '$tmp/none.ids'" "missing token file" "$run" perplexity -m "$base" --tokens "$tmp/none.ids"
expect 1 "cannot read '$tmp'" "unreadable token file (a directory)" "$run" perplexity -m "$base" --tokens "$tmp"
expect 1 "the model has no tokenizer; use --tokens" "text document, no tokenizer" "$run" perplexity -m "$base" -f "$toks"
expect 1 "the model has no tokenizer; use --tokens" "text prompt, no tokenizer" "$run" -m "$base" -p "hello"
expect 1 "the model has no tokenizer" "tokenize, no tokenizer" "$run" tokenize -m "$base" -p "hello"
printf '1 2\n3 37 4\n' > "$tmp/range.ids"
expect 1 "range.ids: token 4 \(line 2\): id 37 is out of range \[0, 37\)" "id out of range" "$run" perplexity -m "$base" --tokens "$tmp/range.ids"
printf '1 2\n-1\n' > "$tmp/neg.ids"
expect 1 "token 3 \(line 2\): id -1 is out of range" "negative id" "$run" perplexity -m "$base" --tokens "$tmp/neg.ids"
printf '1\n\n 2 x7 3\n' > "$tmp/word.ids"
expect 1 "word.ids: token 3 \(line 3\): 'x7' is not a token id" "non-numeric id" "$run" perplexity -m "$base" --tokens "$tmp/word.ids"
expect 1 "word.ids: token 3 \(line 3\): 'x7' is not a token id" "non-numeric id in a prompt" "$run" -m "$base" --tokens "$tmp/word.ids"
: > "$tmp/empty.ids"
expect 1 "perplexity needs at least 2 tokens .* the document has 0" "empty document" "$run" perplexity -m "$base" --tokens "$tmp/empty.ids"
echo 5 > "$tmp/one.ids"
expect 1 "the document has 1" "one-token document" "$run" perplexity -m "$base" --tokens "$tmp/one.ids"
expect 1 "the prompt is empty" "empty prompt" "$run" -m "$base" --tokens "$tmp/empty.ids"
expect 1 "cannot load --state-in: .*ppl-base.tokens.*not a GGUF file" "a token file as the state" "$run" perplexity -m "$base" --tokens "$toks" --state-in "$toks"
if [ -f "$tmp/gen.state" ]; then
  expect 1 "cannot load --state-in: .*another model" "a state of another model" "$run" perplexity -m "$base" --tokens "$toks" --state-in "$tmp/gen.state"
fi
expect 1 "cannot save --state-out: .*no/such/dir/s" "unwritable --state-out" "$run" perplexity -m "$base" --tokens "$toks" --state-out "$tmp/no/such/dir/s"

# text that is not UTF-8 is refused, naming the offset (the byte-tokenizer model)
printf 'ab\377cd' > "$tmp/bad-utf8.txt"
expect 1 "not valid UTF-8 \(byte offset 2: 0xff\)" "invalid UTF-8 (tokenize)" "$run" tokenize -m "$golden/ppl-byte.gguf" -f "$tmp/bad-utf8.txt"
expect 1 "not valid UTF-8 \(byte offset 2: 0xff\)" "invalid UTF-8 (perplexity)" "$run" perplexity -m "$golden/ppl-byte.gguf" -f "$tmp/bad-utf8.txt"
expect 1 "not valid UTF-8 \(byte offset 1: 0xc3\)" "truncated UTF-8 sequence" "$run" -m "$golden/ppl-byte.gguf" -p "$(printf 'a\303')"

# Ctrl-C during generation: stops, prints the statistics, exits 0
echo "1 2 3" > "$tmp/p.ids"
"$run" -m "$base" --tokens "$tmp/p.ids" -n 100000000 > "$tmp/out" 2> "$tmp/err" &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
if [ "$rc" -eq 0 ] && grep -Eq "^generation: [0-9]+ tokens in" "$tmp/err"; then
  ok "Ctrl-C stops generation cleanly: $(grep '^generation' "$tmp/err")"
else
  bad "Ctrl-C: exit $rc, stderr: $(tail -2 "$tmp/err")"
fi

exit $fail
