"""Reference perplexity of a token document, exact and with the official statistics window.

Run from the top of the tree (Debian's python3, which has torch and numpy):

    /usr/bin/python3 tests/reference/perplexity_ref.py            # (re)generate tests/golden/ppl-*
    /usr/bin/python3 tests/reference/perplexity_ref.py MODEL.gguf TOKENS [--window] [--per-token]
                                                                   # score one document, print JSON

Definitions (the same as `megalodon-run perplexity`, docs/megalodon-run.md):
    document t_0 .. t_{N-1}; the inputs are t_0 .. t_{N-2}, the targets t_1 .. t_{N-1}
    nll_i = logsumexp(logits_{i-1}) - logits_{i-1}[t_i]    (float64), i = 1 .. N-1
    "tokens" = N - 1 (scored tokens), "nll" = sum nll_i, "ppl" = exp(nll / (N - 1))

exact: the streaming recurrence of megalodon_ref (one call per chunk; checked against other
call patterns).

official window (megalodon/inference.py, docs/model.md §15): the inputs go in calls of two whole
chunks (MAX_CHUNKS_PER_BATCH = 2; the last whole chunk alone when their number is odd), then
the remainder (< C tokens) in one call. After a whole-chunk call ending at e (inputs fed so
far) with 8C <= e (TRUNCATE_CHUNKS = 8) while inputs remain, the TimestepNorm statistics of
every layer and of the final norm are replaced by those of a fresh forward (prior
statistics, no keys/values, hx = None) over t[e-6C : e]; keys/values and the CEMA hidden
states are kept (utils.py truncate_cache).
"""
import json
import math
import os
import random
import sys

import torch

sys.dont_write_bytecode = True          # keep the tree free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_io as G  # noqa: E402
from make_golden import BASE, init_state_dict, model_writer, state_dict_from_model_file  # noqa: E402
from megalodon_ref import Cache, LayerCache, Megalodon, ModelConf  # noqa: E402

OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "golden"))
TRUNCATE_CHUNKS = 8
MAX_CHUNKS_PER_BATCH = 2
TOL = 1e-9


# ----------------------------------------------------------------------------- model
def conf_from_model_file(path):
    """ModelConf from the megalodon.* keys of a model file (docs/model-format.md)."""
    f = G.read_gguf(path)
    kv = lambda k, d=None: f.kv[k][1] if k in f.kv else d  # noqa: E731
    conf = ModelConf(
        num_layers=kv("megalodon.block_count"), model_dim=kv("megalodon.embedding_length"),
        z_dim=kv("megalodon.z_dim"), value_dim=kv("megalodon.value_dim"),
        num_heads=kv("megalodon.head_count"), ffn_hidden_dim=kv("megalodon.feed_forward_length"),
        cema_ndim=kv("megalodon.cema_ndim"), chunk_size=kv("megalodon.chunk_size"),
        norm_num_groups=kv("megalodon.norm_groups"), norm_eps=kv("megalodon.norm_epsilon"),
        rope_base=kv("megalodon.rope_freq_base"), vocab_size=kv("megalodon.vocab_size"),
        output_size=kv("megalodon.output_size", -1),
        swiglu=bool(kv("megalodon.swiglu", False)), scale_emb=bool(kv("megalodon.scale_emb", False)),
        share_emb=bool(kv("megalodon.share_emb", False)),
        rescale_nffn=bool(kv("megalodon.rescale_nffn", False)),
        norm_affine=bool(kv("megalodon.norm_affine", True)))
    return conf


def load_model(path):
    conf = conf_from_model_file(path)
    return Megalodon(conf, state_dict_from_model_file(path, conf))


# ----------------------------------------------------------------------------- scoring
def nll_rows(logits, targets):
    """nll per row (float64): logsumexp(row) - row[target]."""
    logits = logits.to(torch.float64)
    return torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[:, None])[:, 0]


def chunk_split(L, C):
    return [C] * (L // C) + ([L % C] if L % C else [])


def score_calls(model, tokens, calls, window=False):
    """Feed the inputs tokens[:-1] in calls of the given lengths (each legal for the cache),
    score every target; with window, apply the official statistics window after whole-chunk
    calls. Returns the per-token nll (N-1,) float64."""
    C = model.conf.chunk_size
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    n_in = tokens.shape[0] - 1
    assert sum(calls) == n_in
    cache = model.new_cache()
    out, e = [], 0
    for L in calls:
        logits, _, cache = model.forward(tokens[e:e + L], cache)
        out.append(nll_rows(logits, tokens[e + 1:e + L + 1]))
        e += L
        if window and L % C == 0 and TRUNCATE_CHUNKS * C <= e < n_in:
            cache = window_norm_stats(model, cache, tokens[e - (TRUNCATE_CHUNKS - MAX_CHUNKS_PER_BATCH) * C:e])
    return torch.cat(out)


def window_norm_stats(model, cache, window_tokens):
    """utils.py truncate_cache: the norm statistics of a fresh forward over window_tokens;
    keys/values and hx of `cache` are kept."""
    _, _, fresh = model.forward(window_tokens)           # fresh cache: prior stats, hx None
    layers = [LayerCache(lc.k, lc.v, fl.norm, lc.hx) for lc, fl in zip(cache.layers, fresh.layers)]
    return Cache(layers, fresh.final_norm, cache.n_past)


def official_calls(n_in, C):
    """inference.py: whole chunks two at a time, then the remainder."""
    n_chunks = n_in // C
    calls = []
    for c in range(0, n_chunks, MAX_CHUNKS_PER_BATCH):
        calls.append((min(c + MAX_CHUNKS_PER_BATCH, n_chunks) - c) * C)
    if n_in % C:
        calls.append(n_in % C)
    return calls


def exact_nll(model, tokens):
    return score_calls(model, tokens, chunk_split(len(tokens) - 1, model.conf.chunk_size))


def window_nll(model, tokens):
    return score_calls(model, tokens, official_calls(len(tokens) - 1, model.conf.chunk_size),
                       window=True)


def summary(per_token, with_per_token):
    nll = float(per_token.sum())
    d = {"tokens": int(per_token.shape[0]), "nll": nll, "ppl": math.exp(nll / per_token.shape[0])}
    if with_per_token:
        d["per_token_nll"] = [float(x) for x in per_token]
    return d


# ----------------------------------------------------------------------------- golden files
def read_tokens(path):
    with open(path) as f:
        return [int(w) for w in f.read().split()]


def write_tokens(path, tokens):
    with open(path, "w") as f:
        for i in range(0, len(tokens), 25):
            f.write(" ".join(str(t) for t in tokens[i:i + 25]) + "\n")


def make_case(name, model_name, n_tokens, seed, tokens=None, extra=None):
    model_path = os.path.join(OUT_DIR, model_name + ".gguf")
    model = load_model(model_path)
    C = model.conf.chunk_size
    if tokens is None:
        rng = random.Random(seed)
        tokens = [rng.randrange(model.conf.vocab_size) for _ in range(n_tokens)]
    n_in = n_tokens - 1

    exact = exact_nll(model, tokens)
    # self-checks: other call patterns give the same exact values
    for calls in ([1] * n_in, official_calls(n_in, C), [3, 5] + chunk_split(n_in - 8, C)):
        d = (score_calls(model, tokens, calls) - exact).abs().max().item()
        assert d < TOL, "exact nll depends on the call pattern %s: %.3e" % (calls[:6], d)
    win = window_nll(model, tokens)
    # the window first acts after the call ending at 8C: targets up to 8C are unchanged
    first = TRUNCATE_CHUNKS * C
    same = (win[:first] - exact[:first]).abs().max().item()
    assert same < TOL, "window changed the first %d targets: %.3e" % (first, same)
    diff = (win[first:] - exact[first:]).abs().max().item() if n_in > first else 0.0
    assert n_in <= first + 1 or diff > 1e-6, "the window had no effect"

    tok_path = os.path.join(OUT_DIR, name + ".tokens")
    write_tokens(tok_path, tokens)
    assert read_tokens(tok_path) == tokens
    e, w = summary(exact, True), summary(win, True)
    doc = {
        "case": name, "model": model_name + ".gguf", "tokens_file": name + ".tokens",
        "n_tokens": n_tokens, "chunk_size": C, "seed": seed,
        "scored": e["tokens"],
        "exact_nll": e["nll"], "exact_ppl": e["ppl"],
        "window_nll": w["nll"], "window_ppl": w["ppl"],
        "window_max_abs_diff": diff,
        "exact_per_token_nll": e["per_token_nll"],
        "window_per_token_nll": w["per_token_nll"],
    }
    doc.update(extra or {})
    with open(os.path.join(OUT_DIR, name + ".json"), "w") as f:
        # one key per line (the shell test reads it with sed)
        f.write("{\n" + ",\n".join("  %s: %s" % (json.dumps(k), json.dumps(v)) for k, v in doc.items())
                + "\n}\n")
    print("%-9s N=%d C=%d  exact nll %.10g ppl %.6f   window nll %.10g ppl %.6f   max |diff| %.4f"
          % (name, n_tokens, C, e["nll"], e["ppl"], w["nll"], w["ppl"], diff))


# A text document for the byte-tokenizer model: BOS + its UTF-8 bytes + EOS, as
# `megalodon-run perplexity -f` encodes it (the official evaluation's encode(bos=True, eos=True)).
BYTE_TEXT = ("Megalodon streams through documents of any length: a chunk of C tokens at a time, "
             "with the CEMA state and the timestep-norm statistics carried from chunk to chunk. "
             "The official evaluation keeps only the last six to eight chunks of statistics; "
             "this file checks both. \u00e9t\u00e9 \u2603\n")
BYTE_BOS, BYTE_EOS = 256, 257


def make_byte_model(name, seed):
    """The base configuration with a 258-token 'byte' tokenizer (ids 0..255 the bytes, 256 BOS
    <s>, 257 EOS </s>): tests the text paths of megalodon-run (tokenize, -f, -p)."""
    conf = ModelConf(**dict(BASE, vocab_size=258))
    conf.norm_eps = float(G.np.float32(conf.norm_eps))
    torch.manual_seed(seed)
    sd = init_state_dict(conf, "f32")
    w = model_writer(name, conf, sd, "f32")
    w.add_str("tokenizer.ggml.model", "byte")
    pieces = ["<0x%02X>" % b for b in range(256)] + ["<s>", "</s>"]
    w.add_kv("tokenizer.ggml.tokens", G.T_ARRAY, (G.T_STRING, pieces))
    w.add_kv("tokenizer.ggml.token_type", G.T_ARRAY, (G.T_INT32, [6] * 256 + [3, 3]))
    w.add_u32("tokenizer.ggml.bos_token_id", BYTE_BOS)
    w.add_u32("tokenizer.ggml.eos_token_id", BYTE_EOS)
    path = os.path.join(OUT_DIR, name + ".gguf")
    w.write(path)
    # the file gives back the same weights
    sd2 = state_dict_from_model_file(path, conf_from_model_file(path))
    assert all(torch.equal(sd2[k], sd[k]) for k in sd2)


def main(argv):
    if len(argv) >= 3:
        model = load_model(argv[1])
        tokens = read_tokens(argv[2])
        per = window_nll(model, tokens) if "--window" in argv else exact_nll(model, tokens)
        print(json.dumps(summary(per, "--per-token" in argv)))
        return
    # (name, model, document length, seed): C = 8 in the golden models, so 250 tokens are
    # 31 whole chunks + 1 input: the window acts from e = 64 on, the last whole chunk goes
    # alone and a 1-token remainder follows.
    make_case("ppl-base", "base", 250, 2024)
    make_case("ppl-heads2", "heads2_swiglu", 150, 2025)
    make_byte_model("ppl-byte", 2026)
    data = BYTE_TEXT.encode("utf-8")
    with open(os.path.join(OUT_DIR, "ppl-byte.txt"), "wb") as f:
        f.write(data)
    tokens = [BYTE_BOS] + list(data) + [BYTE_EOS]
    make_case("ppl-byte", "ppl-byte", len(tokens), None, tokens=tokens,
              extra={"text_file": "ppl-byte.txt", "text_bytes": len(data)})


if __name__ == "__main__":
    main(sys.argv)
