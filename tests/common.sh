# common.sh - what the shell tests share; each sources it first:
#     . "${MG_TOP_SRCDIR:-.}/tests/common.sh"
# It sets top and build (the source and build trees, MG_TOP_SRCDIR and MG_TOP_BUILDDIR as
# `make check` sets them), golden (tests/golden) and fail (0; bad sets it to 1), and defines
# the functions below.
set -u
top=${MG_TOP_SRCDIR:-.}
build=${MG_TOP_BUILDDIR:-.}
golden=$top/tests/golden
fail=0

ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# need PROGRAM...: each must be there (else FAIL, exit 1)
need() {
  for p in "$@"; do
    if [ ! -x "$p" ]; then
      echo "FAIL: $p is not there"
      exit 1
    fi
  done
}

# make_tmp NAME: $tmp, a new directory removed at exit, after killing the processes the test
# started in the background and listed in $pids
pids=""
make_tmp() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || exit 1
  trap cleanup EXIT INT TERM
}
cleanup() {
  for p in $pids; do kill -9 "$p" 2> /dev/null; done
  rm -rf "$tmp"
}

# run_cmd CMD...: runs it; $rc, $tmp/out (stdout), $tmp/err (stderr)
run_cmd() {
  "$@" > "$tmp/out" 2> "$tmp/err"
  rc=$?
}

# expect CODE PATTERN WHAT CMD...: exit status CODE and PATTERN (grep -E) in stderr
expect() {
  code=$1 pat=$2 what=$3
  shift 3
  run_cmd "$@"
  if [ "$rc" -eq "$code" ] && grep -Eq -- "$pat" "$tmp/err"; then
    ok "$what -> exit $rc: $(grep -E -- "$pat" "$tmp/err" | head -1)"
  else
    bad "$what: exit $rc (expected $code and /$pat/), stderr: $(head -3 "$tmp/err")"
  fi
}

# expect_output CODE PATTERN CMD...: exit status CODE and a line of its stdout or stderr
# matching PATTERN (grep)
expect_output() {
  want=$1 pat=$2
  shift 2
  "$@" >"$tmp/out" 2>&1
  got=$?
  if [ $got -eq "$want" ] && grep -q -- "$pat" "$tmp/out"; then ok "$* -> $got, '$pat'"
  else bad "$* -> $got (want $want and '$pat'): $(tail -3 "$tmp/out")"; fi
}

# key of a one-line JSON object (the program's output)
jget() { sed -n "s/.*\"$2\": \([^,}]*\).*/\1/p" "$1" | head -1; }
# key of a golden JSON file (one key per line)
gget() { sed -n "s/^  \"$2\": \(.*\),\{0,1\}$/\1/p" "$1" | sed 's/,$//' | head -1; }
# rel_close A B TOL: |A - B| <= TOL |B|
rel_close() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d;
  m = b < 0 ? -b : b; exit !(a != "" && d <= t * m) }'; }

# The training tests' tiny corpus (a repeated sentence) and model config (2 layers, D 32,
# chunk 16), written to the files named.
tiny_corpus() {
  i=0
  while [ $i -lt 150 ]; do
    echo "the quick brown fox jumps over the lazy dog."
    i=$((i + 1))
  done > "$1"
}
tiny_config() {
  cat > "$1" <<'EOF_CFG'
{"n_layer": 2, "n_embd": 32, "z_dim": 16, "value_dim": 64, "n_head": 1, "n_ff": 64,
 "cema_ndim": 4, "chunk_size": 16, "norm_groups": 4}
EOF_CFG
}
