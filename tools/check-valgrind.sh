#!/bin/sh
# check-valgrind.sh - run the C test programs under valgrind (memcheck); exit 0 only when
# every one passes with no memcheck error and no definite leak.
#
# usage: tools/check-valgrind.sh BUILDDIR [TEST...]
#   BUILDDIR  a configured build tree; the test programs are (re)built there first
#   TEST      test programs relative to BUILDDIR, e.g. tests/test-gguf (default: $MG_VALGRIND_TESTS,
#             else the set below: every C test that takes under about a minute under valgrind
#             on a 2-core machine, about 3 minutes in all; docs/hardening.md has the times)
# environment:
#   MG_VALGRIND_TIMEOUT  seconds per test before it counts as failed (default 900)
#   MG_VALGRIND_ARGS     extra valgrind options (e.g. --track-origins=yes)
#   MG_SOAK_*, MG_STRESS_*   settings of test-soak and test-stress-threads (lighter defaults
#                        here, see below)
#   JOBS                 make -j (default: the number of CPUs)
#
# Options: --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite, so memory
# errors (invalid reads/writes, uninitialised values that decide a branch, bad frees) and
# definitely lost blocks fail; "still reachable" and "possibly lost" blocks do not (OpenBLAS
# and libgomp keep thread pools and buffers to the end of the process by design). No
# suppression is needed today; should one be, it goes into the file named by
# $MG_VALGRIND_SUPP (passed as --suppressions), with the report that needed it.
set -u

[ $# -ge 1 ] || { echo "usage: $0 BUILDDIR [TEST...]" >&2; exit 2; }
build=$1
shift
[ -f "$build/Makefile" ] || { echo "check-valgrind: $build is not a configured build tree" >&2; exit 2; }
build=$(cd "$build" && pwd)
srcdir=$(sed -n 's/^abs_top_srcdir = //p' "$build/Makefile")
command -v valgrind >/dev/null || { echo "check-valgrind: valgrind is not installed (Debian package valgrind)" >&2; exit 77; }

# Measured under valgrind 3.19 (docs/hardening.md): these run in seconds to about a minute,
# test-soak and test-stress-threads with the lighter settings below. Left out by default
# (clean, but slow under valgrind): tests/test-tokenizer (12 min; 43 s natively) and
# tests/test-planner (3 min; 2 s natively).
default_tests="tests/test-gguf tests/test-cema tests/test-golden tests/test-state
tests/test-badinput tests/test-configs tests/test-sampling tests/test-kernels tests/test-soak
tests/test-stress-threads"
if [ $# -gt 0 ]; then tests=$*
else tests=${MG_VALGRIND_TESTS:-$default_tests}
fi
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
tmo=${MG_VALGRIND_TIMEOUT:-900}

# shellcheck disable=SC2086 # a list of programs
make -C "$build" -j"$jobs" $tests >"$build/check-valgrind.make.log" 2>&1 ||
  { tail -40 "$build/check-valgrind.make.log"; echo "check-valgrind: FAIL (build)"; exit 1; }

vgopts="--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
--show-leak-kinds=definite --num-callers=40"
[ -n "${MG_VALGRIND_SUPP:-}" ] && vgopts="$vgopts --suppressions=$MG_VALGRIND_SUPP"
vgopts="$vgopts ${MG_VALGRIND_ARGS:-}"

# the environment `make check` gives the tests (Makefile.am: AM_TESTS_ENVIRONMENT)
MG_GOLDEN_DIR=$srcdir/tests/golden; export MG_GOLDEN_DIR
MG_TOP_SRCDIR=$srcdir; export MG_TOP_SRCDIR
MG_TOP_BUILDDIR=$build; export MG_TOP_BUILDDIR
MG_SHARED_DIR=${MG_SHARED_DIR:-$srcdir/../shared}; export MG_SHARED_DIR
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}; export OMP_NUM_THREADS
# lighter runs of the long tests (memory errors show in a short run as in a long one; the
# numbers and the bit-exactness are checked by the native runs): 5000 tokens of the golden
# model for the soak, phase 1 of the stress test with 4 threads x 4 repetitions
MG_SOAK_TOKENS=${MG_SOAK_TOKENS:-5000}; export MG_SOAK_TOKENS
MG_SOAK_MODELS=${MG_SOAK_MODELS:-base}; export MG_SOAK_MODELS
MG_STRESS_PHASES=${MG_STRESS_PHASES:-1}; export MG_STRESS_PHASES
MG_STRESS_THREADS=${MG_STRESS_THREADS:-4}; export MG_STRESS_THREADS
MG_STRESS_ITERS=${MG_STRESS_ITERS:-4}; export MG_STRESS_ITERS

cd "$build" || exit 2
failed=0
passed=0
skipped=0
for t in $tests; do
  [ -x "$t" ] || { echo "FAIL: $t (no such program)"; failed=$((failed + 1)); continue; }
  log=$build/$t.valgrind.log
  # a libtool wrapper script runs the real binary through libtool --mode=execute
  if head -c 2 "$t" | grep -q '#!'; then runner="$build/libtool --mode=execute"
  else runner=""
  fi
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "$tmo" $runner valgrind $vgopts "./$t" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -1)
  lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -1)
  if [ "$rc" -eq 77 ]; then
    echo "SKIP: $t (${secs}s)"
    skipped=$((skipped + 1))
  elif [ "$rc" -eq 0 ]; then
    echo "PASS: $t (${secs}s, ${errs:-0} errors, definitely lost ${lost:-0} bytes)"
    passed=$((passed + 1))
  else
    case $rc in
      99) why="memcheck errors or a definite leak" ;;
      124) why="timed out after ${tmo}s" ;;
      *) why="the test failed (exit $rc)" ;;
    esac
    echo "FAIL: $t (${secs}s): $why; log: $log"
    grep -E "^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|[0-9,]+ bytes in)" -A12 "$log" | head -60
    failed=$((failed + 1))
  fi
done
echo "check-valgrind: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
