#!/bin/sh
# test-readme-example - the README's API example is exactly examples/simple.c, and the
# program built from it runs on the small model the build provides.
set -u
top=${MG_TOP_SRCDIR:-.}
build=${MG_TOP_BUILDDIR:-.}
fail=0

# The code block after the marker line in README.md must equal examples/simple.c.
awk '/<!-- example: examples\/simple.c -->/ {f=1; next}
     f && /^```c$/ {p=1; next}
     p && /^```$/ {exit}
     p {print}' "$top/README.md" > readme-example.c.tmp
if cmp -s readme-example.c.tmp "$top/examples/simple.c"; then
  echo "ok: README example is examples/simple.c"
else
  echo "FAIL: the README's example differs from examples/simple.c:"
  diff readme-example.c.tmp "$top/examples/simple.c" | head -20
  fail=1
fi
rm -f readme-example.c.tmp

out=$("$build/examples/simple" "$build/tiny-random.gguf" 5 6 7 2>&1)
rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -Eq '^generated:( [0-9]+){8}$'; then
  echo "ok: example generated: $out"
else
  echo "FAIL: example exited $rc: $out"
  fail=1
fi

out=$("$build/examples/simple" /nonexistent.gguf 2>&1)
rc=$?
if [ $rc -eq 1 ] && echo "$out" | grep -q "error: /nonexistent.gguf: "; then
  echo "ok: missing model reported: $out"
else
  echo "FAIL: missing model: exit $rc: $out"
  fail=1
fi
exit $fail
