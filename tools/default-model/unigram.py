#!/usr/bin/env python3
"""unigram.py - the unigram baseline of the default model's evaluation (docs/training.md).

    unigram.py --vocab-size V --train IDS... --eval IDS... [--eos ID] [--json]

IDS files hold token ids separated by white space (`megalodon-run tokenize` output), one file
per document. The model is the unigram distribution of the training tokens with add-one
(Laplace) smoothing over the V ids: p(t) = (count(t) + 1) / (N + V). Each evaluation document
is scored as `megalodon-run perplexity` scores a text: every id of the document, then EOS when
--eos is given (the leading BOS is context only and never scored); the training counts are
taken over the same kind of tokens (each training document's ids, then EOS).

Prints, for each evaluation document and over all of them, the number of scored tokens, the
mean negative log-likelihood in nats and the perplexity exp(mean nll); --json prints one JSON
object per line instead ({"file", "tokens", "nll", "mean_nll", "ppl"}, the total last with
"file": "all"). Only the standard library is needed.
"""
import argparse
import json
import math
import sys


def read_ids(path, V):
    with open(path, "r", encoding="ascii") as f:
        ids = [int(w) for w in f.read().split()]
    for i, t in enumerate(ids):
        if not 0 <= t < V:
            sys.exit("unigram: %s: token %d: id %d is out of range [0, %d)" % (path, i + 1, t, V))
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-size", type=int, required=True, help="V: the ids are 0..V-1")
    ap.add_argument("--train", nargs="+", required=True, metavar="IDS", help="training documents")
    ap.add_argument("--eval", nargs="+", required=True, metavar="IDS", help="evaluation documents")
    ap.add_argument("--eos", type=int, default=-1, help="EOS id put after every document")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    a = ap.parse_args()
    V = a.vocab_size
    if V <= 0 or a.eos >= V:
        sys.exit("unigram: bad --vocab-size or --eos")
    counts = [0] * V
    n = 0
    for p in a.train:
        ids = read_ids(p, V)
        if a.eos >= 0:
            ids.append(a.eos)
        for t in ids:
            counts[t] += 1
        n += len(ids)
    logp = [math.log((c + 1) / (n + V)) for c in counts]
    rows = []
    tot_tokens, tot_nll = 0, 0.0
    for p in a.eval:
        ids = read_ids(p, V)
        if a.eos >= 0:
            ids.append(a.eos)
        nll = -math.fsum(logp[t] for t in ids)
        rows.append((p, len(ids), nll))
        tot_tokens += len(ids)
        tot_nll += nll
    rows.append(("all", tot_tokens, tot_nll))
    for name, k, nll in rows:
        mean = nll / k if k else float("nan")
        if a.json:
            print(json.dumps({"file": name, "tokens": k, "nll": round(nll, 3),
                              "mean_nll": round(mean, 6), "ppl": round(math.exp(mean), 4)}))
        else:
            print("%-40s tokens %8d  nll/token %.4f  ppl %.2f" % (name, k, mean, math.exp(mean)))
    if not a.json:
        print("(unigram of %d training tokens, add-one smoothing over %d ids)" % (n, V))
    return 0


if __name__ == "__main__":
    sys.exit(main())
