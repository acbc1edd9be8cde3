#!/bin/sh
# test-kl - megalodon-run perplexity --kl-base: a base file written with --kl-save and compared
# with the same model (KL 0 within the representation's error bound, top-1 agreement 1, ratio
# 1) and with other models (the mean, maximum and 99th percentile of KL, the top-1 agreement
# and the perplexity ratio against tests/kl-direct, which computes them from both models' full
# logits); --per-token; documents of several chunks from a file and from a pipe, exact and
# windowed; text (-f); every refusal (another document, vocabulary, scoring options, start
# position; a truncated, corrupted or foreign file) with its message; the atomic write.
#
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR (as set by `make check`); MEGALODON_RUN,
# MG_MAKE_TINY_MODEL and MG_KL_DIRECT override the programs' paths.
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
run=${MEGALODON_RUN:-$build/bin/megalodon-run}
maker=${MG_MAKE_TINY_MODEL:-$build/tests/make-tiny-model}
direct=${MG_KL_DIRECT:-$build/tests/kl-direct}
need "$run" "$maker" "$direct"
make_tmp test-kl

# key of kl-direct's line
dget() { awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' "$1"; }
# near A B ABS REL: |A - B| <= ABS + REL |B|
near() { awk -v a="$1" -v b="$2" -v t="$3" -v r="$4" 'BEGIN { d = a - b; if (d < 0) d = -d;
  m = b < 0 ? -b : b; exit !(a != "" && b != "" && d <= t + r * m) }'; }
# size of a file in bytes
size() { wc -c < "$1" | tr -d ' '; }

base=$golden/base.gguf
toks=$golden/ppl-base.tokens
ppl() { "$run" perplexity -t 1 "$@"; }

# ---------------------------------------------------------------- help
run_cmd "$run" perplexity --help
grep -q -- "--kl-base FILE" "$tmp/out" && grep -q -- "--kl-save" "$tmp/out" \
  && ok "perplexity --help lists --kl-base and --kl-save" || bad "perplexity --help: no --kl-base"

# ---------------------------------------------------------------- the same model
# base.gguf: V = 37, so 20 + 2 * 37 = 94 bytes per scored token after the 80-byte header
run_cmd ppl -m "$base" --tokens "$toks" --kl-base "$tmp/base.kl" --kl-save --json
want_size=$((80 + 249 * 94))
if [ "$rc" -eq 0 ] && [ "$(size "$tmp/base.kl")" -eq $want_size ] \
   && grep -q "wrote --kl-base .*base.kl: 249 scored tokens, 94 bytes each" "$tmp/err" \
   && [ "$(jget "$tmp/out" tokens)" = 249 ] && [ -z "$(jget "$tmp/out" kl_mean)" ]; then
  ok "--kl-save: $want_size bytes for 249 tokens of V = 37, the usual result on stdout"
else
  bad "--kl-save: exit $rc, $(size "$tmp/base.kl" 2>/dev/null) bytes: $(cat "$tmp/out") $(head -3 "$tmp/err")"
fi
base_nll=$(jget "$tmp/out" nll)
# other call sizes and CEMA algorithms: the same model within float rounding
for opts in "" "-b 3 --cema scan" "-b 40 --cema fft -t 2"; do
  run_cmd ppl -m "$base" --tokens "$toks" --kl-base "$tmp/base.kl" --json $opts
  m=$(jget "$tmp/out" kl_mean) b=$(jget "$tmp/out" kl_error_bound)
  if [ "$rc" -eq 0 ] && near "$m" 0 "$b" 0 && near "$(jget "$tmp/out" kl_max)" 0 1e-6 0 \
     && [ "$(jget "$tmp/out" top1_agreement)" = 1 ] && near "$(jget "$tmp/out" ppl_ratio)" 1 1e-6 0 \
     && near "$(jget "$tmp/out" base_nll)" "$base_nll" 1e-9 1e-9 \
     && awk -v b="$b" 'BEGIN { exit !(b > 0 && b < 1e-6) }'; then
    ok "the same model ${opts:-(defaults)}: KL mean $m <= its error bound $b, top-1 1, ratio 1"
  else
    bad "the same model ${opts:-(defaults)}: exit $rc: $(cat "$tmp/out") $(head -2 "$tmp/err")"
  fi
done
run_cmd ppl -m "$base" --tokens "$toks" --kl-base "$tmp/base.kl"
if [ "$rc" -eq 0 ] && grep -q "^perplexity: 62.07" "$tmp/out" \
   && grep -q "^base perplexity: 62.07.*ratio model / base: 1" "$tmp/out" \
   && grep -q "^KL(base || model): mean .* nats per token, 99th percentile .*, max " "$tmp/out" \
   && grep -q "^top-1 agreement: 1.000000 (249 of 249 tokens)" "$tmp/out"; then
  ok "text output: $(sed -n 3p "$tmp/out")"
else
  bad "text output: exit $rc: $(cat "$tmp/out")"
fi

# ---------------------------------------------------------------- other models vs kl-direct
# compare_direct BASE MODEL TOKENS BASEFILE WHAT [OPTS]: every statistic against kl-direct
compare_direct() {
  b=$1 m=$2 t=$3 f=$4 what=$5
  shift 5
  "$direct" "$b" "$m" "$t" > "$tmp/direct" 2> "$tmp/direct.err" || { bad "$what: kl-direct: $(cat "$tmp/direct.err")"; return; }
  run_cmd ppl -m "$m" --tokens "$t" --kl-base "$f" --json "$@"
  km=$(jget "$tmp/out" kl_mean) kb=$(jget "$tmp/out" kl_error_bound)
  if [ "$rc" -eq 0 ] && near "$km" "$(dget "$tmp/direct" mean)" "$kb" 1e-6 \
     && near "$(jget "$tmp/out" kl_max)" "$(dget "$tmp/direct" max)" 1e-6 1e-3 \
     && near "$(jget "$tmp/out" kl_p99)" "$(dget "$tmp/direct" p99)" 0 0.013 \
     && near "$(jget "$tmp/out" top1_agreement)" "$(dget "$tmp/direct" agree)" 1e-12 0 \
     && near "$(jget "$tmp/out" base_ppl)" "$(dget "$tmp/direct" base_ppl)" 0 1e-6 \
     && near "$(jget "$tmp/out" ppl)" "$(dget "$tmp/direct" ppl)" 0 1e-6 \
     && near "$(jget "$tmp/out" ppl_ratio)" \
          "$(awk -v a="$(dget "$tmp/direct" ppl)" -v b="$(dget "$tmp/direct" base_ppl)" 'BEGIN { printf "%.10g", a / b }')" 0 1e-6 \
     && awk -v m="$km" -v s="$(jget "$tmp/out" kl_stderr)" 'BEGIN { exit !(m > 0 && s > 0 && s < m) }'; then
    ok "$what: KL mean $km (direct $(dget "$tmp/direct" mean), bound $kb), p99 $(jget "$tmp/out" kl_p99), max $(jget "$tmp/out" kl_max), top-1 $(jget "$tmp/out" top1_agreement), ratio $(jget "$tmp/out" ppl_ratio)"
  else
    bad "$what: exit $rc: $(cat "$tmp/out") vs $(cat "$tmp/direct") $(head -2 "$tmp/err")"
  fi
}
compare_direct "$base" "$golden/heads2_swiglu.gguf" "$toks" "$tmp/base.kl" "base.gguf vs heads2_swiglu.gguf"
compare_direct "$base" "$golden/rescale_noaffine.gguf" "$toks" "$tmp/base.kl" "base.gguf vs rescale_noaffine.gguf" -b 5

# --per-token: [nll, kl] pairs whose KL mean is kl_mean; the text form has 4 columns
run_cmd ppl -m "$golden/heads2_swiglu.gguf" --tokens "$toks" --kl-base "$tmp/base.kl" --json --per-token
pairs=$(sed -n 's/^{"per_token_nll_kl": \[\(.*\)\], "tokens".*/\1/p' "$tmp/out" | sed 's/\], \[/\n/g' | tr -d '[]')
n_pairs=$(echo "$pairs" | grep -c ,)
mean_pt=$(echo "$pairs" | awk -F', ' '{ s += $2 } END { printf "%.10g", s / NR }')
nll_pt=$(echo "$pairs" | awk -F', ' '{ s += $1 } END { printf "%.10g", s }')
if [ "$rc" -eq 0 ] && [ "$n_pairs" -eq 249 ] && near "$mean_pt" "$(jget "$tmp/out" kl_mean)" 0 1e-8 \
   && near "$nll_pt" "$(jget "$tmp/out" nll)" 0 1e-8; then
  ok "--per-token --json: 249 [nll, kl] pairs, KL mean $mean_pt"
else
  bad "--per-token --json: exit $rc, $n_pairs pairs, mean $mean_pt: $(cut -c1-120 "$tmp/out")"
fi
run_cmd ppl -m "$golden/heads2_swiglu.gguf" --tokens "$toks" --kl-base "$tmp/base.kl" --per-token
[ "$rc" -eq 0 ] && [ "$(grep -c '^[0-9]* [0-9]* [0-9.e+-]* [0-9.e+-]*$' "$tmp/out")" -eq 249 ] \
  && grep -q "^# position token nll kl$" "$tmp/out" && ok "--per-token text: 249 lines of position token nll kl" \
  || bad "--per-token text: exit $rc: $(head -3 "$tmp/out")"

# ---------------------------------------------------------------- long documents
# two tiny random models (V = 64, C = 16) with different seeds; 3000 ids (187 chunks)
"$maker" --seed 1 "$tmp/t1.gguf" > /dev/null && "$maker" --seed 2 "$tmp/t2.gguf" > /dev/null \
  || bad "cannot make tiny models"
awk 'BEGIN { srand(5); for (i = 1; i <= 3000; i++) printf "%d%s", int(rand() * 64), i % 20 ? " " : "\n" }' > "$tmp/long.ids"
for w in "" --official-window; do
  # the base written from a pipe, compared with a file; and the other way round
  ppl -m "$tmp/t1.gguf" --tokens - $w --kl-base "$tmp/long.kl" --kl-save < "$tmp/long.ids" > /dev/null 2> "$tmp/err"
  r1=$?
  b7="-b 7"
  [ -n "$w" ] && b7="" # the window's calls are fixed
  run_cmd ppl -m "$tmp/t1.gguf" --tokens "$tmp/long.ids" $w --kl-base "$tmp/long.kl" --json $b7
  same=$(jget "$tmp/out" kl_mean) same_b=$(jget "$tmp/out" kl_error_bound) same_a=$(jget "$tmp/out" top1_agreement)
  ppl -m "$tmp/t2.gguf" --tokens - $w --kl-base "$tmp/long.kl" --json < "$tmp/long.ids" > "$tmp/o2" 2> /dev/null
  r2=$?
  if [ -z "$w" ]; then
    "$direct" "$tmp/t1.gguf" "$tmp/t2.gguf" "$tmp/long.ids" > "$tmp/direct"
    dm=$(dget "$tmp/direct" mean) dl="direct $dm"
  else
    dm=$(jget "$tmp/o2" kl_mean) dl="no direct computation of the window"
  fi
  if [ $r1 -eq 0 ] && [ "$rc" -eq 0 ] && [ $r2 -eq 0 ] && near "$same" 0 "$same_b" 0 && [ "$same_a" = 1 ] \
     && [ "$(jget "$tmp/o2" tokens)" = 2999 ] && near "$(jget "$tmp/o2" kl_mean)" "$dm" "$(jget "$tmp/o2" kl_error_bound)" 1e-6 \
     && awk -v k="$(jget "$tmp/o2" kl_mean)" 'BEGIN { exit !(k > 0.01) }'; then
    ok "3000 ids ${w:-(exact)}: the same model KL $same, seed 2 KL $(jget "$tmp/o2" kl_mean) ($dl)"
  else
    bad "3000 ids ${w:-(exact)}: exits $r1/$rc/$r2: same '$same' (bound $same_b, top-1 $same_a), seed 2 $(cat "$tmp/o2") vs $dm"
  fi
  [ -z "$w" ] && cp "$tmp/long.kl" "$tmp/long-exact.kl"
done
expect 1 "long.kl' was written with --official-window; give the same scoring options" \
  "a windowed base without the window" ppl -m "$tmp/t1.gguf" --tokens "$tmp/long.ids" --kl-base "$tmp/long.kl"
expect 1 "long-exact.kl' was written without --official-window" \
  "an exact base with the window" ppl -m "$tmp/t1.gguf" --tokens "$tmp/long.ids" --kl-base "$tmp/long-exact.kl" --official-window

# constant memory: the peak RSS of writing and comparing 40000 ids is that of 2000
if ! /usr/bin/time -f %M -o "$tmp/rss" true > /dev/null 2>&1; then
  echo "skip: peak-RSS check: no GNU /usr/bin/time (with -f and -o) here"
elif ASAN_OPTIONS=help=1 "$run" --version 2>&1 | grep -q AddressSanitizer; then
  echo "skip: peak-RSS check: $run is built with AddressSanitizer"
else
  # peak_rss IDS MODEL [--kl-save]: kB
  peak_rss() {
    ids=$1 m=$2
    shift 2
    /usr/bin/time -f %M -o "$tmp/rss" "$run" perplexity -m "$m" -t 1 --tokens "$ids" \
      --kl-base "$tmp/rss.kl" --json --per-token "$@" > /dev/null 2>&1 || echo "exit $?" >> "$tmp/rss"
    tail -1 "$tmp/rss"
  }
  awk 'BEGIN { srand(7); for (i = 1; i <= 40000; i++) printf "%d\n", int(rand() * 64) }' > "$tmp/big.ids"
  head -n 2000 "$tmp/big.ids" > "$tmp/small.ids"
  s1=$(peak_rss "$tmp/small.ids" "$tmp/t1.gguf" --kl-save) c1=$(peak_rss "$tmp/small.ids" "$tmp/t2.gguf")
  s2=$(peak_rss "$tmp/big.ids" "$tmp/t1.gguf" --kl-save) c2=$(peak_rss "$tmp/big.ids" "$tmp/t2.gguf")
  # allowed: 5% of the short run, at least 512 kB (as in test-run.sh); holding the
  # 40000 records (148 bytes each) would add 5.8 MB
  if awk -v a="$s1" -v b="$s2" -v c="$c1" -v d="$c2" 'BEGIN { l1 = a / 20; l1 = l1 < 512 ? 512 : l1;
       l2 = c / 20; l2 = l2 < 512 ? 512 : l2; exit !(a > 0 && c > 0 && b - a <= l1 && d - c <= l2) }'; then
    ok "peak RSS: --kl-save $s1 / $s2 kB, compare $c1 / $c2 kB for 2000 / 40000 ids"
  else
    bad "peak RSS grows with the document: --kl-save $s1 / $s2 kB, compare $c1 / $c2 kB"
  fi
fi

# parts of a document: the second part, from a saved state, against its own base
tr -s ' \n' '\n\n' < "$tmp/long.ids" | grep . > "$tmp/long1.ids"
head -n 1000 "$tmp/long1.ids" > "$tmp/a.ids"
tail -n +1000 "$tmp/long1.ids" > "$tmp/b.ids" # t_999 .. : a's last token starts b
ppl -m "$tmp/t1.gguf" --tokens "$tmp/a.ids" --state-out "$tmp/a.state" > /dev/null 2>&1
ppl -m "$tmp/t1.gguf" --tokens "$tmp/b.ids" --state-in "$tmp/a.state" --kl-base "$tmp/b.kl" --kl-save > /dev/null 2>&1
run_cmd ppl -m "$tmp/t1.gguf" --tokens "$tmp/b.ids" --state-in "$tmp/a.state" --kl-base "$tmp/b.kl" --json
[ "$rc" -eq 0 ] && [ "$(jget "$tmp/out" top1_agreement)" = 1 ] \
  && ok "--state-in: a second part against its base (KL $(jget "$tmp/out" kl_mean))" \
  || bad "--state-in with --kl-base: exit $rc $(head -2 "$tmp/err")"
expect 1 "b.kl' was written from position 999 \(--state-in\); this run starts at 0" \
  "a base written after --state-in, run from the start" ppl -m "$tmp/t1.gguf" --tokens "$tmp/b.ids" --kl-base "$tmp/b.kl"

# ---------------------------------------------------------------- text (-f)
byte=$golden/ppl-byte.gguf
if "$run" info -m "$byte" 2> /dev/null | grep -q "^tokenizer: byte"; then
  ppl -m "$byte" -f "$golden/ppl-byte.txt" --kl-base "$tmp/text.kl" --kl-save > /dev/null 2>&1
  run_cmd ppl -m "$byte" -f "$golden/ppl-byte.txt" --kl-base "$tmp/text.kl" --json -b 3
  [ "$rc" -eq 0 ] && [ "$(jget "$tmp/out" top1_agreement)" = 1 ] && near "$(jget "$tmp/out" ppl_ratio)" 1 1e-6 0 \
    && ok "-f text: the same model against its base ($(jget "$tmp/out" tokens) tokens)" \
    || bad "-f text: exit $rc: $(cat "$tmp/out") $(head -2 "$tmp/err")"
  expect 1 "text.kl' was written for a document of 278 tokens; this one has 277" "-f text with --no-eos" \
    ppl -m "$byte" -f "$golden/ppl-byte.txt" --kl-base "$tmp/text.kl" --no-eos
else
  echo "skip: the library has no tokenizer yet: -f tests skipped"
fi

# ---------------------------------------------------------------- refusals
expect 1 "base.kl' was written for 37 logits per token; this model has 64 \(another vocabulary\)" \
  "another vocabulary" ppl -m "$tmp/t1.gguf" --tokens "$toks" --kl-base "$tmp/base.kl"
head -c 300 "$toks" > "$tmp/short.ids"
expect 1 "base.kl' was written for a document of 250 tokens; this one has [0-9]+$" \
  "a shorter document" ppl -m "$base" --tokens "$tmp/short.ids" --kl-base "$tmp/base.kl"
# the same length, one id changed (the 101st): found when that token is reached
tr -s ' \n' '\n\n' < "$toks" | grep . | awk 'NR == 101 { $1 = ($1 + 1) % 37 } { print }' > "$tmp/changed.ids"
want_id=$(sed -n 101p "$tmp/changed.ids")
expect 1 "the document differs from that of --kl-base .*base.kl' at token 100 \(id [0-9]+ there, $want_id here\)" \
  "another document of the same length" ppl -m "$base" --tokens "$tmp/changed.ids" --kl-base "$tmp/base.kl"
awk 'NR == 1 { $1 = ($1 + 1) % 37 } { print }' "$tmp/changed.ids" > "$tmp/first.ids"
expect 1 "written for another document \(its first token is" "another first token" \
  ppl -m "$base" --tokens "$tmp/first.ids" --kl-base "$tmp/base.kl"
# from a pipe the length is known only at the end
expect 1 "the document is shorter than that of --kl-base .*\(249 tokens here, 250 there\)" \
  "a shorter document from a pipe" sh -c "tr -s ' \n' '\n\n' < '$toks' | grep . | sed '\$d' | '$run' perplexity -m '$base' --tokens - --kl-base '$tmp/base.kl'"
expect 1 "the document is longer than that of --kl-base .*\(250 tokens\)" \
  "a longer document from a pipe" sh -c "{ cat '$toks'; echo 3; } | '$run' perplexity -m '$base' --tokens - --kl-base '$tmp/base.kl'"
expect 1 "cannot read --kl-base '.*none.kl': No such file or directory \(write one with --kl-base FILE --kl-save\)" \
  "a missing base file" ppl -m "$base" --tokens "$toks" --kl-base "$tmp/none.kl"
expect 1 "toks.copy' is not a base file \(written by --kl-save\)" "a token file as the base" \
  sh -c "cp '$toks' '$tmp/toks.copy' && '$run' perplexity -m '$base' --tokens '$toks' --kl-base '$tmp/toks.copy'"
expect 2 "--kl-save writes the --kl-base FILE: give --kl-base FILE" "--kl-save alone" \
  ppl -m "$base" --tokens "$toks" --kl-save
expect 2 "--kl-base needs a file \(not standard input or output\)" "--kl-base -" \
  ppl -m "$base" --tokens "$toks" --kl-base -
expect 2 "--kl-base '.*ppl-base.tokens' is also the --tokens file" "--kl-base over the document" \
  ppl -m "$base" --tokens "$toks" --kl-base "$toks" --kl-save
expect 2 "option '--kl-base' is not used by the generate mode" "--kl-base in generate" \
  "$run" -m "$base" --tokens "$toks" --kl-base "$tmp/base.kl"

# truncated and corrupted files: refused with a message, never a crash
# corrupt OFFSET BYTE OUT: a copy of base.kl with one byte replaced
corrupt() { cp "$tmp/base.kl" "$3" && printf "$2" | dd of="$3" bs=1 seek="$1" conv=notrunc 2> /dev/null; }
for cut in 0 40 79 80 $((want_size - 1)) $((want_size - 94)); do
  head -c $cut "$tmp/base.kl" > "$tmp/cut.kl"
  expect 1 "cut.kl' is truncated: $cut bytes" "a base cut at $cut bytes" ppl -m "$base" --tokens "$toks" --kl-base "$tmp/cut.kl"
done
{ cat "$tmp/base.kl"; printf 'x'; } > "$tmp/plus.kl"
expect 1 "plus.kl' is too long: $((want_size + 1)) bytes" "a base with a byte more" ppl -m "$base" --tokens "$toks" --kl-base "$tmp/plus.kl"
corrupt 12 '\377' "$tmp/c1.kl"
expect 1 "c1.kl': the header is corrupted \(checksum\)" "a corrupted header (V)" ppl -m "$base" --tokens "$toks" --kl-base "$tmp/c1.kl"
corrupt $((80 + 94 * 10 + 60)) '\377' "$tmp/c2.kl"
expect 1 "c2.kl' is corrupted \(the records' checksum differs\)" "a corrupted probability code" ppl -m "$base" --tokens "$toks" --kl-base "$tmp/c2.kl"
corrupt $((80 + 94 * 20 + 14)) '\300\177' "$tmp/c3.kl" # lo: a NaN
expect 1 "c3.kl' is corrupted at token 21" "a NaN in a record" ppl -m "$base" --tokens "$toks" --kl-base "$tmp/c3.kl"
corrupt $((80 + 94 * 30 + 7)) '\177' "$tmp/c4.kl" # the most likely token: out of range
expect 1 "c4.kl' is corrupted at token 31" "a token id out of range in a record" ppl -m "$base" --tokens "$toks" --kl-base "$tmp/c4.kl"
[ ! -s "$tmp/out" ] && ok "... with no result on stdout" || bad "a corrupted base gave a result: $(cat "$tmp/out")"

# ---------------------------------------------------------------- the atomic write
# a run that fails part way (a bad id from a pipe) leaves the old base as it was, and no
# temporary file; a base cannot be written into a missing directory
cp "$tmp/base.kl" "$tmp/keep.kl"
{ head -n 100 "$tmp/long.ids"; echo "1 2 x 3"; } > "$tmp/bad.ids"
expect 1 "token 2003 \(line 101\): 'x' is not a token id" "a run failing part way through --kl-save" \
  sh -c "cat '$tmp/bad.ids' | '$run' perplexity -m '$tmp/t1.gguf' --tokens - --kl-base '$tmp/keep.kl' --kl-save -b 1"
if cmp -s "$tmp/base.kl" "$tmp/keep.kl" && [ -z "$(ls "$tmp" | grep '\.tmp\.')" ]; then
  ok "... the old base file is unchanged and no temporary file is left"
else
  bad "a failed --kl-save changed the base or left a temporary file: $(ls "$tmp")"
fi
expect 1 "cannot write --kl-base '.*no/such/dir/x.kl'" "--kl-save into a missing directory" \
  ppl -m "$base" --tokens "$toks" --kl-base "$tmp/no/such/dir/x.kl" --kl-save
# a rewrite keeps the file's mode and replaces it whole
chmod 640 "$tmp/keep.kl"
ppl -m "$base" --tokens "$tmp/short.ids" --kl-base "$tmp/keep.kl" --kl-save > /dev/null 2>&1
n_short=$(tr -s ' \n' '\n\n' < "$tmp/short.ids" | grep -c .)
if [ "$(size "$tmp/keep.kl")" -eq $((80 + (n_short - 1) * 94)) ] && ls -l "$tmp/keep.kl" | grep -q "^-rw-r-----"; then
  ok "--kl-save replaces an existing base ($(size "$tmp/keep.kl") bytes), keeping its mode"
else
  bad "--kl-save over an existing base: $(ls -l "$tmp/keep.kl")"
fi

exit $fail
