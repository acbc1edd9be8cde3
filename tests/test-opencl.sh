#!/bin/sh
# test-opencl - the OpenCL backend end to end (docs/opencl.md): the device listing; the whole
# model against the PyTorch reference on OpenCL (test-golden with MEGALODON_BACKEND=opencl:
# logits, per-layer intermediates and the final streaming state of every golden case, both
# CEMA algorithms, full forward, chunked prefill, one-token decode, irregular calls);
# perplexity through megalodon-run --backend opencl (whole calls and one token per call)
# against the reference; greedy generation equal to the CPU's; megalodon-bench --backend
# opencl; and the bad cases (a device that does not exist, a bad MEGALODON_OPENCL_DEVICE, an
# unknown backend) with their exit status and message.
#
# Skips (77) when the build has no OpenCL backend or no OpenCL platform is installed, unless
# MG_REQUIRE_OPENCL=1 (CI installs PoCL), where that is a failure.
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR (as set by `make check`).
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
run=$build/bin/megalodon-run
bench=$build/bin/megalodon-bench

need "$run" "$bench" "$build/tests/test-golden"
make_tmp test-opencl
# the tests' compiled kernels go to a cache of their own
MEGALODON_OPENCL_CACHE=$tmp/cache
export MEGALODON_OPENCL_CACHE
unset MEGALODON_BACKEND MEGALODON_OPENCL_DEVICE
# under --enable-sanitizers: PoCL's own allocations at exit are not ours
LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$top/opencl/lsan-pocl.supp"
export LSAN_OPTIONS
# megalodon-bench keeps its option lists to the end (the library's leaks are checked by the
# other programs here)
bench="env ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0 $bench"

skip_or_fail() {
  if [ "${MG_REQUIRE_OPENCL:-0}" = 1 ]; then
    echo "FAIL: MG_REQUIRE_OPENCL=1 but: $1"
    exit 1
  fi
  echo "SKIP: $1"
  exit 77
}

# ---------------------------------------------------------------- the devices
run_cmd "$run" --list-devices
if [ "$rc" -ne 0 ]; then
  if grep -q "no OpenCL backend" "$tmp/err"; then
    why=$(cat "$tmp/err")
    # the message must say so clearly, and a request for the backend must fail with it
    expect 1 "no OpenCL backend" "--backend opencl in a build without OpenCL" \
      "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --backend opencl
    [ $fail -eq 0 ] || exit 1
    skip_or_fail "$why"
  fi
  bad "--list-devices: exit $rc: $(cat "$tmp/err")"
  exit 1
fi
if ! grep -q "^0: " "$tmp/out"; then
  why=$(cat "$tmp/out")
  grep -q "no OpenCL platform" "$tmp/out" || bad "--list-devices without devices says nothing clear: $(cat "$tmp/out")"
  expect 1 "no OpenCL platform" "--backend opencl without a platform" \
    "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --backend opencl
  [ $fail -eq 0 ] || exit 1
  skip_or_fail "$why"
fi
ok "--list-devices: $(head -1 "$tmp/out")"
run_cmd $bench --list-devices
[ "$rc" -eq 0 ] && grep -q "^0: " "$tmp/out" && ok "megalodon-bench --list-devices" \
  || bad "megalodon-bench --list-devices: exit $rc"

# A machine without a platform, imitated by pointing the ICD loader (ocl-icd reads
# OCL_ICD_VENDORS) at an empty directory: the listing and the backend say so; the CPU runs.
mkdir -p "$tmp/no-icd"
run_cmd env OCL_ICD_VENDORS="$tmp/no-icd" "$run" --list-devices
if grep -q "^0: " "$tmp/out"; then
  echo "note: this ICD loader ignores OCL_ICD_VENDORS: the no-platform case is not checked here"
else
  [ "$rc" -eq 0 ] && grep -q "no OpenCL platform" "$tmp/out" && ok "no platform: --list-devices says so" \
    || bad "no platform: --list-devices exit $rc: $(cat "$tmp/out" "$tmp/err")"
  expect 1 "no OpenCL platform" "no platform: --backend opencl" env OCL_ICD_VENDORS="$tmp/no-icd" \
    "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --backend opencl
  run_cmd env OCL_ICD_VENDORS="$tmp/no-icd" "$run" perplexity -m "$golden/base.gguf" \
    --tokens "$golden/ppl-base.tokens"
  [ "$rc" -eq 0 ] && ok "no platform: the CPU backend runs" || bad "no platform: CPU run exit $rc"
fi

# ---------------------------------------------------------------- the whole model vs the reference
MEGALODON_BACKEND=opencl "$build/tests/test-golden" > "$tmp/golden.log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
  ok "test-golden on OpenCL: $(grep 'worst logit' "$tmp/golden.log")"
else
  bad "test-golden on OpenCL: exit $rc"
  grep FAIL "$tmp/golden.log" | head -20
fi
# and it really ran there: with a device that does not exist, it cannot load a model
env MEGALODON_BACKEND=opencl MEGALODON_OPENCL_DEVICE=99 "$build/tests/test-golden" > "$tmp/golden99.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "OpenCL device 99 does not exist" "$tmp/golden99.log"; then
  ok "test-golden takes MEGALODON_BACKEND=opencl (device 99 refused)"
else
  bad "test-golden with MEGALODON_OPENCL_DEVICE=99: exit $rc, $(head -2 "$tmp/golden99.log")"
fi

# ---------------------------------------------------------------- megalodon-run --backend opencl
g=$golden/ppl-base.json
want=$(gget "$g" exact_nll)
for b in "" "-b 1" "-b 3 --cema fft" "-b 40 --cema scan"; do
  # shellcheck disable=SC2086
  run_cmd "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --json \
    --backend opencl $b
  nll=$(jget "$tmp/out" nll)
  if [ "$rc" -eq 0 ] && rel_close "$nll" "$want" 1e-4; then
    ok "perplexity --backend opencl ${b:-(default)}: nll $nll (reference $want)"
  else
    bad "perplexity --backend opencl ${b:-(default)}: exit $rc, nll '$nll' vs $want: $(head -2 "$tmp/err")"
  fi
done

run_cmd "$run" -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" -n 24 --temp 0 \
  --no-display-prompt --ignore-eos
cp "$tmp/out" "$tmp/gen-cpu"
cpu_rc=$rc
run_cmd "$run" -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" -n 24 --temp 0 \
  --no-display-prompt --ignore-eos --backend opencl --device 0 -v
if [ $cpu_rc -eq 0 ] && [ "$rc" -eq 0 ] && [ -s "$tmp/out" ] && cmp -s "$tmp/out" "$tmp/gen-cpu"; then
  ok "greedy generation on OpenCL equals the CPU's ($(wc -w < "$tmp/out") tokens)"
else
  bad "greedy generation: cpu exit $cpu_rc, opencl exit $rc; cpu '$(head -c 200 "$tmp/gen-cpu")' opencl '$(head -c 200 "$tmp/out")' $(head -3 "$tmp/err")"
fi
grep -q "backend: opencl/0:" "$tmp/err" && ok "-v names the OpenCL device" \
  || bad "-v does not name the OpenCL device: $(head -3 "$tmp/err")"

# ---------------------------------------------------------------- megalodon-bench --backend opencl
run_cmd $bench -m "$golden/base.gguf" --backend cpu,opencl -p 32 -n 4 -r 1 -t 1
if [ "$rc" -eq 0 ] && grep -q "| opencl |" "$tmp/out" && grep -q "| cpu |" "$tmp/out"; then
  ok "megalodon-bench --backend cpu,opencl: $(grep -c '| opencl |' "$tmp/out") OpenCL rows"
else
  bad "megalodon-bench --backend opencl: exit $rc: $(head -3 "$tmp/err")"
fi

# ---------------------------------------------------------------- bad cases
expect 1 "OpenCL device 99 does not exist" "--device 99" \
  "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --backend opencl --device 99
expect 1 "MEGALODON_OPENCL_DEVICE=gpu0" "MEGALODON_OPENCL_DEVICE=gpu0" \
  env MEGALODON_OPENCL_DEVICE=gpu0 "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --backend opencl
expect 2 "expected cpu or opencl" "--backend cuda" \
  "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens" --backend cuda
expect 1 "unknown backend 'cuda' in MEGALODON_BACKEND" "MEGALODON_BACKEND=cuda" \
  env MEGALODON_BACKEND=cuda "$run" perplexity -m "$golden/base.gguf" --tokens "$golden/ppl-base.tokens"
expect 1 "OpenCL device 7 does not exist" "megalodon-bench --device 7" \
  $bench -m "$golden/base.gguf" --backend opencl --device 7 -p 8 -n 0 -r 1

exit $fail
