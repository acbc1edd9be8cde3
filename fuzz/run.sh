#!/usr/bin/env bash
# fuzz/run.sh SECONDS [HARNESS...] - run the libFuzzer harnesses of fuzz/ (docs/fuzzing.md).
#
# HARNESS: gguf, model, tokenizer, state, args, checkpoint (default: all), each run for SECONDS.
# For each harness:
#   1. the regression inputs fuzz/regressions/HARNESS/* (inputs that once crashed) are
#      replayed: each must run cleanly;
#   2. the seed corpus fuzz/corpus/HARNESS is copied to a scratch directory (the committed
#      corpus is never written) and the harness fuzzes from it for SECONDS;
#   3. the executions are read from libFuzzer's final statistics.
# Prints one line per harness and the total; exits 1 if any harness crashed, timed out, ran
# out of memory or failed to replay a regression input. The crashing input is left in
# $FUZZ_WORKDIR/HARNESS/artifacts/ (its path is printed), the whole log in
# $FUZZ_WORKDIR/HARNESS/fuzz.log.
#
# Environment:
#   FUZZ_BUILDDIR   where fuzz/build.sh puts the harnesses (default: TOP/_build-fuzz); they
#                   are (re)built there first unless FUZZ_NO_BUILD=1
#   FUZZ_CONFIG_BUILDDIR  a configured build directory whose config.h to use (optional)
#   FUZZ_WORKDIR    scratch directory (default: FUZZ_BUILDDIR/work); HARNESS/ is emptied first
#   FUZZ_JOBS       harnesses run at the same time (default 1)
#   FUZZ_ARGS       extra libFuzzer flags for every harness (e.g. -seed=1)
#   FUZZ_KEEP_CORPUS=1  start from the corpus a previous run grew in FUZZ_WORKDIR (default:
#                   a fresh copy of the seeds each time)
set -uo pipefail

usage() { echo "usage: fuzz/run.sh SECONDS [gguf|model|tokenizer|state|args|checkpoint ...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case $1 in '' | *[!0-9]*) usage ;; esac
seconds=$1
shift
top=$(cd "$(dirname "$0")/.." && pwd)
all=(gguf model tokenizer state args checkpoint)
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")
for h in "${harnesses[@]}"; do
  case " ${all[*]} " in *" $h "*) ;; *) echo "fuzz/run.sh: unknown harness '$h'" >&2; usage ;; esac
done

build=${FUZZ_BUILDDIR:-$top/_build-fuzz}
work=${FUZZ_WORKDIR:-$build/work}
jobs=${FUZZ_JOBS:-1}
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  "$top/fuzz/build.sh" "$build" ${FUZZ_CONFIG_BUILDDIR:+"$FUZZ_CONFIG_BUILDDIR"} || exit 1
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
export MG_FUZZ_TOP_SRCDIR=$top

# per-harness settings: the longest input, and the time one input may take
max_len() {
  case $1 in
  gguf) echo 32768 ;; model) echo 65536 ;; tokenizer) echo 1024 ;; state) echo 8192 ;;
  args) echo 1024 ;; checkpoint) echo 32768 ;;
  esac
}

# run_one HARNESS: writes $work/HARNESS/{fuzz.log,result}
run_one() {
  local h=$1 dir=$work/$1 bin=$build/fuzz-$1
  rm -rf "$dir/artifacts" "$dir/replay.log" "$dir/fuzz.log" "$dir/result"
  mkdir -p "$dir/artifacts"
  if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ] || [ ! -d "$dir/corpus" ]; then
    rm -rf "$dir/corpus"
    mkdir -p "$dir/corpus"
    cp "$top/fuzz/corpus/$h/"* "$dir/corpus/" 2>/dev/null
  fi
  local common=(-max_len="$(max_len "$h")" -timeout=25 -rss_limit_mb=2560 -close_fd_mask=3
                -artifact_prefix="$dir/artifacts/" -print_final_stats=1)
  # 1. the regression inputs
  local reg=("$top/fuzz/regressions/$h/"*)
  if [ -e "${reg[0]}" ]; then
    if ! "$bin" "${common[@]}" "${reg[@]}" >"$dir/replay.log" 2>&1; then
      echo "FAIL 0 replay of $(grep -o 'Running: .*' "$dir/replay.log" | tail -n1 | cut -c10-)" >"$dir/result"
      return
    fi
  fi
  # 2. fuzzing
  # shellcheck disable=SC2086
  "$bin" "${common[@]}" -max_total_time="$seconds" ${FUZZ_ARGS:-} "$dir/corpus" \
    >"$dir/fuzz.log" 2>&1
  local rc=$?
  local execs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log" | tail -n1)
  local art
  art=$(ls "$dir/artifacts/" 2>/dev/null | head -n1)
  if [ $rc -ne 0 ] || [ -n "$art" ]; then
    echo "FAIL ${execs:-0} rc=$rc ${art:+$dir/artifacts/$art}" >"$dir/result"
  else
    echo "OK ${execs:-0}" >"$dir/result"
  fi
}

running=0
for h in "${harnesses[@]}"; do
  run_one "$h" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

total=0
failed=0
printf '%-10s %14s  %s\n' harness executions status
for h in "${harnesses[@]}"; do
  read -r status execs rest <"$work/$h/result" || { status=FAIL; execs=0; rest="no result"; }
  case $execs in '' | *[!0-9]*) rest="$execs $rest"; execs=0 ;; esac
  total=$((total + execs))
  if [ "$status" = OK ]; then
    printf '%-10s %14s  ok (%s s)\n' "$h" "$execs" "$seconds"
  else
    failed=$((failed + 1))
    printf '%-10s %14s  FAILED %s\n' "$h" "$execs" "$rest"
    log=$work/$h/fuzz.log
    [ -s "$work/$h/replay.log" ] && [ ! -s "$log" ] && log=$work/$h/replay.log
    echo "---- $log (last lines)"
    grep -B2 -A40 -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|fuzz assertion failed|SUMMARY' "$log" | head -n 60
    echo "----"
  fi
done
printf '%-10s %14s\n' total "$total"
if [ "$failed" -gt 0 ]; then
  echo "fuzz/run.sh: $failed harness(es) failed; inputs in $work/*/artifacts/"
  exit 1
fi
exit 0
