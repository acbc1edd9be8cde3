#!/bin/sh
# shellcheck disable=SC2086  # $XCFLAGS is split into words on purpose
# run-neon-tests.sh - cross-compile the kernel tests for AArch64 and run them under qemu.
#
# Builds tests/test-kernels.c with simd/scalar.c, simd/neon.c and simd/cpu.c for AArch64
# (aarch64-linux-gnu-gcc -std=c11 -O2 -static, with a generated config.h that defines
# MG_HAVE_NEON) and runs it under qemu-aarch64: every table cpu.c offers on AArch64 (scalar
# and neon) is checked against the double-precision formulas, and the NEON table must be one
# of them ("neon: tested"). The same binary is run again with MEGALODON_ISA=scalar and
# MEGALODON_ISA=neon. tests/cross/test-neon-exp.c then checks the vector exp of simd/neon.c
# against double exp (error bound) and the fp16/bf16 conversions bit for bit against the
# scalar table. simd/neon.c must compile without warnings under -Wall -Wextra. Last,
# tests/test-quant-kernels.c checks the quantized kernels of simd/neon.c against the scalar
# table, built with and without the dot-product extension.
#
# Usage: tests/cross/run-neon-tests.sh [SRCDIR]    (SRCDIR: the source tree, default ../..
#        from this script; it may be run from any directory)
# Exit status: 0 passed, 77 skipped (no cross compiler or no qemu-aarch64; says "SKIP: ..."),
# anything else failed.
# Environment: AARCH64_CC (default aarch64-linux-gnu-gcc), QEMU_AARCH64 (default qemu-aarch64).
set -u

here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(cd "${1:-$here/../..}" && pwd) || { echo "run-neon-tests: no source tree ${1:-}" >&2; exit 2; }
XCC=${AARCH64_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU_AARCH64:-qemu-aarch64}

for f in simd/kernels.h simd/scalar.c simd/neon.c simd/cpu.c simd/welford.h simd/table-impl.h \
         simd/norms-impl.h simd/elementwise-impl.h simd/complex-impl.h simd/train-impl.h \
         simd/norm-backward-impl.h tests/test-kernels.c tests/test.h tests/cross/test-neon-exp.c \
         simd/quant-scalar.c simd/quant-impl.h simd/vf-arith.h tests/test-quant-kernels.c; do
  [ -f "$srcdir/$f" ] || { echo "run-neon-tests: $srcdir/$f missing" >&2; exit 2; }
done
command -v "$XCC" >/dev/null 2>&1 || {
  echo "SKIP: $XCC not found (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"; exit 77; }
command -v "$QEMU" >/dev/null 2>&1 || {
  echo "SKIP: $QEMU not found (Debian: qemu-user)"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/neon-tests.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# (as configure's AC_USE_SYSTEM_EXTENSIONS: POSIX and GNU declarations, e.g. mkdtemp, under -std=c11)
printf '#define PACKAGE_VERSION "0.1.0"\n#define MG_HAVE_NEON 1\n#define _GNU_SOURCE 1\n' > "$tmp/config.h"
# our flags (the build's CFLAGS are for the host, not for this cross build)
XCFLAGS="-std=c11 -O2 -static -Wall -Wextra -Wno-unknown-pragmas"

fail=0
step() { echo "run-neon-tests: $*"; }

# 1. simd/neon.c alone: no warnings allowed
step "$XCC -c simd/neon.c -Wall -Wextra -Werror"
"$XCC" $XCFLAGS -Werror -I"$tmp" -I"$srcdir/simd" -c "$srcdir/simd/neon.c" -o "$tmp/neon.o" || {
  echo "FAIL: simd/neon.c does not compile cleanly for AArch64" >&2; exit 1; }

# 2. test-kernels from exactly the simd/ files it needs
step "building test-kernels for AArch64"
"$XCC" $XCFLAGS -I"$tmp" -I"$srcdir/simd" -I"$srcdir/tests" -o "$tmp/test-kernels" \
    "$srcdir/simd/scalar.c" "$srcdir/simd/neon.c" "$srcdir/simd/cpu.c" "$srcdir/tests/test-kernels.c" \
    "$srcdir/simd/quant-scalar.c" -lm || {
  echo "FAIL: cannot build test-kernels for AArch64" >&2; exit 1; }

for isa in "" scalar neon; do
  step "qemu-aarch64 test-kernels${isa:+ (MEGALODON_ISA=$isa)}"
  if [ -n "$isa" ]; then
    MEGALODON_ISA=$isa "$QEMU" "$tmp/test-kernels" > "$tmp/out" 2>&1; rc=$?
  else
    (unset MEGALODON_ISA; "$QEMU" "$tmp/test-kernels") > "$tmp/out" 2>&1; rc=$?
  fi
  sed 's/^/    /' "$tmp/out"
  if [ $rc -ne 0 ]; then
    echo "FAIL: test-kernels${isa:+ with MEGALODON_ISA=$isa} exited $rc" >&2; fail=1
  fi
  if ! grep -Eq '^[[:space:]]*neon: tested' "$tmp/out"; then
    echo "FAIL: the NEON table was not tested: is it registered in simd/cpu.c" \
         "(under #if defined(MG_HAVE_NEON))?" >&2; fail=1
  fi
  grep -Eq '^[[:space:]]*scalar: tested' "$tmp/out" || { echo "FAIL: the scalar table was not tested" >&2; fail=1; }
done

# 3. the vector exp's error bound and the conversions, bit for bit
step "building test-neon-exp for AArch64"
"$XCC" $XCFLAGS -I"$tmp" -I"$srcdir/simd" -o "$tmp/test-neon-exp" "$srcdir/simd/scalar.c" \
    "$srcdir/simd/quant-scalar.c" "$srcdir/tests/cross/test-neon-exp.c" -lm || {
  echo "FAIL: cannot build test-neon-exp for AArch64" >&2; exit 1; }
step "qemu-aarch64 test-neon-exp"
"$QEMU" "$tmp/test-neon-exp" > "$tmp/out" 2>&1; rc=$?
sed 's/^/    /' "$tmp/out"
[ $rc -eq 0 ] || { echo "FAIL: test-neon-exp exited $rc" >&2; fail=1; }

# 4. the quantized kernels (simd/neon.c, quant-impl.h) against the scalar table, built twice: for
#    the base architecture (SDOT absent: vmull_s8 / vpadalq_s16) and with the dot-product
#    extension (vdotq_s32)
for march in "" "-march=armv8.2-a+dotprod"; do
  step "building test-quant-kernels for AArch64${march:+ ($march)}"
  "$XCC" $XCFLAGS $march -Werror -I"$tmp" -I"$srcdir/simd" -I"$srcdir/tests" -o "$tmp/test-quant-kernels" \
      "$srcdir/simd/scalar.c" "$srcdir/simd/neon.c" "$srcdir/simd/cpu.c" "$srcdir/simd/quant-scalar.c" \
      "$srcdir/tests/test-quant-kernels.c" -lm || {
    echo "FAIL: cannot build test-quant-kernels for AArch64${march:+ ($march)}" >&2; exit 1; }
  step "qemu-aarch64 test-quant-kernels${march:+ ($march)}"
  "$QEMU" "$tmp/test-quant-kernels" > "$tmp/out" 2>&1; rc=$?
  sed 's/^/    /' "$tmp/out"
  [ $rc -eq 0 ] || { echo "FAIL: test-quant-kernels${march:+ ($march)} exited $rc" >&2; fail=1; }
  grep -Eq '^[[:space:]]*neon: tested' "$tmp/out" || { echo "FAIL: the NEON quantized kernels were not tested" >&2; fail=1; }
done

if [ $fail -ne 0 ]; then echo "run-neon-tests: FAILED"; exit 1; fi
echo "run-neon-tests: passed"
exit 0
