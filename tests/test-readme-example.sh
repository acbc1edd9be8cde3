#!/bin/sh
# test-readme-example - the README's API example is exactly examples/simple.c, and the
# program built from it runs on the small model the build provides.
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"

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

# example WHAT CODE PATTERN ARGS...: examples/simple with ARGS exits CODE, its output (stdout
# and stderr) matching PATTERN (grep -E)
example() {
  what=$1 code=$2 pat=$3
  shift 3
  out=$("$build/examples/simple" "$@" 2>&1)
  rc=$?
  if [ $rc -eq "$code" ] && echo "$out" | grep -Eq -- "$pat"; then
    ok "$what: $out"
  else
    bad "$what: exit $rc: $out"
  fi
}
example "example generated" 0 '^generated:( [0-9]+){8}$' "$build/tiny-random.gguf" 5 6 7
example "missing model reported" 1 'error: /nonexistent\.gguf: ' /nonexistent.gguf
exit $fail
