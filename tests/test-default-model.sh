#!/bin/sh
# test-default-model - the default model (models/megalodon-default.gguf) and how megalodon-run
# finds it without -m (docs/megalodon-run.md, "The model file"):
#   * without -m and MEGALODON_MODEL, megalodon-run uses the installed default model if there
#     is one in the package data directory, else the source tree's, and -v says which;
#     the text generated is the same as with -m naming that file;
#   * MEGALODON_MODEL overrides the default, -m overrides MEGALODON_MODEL, a MEGALODON_MODEL
#     that does not exist is a runtime error, an empty one turns the default off (usage error);
#   * the shipped model is a trained one: its vocabulary and tokenizer are those of
#     models/megalodon-default.tokenizer.model (ids identical to SentencePiece's, when a
#     python3 with sentencepiece is there), and its perplexity on a held-out excerpt is far
#     below the unigram baseline's.
# With --installed (make installcheck): the installed model is the source tree's file, and
# the installed megalodon-run finds it without -m (not checked with a staging DESTDIR, where
# the compiled-in path does not hold the file).
# Environment: MG_TOP_SRCDIR, MG_TOP_BUILDDIR, MG_PKGDATADIR (the package data directory),
# MG_PYTHON_TORCH / MG_PYTHON (a python3, for the SentencePiece check); for --installed:
# MG_BINDIR and MG_PREFIX_DESTDIR.
. "${MG_TOP_SRCDIR:-.}/tests/common.sh"
pkgdatadir=${MG_PKGDATADIR:-}
src_model=$top/models/megalodon-default.gguf
src_tok=$top/models/megalodon-default.tokenizer.model
unset MEGALODON_MODEL

if [ ! -f "$src_model" ]; then
  echo "SKIP: $src_model does not exist (tools/default-model/train.sh --install makes it)"
  exit 77
fi
make_tmp test-default-model

# ---------------------------------------------------------------- after make install
if [ "${1:-}" = "--installed" ]; then
  inst=${MG_PREFIX_DESTDIR:-}$pkgdatadir/megalodon-default.gguf
  if cmp -s "$inst" "$src_model"; then
    ok "installed: $inst is models/megalodon-default.gguf"
  else
    bad "installed: $inst is missing or differs from $src_model"
  fi
  if [ -n "${MG_PREFIX_DESTDIR:-}" ]; then
    echo "note: staged install (DESTDIR): the installed megalodon-run is not run (its compiled-in data path is not under DESTDIR)"
  else
    run_cmd "$MG_BINDIR/megalodon-run" -v -p "The" -n 4 -s 1
    if [ "$rc" -eq 0 ] && grep -qxF "model: $pkgdatadir/megalodon-default.gguf (the default model, installed)" "$tmp/err" &&
       [ -s "$tmp/out" ]; then
      ok "installed megalodon-run without -m: $(head -1 "$tmp/err")"
    else
      bad "installed megalodon-run without -m: exit $rc: $(head -3 "$tmp/err")"
    fi
  fi
  exit $fail
fi

# ---------------------------------------------------------------- the build tree
run=$build/bin/megalodon-run
if [ ! -x "$run" ]; then
  echo "FAIL: $run is not built"
  exit 1
fi
if [ -n "$pkgdatadir" ] && [ -f "$pkgdatadir/megalodon-default.gguf" ]; then
  want=$pkgdatadir/megalodon-default.gguf from="the default model, installed"
else
  want=$(cd "$top" && pwd)/models/megalodon-default.gguf from="the default model, in the source tree"
fi
echo "expected default: $want ($from)"

gen() { "$run" "$@" -p "It was a bright cold day" -n 16 -s 7 --temp 0.7; }
run_cmd gen -v
cp "$tmp/out" "$tmp/default.out"
# the path as printed may be spelled differently (e.g. .../_build/sub/../../models in a VPATH
# build): compare the files it names, and the origin exactly
got=$(sed -n 's/^model: \(.*\) (\(the default model, [a-z ]*\))$/\1/p' "$tmp/err" | head -1)
got_from=$(sed -n 's/^model: .* (\(the default model, [a-z ]*\))$/\1/p' "$tmp/err" | head -1)
if [ "$rc" -eq 0 ] && [ -n "$got" ] && [ "$(realpath "$got")" = "$(realpath "$want")" ] &&
   [ "$got_from" = "$from" ] && [ -s "$tmp/out" ]; then
  ok "no -m: $(head -1 "$tmp/err"); generated: $(tr '\n' ' ' < "$tmp/out" | cut -c1-120)"
else
  bad "no -m: exit $rc (expected 0 and 'model: $want ($from)'): $(head -3 "$tmp/err")"
fi
run_cmd gen -m "$want"
if [ "$rc" -eq 0 ] && cmp -s "$tmp/out" "$tmp/default.out"; then
  ok "no -m generates the same text as -m $want"
else
  bad "-m $want: exit $rc, or a different text than without -m"
fi

tiny=$build/tiny-random.gguf
run_cmd env MEGALODON_MODEL="$tiny" "$run" info -v
if [ "$rc" -eq 0 ] && grep -qxF "model: $tiny (MEGALODON_MODEL)" "$tmp/err" && grep -q "^model: $tiny" "$tmp/out"; then
  ok "MEGALODON_MODEL overrides the default: $(head -1 "$tmp/err")"
else
  bad "MEGALODON_MODEL=$tiny: exit $rc: $(head -2 "$tmp/err")"
fi
run_cmd env MEGALODON_MODEL=/nonexistent/model.gguf "$run" info -v -m "$src_model"
if [ "$rc" -eq 0 ] && grep -qxF "model: $src_model (-m)" "$tmp/err"; then
  ok "-m overrides MEGALODON_MODEL"
else
  bad "-m with MEGALODON_MODEL set: exit $rc: $(head -2 "$tmp/err")"
fi
run_cmd env MEGALODON_MODEL=/nonexistent/model.gguf "$run" info
if [ "$rc" -eq 1 ] && grep -q "cannot load model: /nonexistent/model.gguf" "$tmp/err"; then
  ok "a MEGALODON_MODEL that does not exist: exit 1: $(head -1 "$tmp/err")"
else
  bad "MEGALODON_MODEL=/nonexistent: exit $rc (expected 1): $(head -2 "$tmp/err")"
fi
run_cmd env MEGALODON_MODEL= "$run" -p x
if [ "$rc" -eq 2 ] && grep -q "no model given: -m FILE is required" "$tmp/err"; then
  ok "an empty MEGALODON_MODEL turns the default off: exit 2"
else
  bad "MEGALODON_MODEL empty: exit $rc (expected 2): $(head -2 "$tmp/err")"
fi

# ---------------------------------------------------------------- the shipped model
run_cmd "$run" info -m "$src_model"
if [ "$rc" -eq 0 ] && grep -Eq "^ *n_vocab \(V\) +4096 " "$tmp/out" && grep -q "^tokenizer: llama" "$tmp/out"; then
  ok "the shipped model: $(grep -E '^parameters:' "$tmp/out"), 4096 tokens, tokenizer llama"
else
  bad "info of the shipped model: exit $rc: $(head -3 "$tmp/err")"
fi

# Held out from training (Jane Austen, Northanger Abbey, chapter 1; public domain). The
# unigram baseline of docs/training.md is about 770 on the held-out books.
cat > "$tmp/excerpt.txt" <<'EOF'
No one who had ever seen Catherine Morland in her infancy would have
supposed her born to be an heroine. Her situation in life, the character
of her father and mother, her own person and disposition, were
all equally against her. Her father was a clergyman, without being
neglected, or poor, and a very respectable man, though his name
was Richard--and he had never been handsome. He had a considerable
independence besides two good livings--and he was not in the least
addicted to locking up his daughters. Her mother was a woman of useful
plain sense, with a good temper, and, what is more remarkable, with a
good constitution.
EOF
max_ppl=200
run_cmd "$run" perplexity -m "$src_model" -f "$tmp/excerpt.txt" --json
ppl=$(sed -n 's/.*"ppl": \([0-9.e+-]*\).*/\1/p' "$tmp/out" | tail -1)
if [ "$rc" -eq 0 ] && [ -n "$ppl" ] && awk -v p="$ppl" -v m="$max_ppl" 'BEGIN { exit !(p < m) }'; then
  ok "perplexity of a held-out excerpt: $ppl (< $max_ppl; a random model gives about 4096)"
else
  bad "perplexity of a held-out excerpt: exit $rc, ppl '$ppl' (expected < $max_ppl): $(tail -2 "$tmp/err")"
fi

py=${MG_PYTHON_TORCH:-${MG_PYTHON:-}}
if [ -z "$py" ] || ! "$py" -c "import sentencepiece" 2>/dev/null; then
  echo "note: no python3 with sentencepiece (MG_PYTHON_TORCH, MG_PYTHON): the tokenizer is not compared with SentencePiece"
elif [ ! -f "$src_tok" ]; then
  bad "$src_tok is missing (the shipped model's SentencePiece model)"
else
  want_ids=$("$py" -c 'import sys, sentencepiece as s; p = s.SentencePieceProcessor(model_file=sys.argv[1]); print(" ".join(map(str, p.encode(open(sys.argv[2], encoding="utf-8").read()))))' "$src_tok" "$tmp/excerpt.txt")
  got_ids=$("$run" tokenize -m "$src_model" -f "$tmp/excerpt.txt" 2>&1 | tr -s ' \n' '  ' | sed 's/ *$//')
  if [ -n "$want_ids" ] && [ "$got_ids" = "$want_ids" ]; then
    ok "the model's tokenizer gives SentencePiece's ids ($(echo "$want_ids" | wc -w) ids)"
  else
    bad "tokenizer: megalodon-run '$got_ids', SentencePiece '$want_ids'"
  fi
fi

if [ $fail -eq 0 ]; then echo "all default-model checks passed"; fi
exit $fail
