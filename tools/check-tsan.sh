#!/bin/sh
# check-tsan.sh - build the thread-stress test with ThreadSanitizer in a separate build
# directory and run it; exit 0 only when it passes with no ThreadSanitizer report.
#
# usage: tools/check-tsan.sh [BUILDDIR-or-SRCDIR]
#   BUILDDIR  a configured build tree (it has config.status): the sources are its
#             abs_top_srcdir and the TSan build goes to BUILDDIR/_tsan;
#   SRCDIR    a source tree: the TSan build goes to ./_tsan (the current directory);
#   default   the source tree this script is in.
# environment:
#   MG_TSAN_BUILDDIR   where to build instead of .../_tsan
#   MG_TSAN_TESTS      test programs to run (default: tests/test-stress-threads)
#   MG_STRESS_THREADS, MG_STRESS_ITERS   passed to the test (defaults: 8 and 24)
#   JOBS               make -j (default: the number of CPUs)
#
# What runs (docs/hardening.md, "ThreadSanitizer"): test-stress-threads, phase 1 - one
# model shared by 8 application threads, each with its own state, every model at ONE compute
# thread. libgomp, OpenBLAS and FFTW are not instrumented: with more than one compute thread
# libgomp's barriers are invisible to TSan and every OpenMP region is reported as a race in
# our own code (false positives that no suppression could tell from real ones), so the
# compute thread count stays 1 and the test itself skips its phase 2 under TSan. What TSan
# then checks is everything the library does around those libraries: the backend's shared
# FFT plans, kernel cache, planner and wisdom under their mutexes, the error buffer, state
# save/load, the model's read-only data. It runs twice: with the CEMA planner's cost model
# (the default) and in its measuring mode (MEGALODON_CEMA_PLANNER=measure, a wisdom file in
# the build directory).
#
# The suppressions file tools/tsan.supp is passed to TSan; see there (it holds no rule today).
set -u

here=$(cd "$(dirname "$0")" && pwd)
arg=${1:-$here/..}
[ -d "$arg" ] || { echo "check-tsan: no directory '$arg'" >&2; exit 2; }
arg=$(cd "$arg" && pwd)
if [ -f "$arg/config.status" ] && [ -f "$arg/Makefile" ]; then
  srcdir=$(sed -n 's/^abs_top_srcdir = //p' "$arg/Makefile")
  build=${MG_TSAN_BUILDDIR:-$arg/_tsan}
else
  srcdir=$arg
  build=${MG_TSAN_BUILDDIR:-$PWD/_tsan}
fi
if [ ! -f "$srcdir/lib/megalodon.h" ] || [ ! -x "$srcdir/configure" ]; then
  echo "check-tsan: '$srcdir' is not a libmegalodon source tree with a configure script (run autoreconf -fi there)" >&2
  exit 2
fi
if [ -f "$srcdir/config.status" ]; then
  echo "check-tsan: $srcdir is configured in-tree; a second (VPATH) build needs 'make distclean' there first" >&2
  exit 2
fi
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
tests=${MG_TSAN_TESTS:-tests/test-stress-threads}
cflags="-O1 -g -fsanitize=thread -fno-omit-frame-pointer"

echo "check-tsan: sources $srcdir, build $build"
mkdir -p "$build" || exit 2
cd "$build" || exit 2
# (re)configure unless this directory already has exactly this TSan configuration
if ! grep -q -- "-fsanitize=thread" Makefile 2>/dev/null; then
  "$srcdir/configure" -q CFLAGS="$cflags" LDFLAGS="-fsanitize=thread" >configure.out 2>&1 ||
    { cat configure.out; echo "check-tsan: FAIL (configure)"; exit 1; }
fi
# shellcheck disable=SC2086 # a list of programs
make -j"$jobs" $tests >make.out 2>&1 ||
  { tail -50 make.out; echo "check-tsan: FAIL (build)"; exit 1; }

supp=$srcdir/tools/tsan.supp
opts="halt_on_error=1 second_deadlock_stack=1 exitcode=66 history_size=4"
[ -f "$supp" ] && opts="$opts suppressions=$supp"

status=0
wisdom=$build/cema-wisdom.tsan
# the test's model and state files: here, so that a run stopped by a report leaves none in /tmp
tmpdir=$build/tmp
mkdir -p "$tmpdir" || exit 2
for t in $tests; do
  # a program without TSan would pass silently: make sure it has the runtime
  if ! nm "./$t" 2>/dev/null | grep -q "__tsan_init" &&
     ! (ldd "./$t" 2>/dev/null | grep -q libtsan); then
    echo "check-tsan: FAIL: $t is not built with -fsanitize=thread"
    status=1
    continue
  fi
  # twice: the CEMA planner's cost model (the default), then its measuring mode (timings
  # under a lock, a wisdom file written and read by several backends)
  for planner in estimate measure; do
    log=$build/$(basename "$t").$planner.tsan.log
    rm -f "$wisdom"
    run() {
      env TSAN_OPTIONS="$opts${TSAN_OPTIONS:+ $TSAN_OPTIONS}" OMP_NUM_THREADS=1 \
        MEGALODON_CEMA_PLANNER=$planner MEGALODON_CEMA_WISDOM="$wisdom" TMPDIR="$tmpdir" \
        MG_GOLDEN_DIR="$srcdir/tests/golden" MG_TOP_SRCDIR="$srcdir" \
        MG_STRESS_THREADS="${MG_STRESS_THREADS:-8}" MG_STRESS_ITERS="${MG_STRESS_ITERS:-24}" \
        "$@" "./$t" >"$log" 2>&1
    }
    run
    rc=$?
    # kernels with 32 bits of mmap randomization break older TSan runtimes ("unexpected
    # memory mapping"): run again without address-space randomization
    if grep -q "FATAL: ThreadSanitizer: unexpected memory mapping" "$log" &&
       command -v setarch >/dev/null; then
      echo "check-tsan: $t: TSan cannot map its shadow memory here; again under setarch -R"
      rm -f "$wisdom"
      run setarch "$(uname -m)" -R
      rc=$?
    fi
    nrep=$(grep -c "^WARNING: ThreadSanitizer" "$log")
    if [ "$rc" -ne 0 ] || [ "$nrep" -ne 0 ]; then
      cat "$log"
      echo "check-tsan: FAIL: $t (CEMA planner: $planner) exited with $rc, $nrep ThreadSanitizer report(s) (log: $log)"
      status=1
    else
      grep -v "^ *$" "$log" | sed 's/^/  /'
      echo "check-tsan: PASS: $t (CEMA planner: $planner; no ThreadSanitizer report)"
    fi
  done
done
rm -f "$wisdom"
[ "$status" -eq 0 ] && rm -rf "$tmpdir"
exit $status
