"""Generate the golden files of tests/golden/ from tiny random Megalodon models.

Run from the top of the tree:   /usr/bin/python3 tests/reference/make_golden.py

For every case: build a random model (float32 weights, deterministic seed), write it as a
libmegalodon model file (docs/model-format.md), run the float64 reference
(megalodon_ref.py) and write the expected intermediates, logits and final streaming state
(rounded to float32) to NAME.expect.gguf. Before writing, the reference is checked against
itself (and the generator fails loudly if any check fails):
  * CEMA: the FFT path and the plain recurrence agree in every call;
  * full forward == chunk-by-chunk streaming == token-by-token streaming == several other
    legal call patterns (e.g. [5, 3, C, ...]), for outputs and for the final state;
  * the full forward of every legal prefix (L' < C or L' % C == 0) equals the streaming
    outputs and state after L' tokens;
  * the whole model with recurrence CEMA equals the model with FFT CEMA;
  * the model read back from the written model file gives bit-identical outputs;
  * every written file reads back with the same keys and tensors (names, ne, types, bytes).
"""
import math
import os
import random
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.dont_write_bytecode = True          # keep the tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_io as G  # noqa: E402
from megalodon_ref import Megalodon, ModelConf, _self_test  # noqa: E402

TOL = 1e-9                      # float64 self-consistency tolerance
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "golden"))

BASE = dict(num_layers=2, model_dim=16, z_dim=8, value_dim=12, num_heads=1, ffn_hidden_dim=24,
            cema_ndim=3, chunk_size=8, norm_num_groups=4, vocab_size=37, norm_eps=1e-5,
            rope_base=10000.0)

# (name, config overrides, number of tokens L, storage type of 2-D projections + embedding, seed)
CASES = [
    ("base", {}, 29, "f32", 101),
    ("short", {}, 5, "f32", 102),
    ("exact", {}, 8, "f32", 103),
    ("heads2_swiglu", dict(num_heads=2, swiglu=True), 29, "f32", 104),
    ("share_scale", dict(share_emb=True, scale_emb=True), 24, "f32", 105),
    ("rescale_noaffine", dict(rescale_nffn=True, norm_affine=False), 29, "f32", 106),
    ("f16", {}, 16, "f16", 107),
    ("bf16", {}, 16, "bf16", 108),
]


# ----------------------------------------------------------------------------- weights
def trunc_normal(shape, std, a, b):
    t = torch.empty(shape, dtype=torch.float32)
    torch.nn.init.trunc_normal_(t, mean=0.0, std=std, a=a, b=b)
    return t


def he(out_f, in_f):
    # kaiming_normal(a=sqrt 5) = N(0, 1/(3 fan_in))
    return torch.randn(out_f, in_f, dtype=torch.float32) * math.sqrt(1.0 / (3.0 * in_f))


def perturb(shape, std=0.1):
    # replaces the official zero init so that a missing "+1" or a misplaced bias shows
    return torch.randn(shape, dtype=torch.float32) * std


def projection_names(conf):
    """The 2-D projection weights (and the embedding) that the f16/bf16 cases store in half."""
    names = ["embed.weight"]
    for i in range(conf.num_layers):
        names += ["layers.%d.mega.%s.weight" % (i, w) for w in ("wz", "wv", "wr", "wh1", "wh2")]
        names += ["layers.%d.nffn.fc1.weight" % i, "layers.%d.nffn.fc2.weight" % i]
        if conf.swiglu:
            names.append("layers.%d.nffn.fc3.weight" % i)
    if not conf.share_emb:
        names.append("output.output.weight")
    return names


def round_like_storage(t, wtype):
    """The float32 value the model file will hold for tensor t stored as wtype."""
    if wtype == "f32":
        return t
    if wtype == "f16":
        return t.half().float()
    if wtype == "bf16":
        return torch.from_numpy(G.bf16_bits_to_f32(G.f32_to_bf16_bits(t.numpy())).copy())
    raise ValueError(wtype)


def timenorm_params(sd, prefix, D, Gn):
    sd[prefix + ".weight"] = perturb(D)
    sd[prefix + ".bias"] = perturb(D)
    sd[prefix + ".prior_count"] = torch.tensor(0, dtype=torch.int64)
    sd[prefix + ".prior_mean"] = torch.zeros(Gn, dtype=torch.float32)
    sd[prefix + ".prior_logv"] = torch.zeros(Gn, dtype=torch.float32)


def init_state_dict(conf, wtype):
    """Random float32 state dict with the official names (docs/model.md §12 init, with every
    zero-initialized parameter perturbed). Call after torch.manual_seed."""
    D, Z, E, F, N, V = (conf.model_dim, conf.z_dim, conf.value_dim, conf.ffn_hidden_dim,
                        conf.cema_ndim, conf.vocab_size)
    Gn = conf.norm_num_groups
    dz = Z // conf.num_heads
    sd = OrderedDict()
    sd["embed.weight"] = trunc_normal((V, D), 1 / math.sqrt(D), -3 / math.sqrt(D), 3 / math.sqrt(D))
    base = 10000.0 if conf.rope_base is None else conf.rope_base
    # rope.freqs[i] = 1 / base^(2i/dz), python float64 -> stored float32
    sd["rope.freqs"] = torch.tensor([1.0 / base ** (2.0 * i / dz) for i in range(dz // 2)],
                                    dtype=torch.float64).float()
    for i in range(conf.num_layers):
        m = "layers.%d.mega." % i
        timenorm_params(sd, m + "timenorm", D, Gn)
        sd[m + "cema.alpha"] = torch.randn(D, N, 1) * 0.2
        sd[m + "cema.delta"] = torch.randn(D, N, 1) * 0.2
        # theta = logit(f), f_k = exp(-k ln D / D), k = 1..D, randomly permuted over channels
        f = torch.exp(torch.arange(1, D + 1, dtype=torch.float64) * -(math.log(D) / D))
        f = f[torch.randperm(D)]
        sd[m + "cema.theta"] = torch.log(f / (1.0 - f)).float().view(D, 1, 1)
        sd[m + "cema.gamma"] = torch.randn(D, N, 2)          # real AND imag N(0, 1) (official: imag 0)
        sd[m + "cema.omega"] = trunc_normal((D, 1), 0.25, -1.0, 1.0)
        if conf.norm_affine:
            sd[m + "rmsnorm.weight"] = perturb(D)
        for w, (o, n_in) in (("wz", (Z, D)), ("wv", (E, D)), ("wr", (E, D)), ("wh1", (D, D))):
            sd[m + w + ".weight"] = he(o, n_in)
            sd[m + w + ".bias"] = perturb(o)
        sd[m + "wh2.weight"] = he(D, E)
        sd[m + "gamma"] = perturb((2, Z))
        sd[m + "beta"] = perturb((2, Z))
        f_ = "layers.%d.nffn." % i
        if conf.norm_affine:
            sd[f_ + "norm.weight"] = perturb(D)
            sd[f_ + "norm.bias"] = perturb(D)
        sd[f_ + "fc1.weight"] = he(F, D)
        sd[f_ + "fc2.weight"] = he(D, F)
        if conf.swiglu:
            sd[f_ + "fc3.weight"] = he(F, D)
        if conf.rescale_nffn:
            sd[f_ + "alpha"] = 0.1 * 0.5 ** i + perturb(D, 0.05)
    timenorm_params(sd, "output.final_norm", D, Gn)
    if not conf.share_emb:
        sd["output.output.weight"] = trunc_normal((V, D), 1 / math.sqrt(D), -3 / math.sqrt(D),
                                                  3 / math.sqrt(D))
    for name in projection_names(conf):
        sd[name] = round_like_storage(sd[name], wtype)
    return sd


# ----------------------------------------------------------------------------- model file
def tensor_map(conf):
    """[(GGUF name, official name)] in the order of docs/model-format.md (present tensors only)."""
    m = [("token_embd.weight", "embed.weight"), ("rope.freqs", "rope.freqs")]
    for i in range(conf.num_layers):
        L, n = "layers.%d.mega." % i, "blk.%d." % i
        m += [(n + "tnorm." + s, L + "timenorm." + s)
              for s in ("weight", "bias", "prior_count", "prior_mean", "prior_logv")]
        m += [(n + "cema." + s, L + "cema." + s) for s in ("alpha", "delta", "theta", "gamma", "omega")]
        if conf.norm_affine:
            m.append((n + "attn_norm.weight", L + "rmsnorm.weight"))
        for g, o in (("attn_z", "wz"), ("attn_v", "wv"), ("attn_r", "wr"), ("attn_h1", "wh1")):
            m += [(n + g + ".weight", L + o + ".weight"), (n + g + ".bias", L + o + ".bias")]
        m += [(n + "attn_h2.weight", L + "wh2.weight"),
              (n + "attn_qk.gamma", L + "gamma"), (n + "attn_qk.beta", L + "beta")]
        fn = "layers.%d.nffn." % i
        if conf.norm_affine:
            m += [(n + "ffn_norm.weight", fn + "norm.weight"), (n + "ffn_norm.bias", fn + "norm.bias")]
        m.append((n + "ffn_up.weight", fn + "fc1.weight"))
        if conf.swiglu:
            m.append((n + "ffn_gate.weight", fn + "fc3.weight"))
        m.append((n + "ffn_down.weight", fn + "fc2.weight"))
        if conf.rescale_nffn:
            m.append((n + "ffn_alpha", fn + "alpha"))
    m += [("output_norm." + s, "output.final_norm." + s)
          for s in ("weight", "bias", "prior_count", "prior_mean", "prior_logv")]
    if not conf.share_emb:
        m.append(("output.weight", "output.output.weight"))
    return m


GGML_OF = {"f32": G.GGML_F32, "f16": G.GGML_F16, "bf16": G.GGML_BF16}


def model_writer(name, conf, sd, wtype):
    w = G.GGUFWriter()
    w.add_str("general.architecture", "megalodon")
    w.add_str("general.name", "golden-" + name)
    w.add_u32("megalodon.block_count", conf.num_layers)
    w.add_u32("megalodon.embedding_length", conf.model_dim)
    w.add_u32("megalodon.z_dim", conf.z_dim)
    w.add_u32("megalodon.value_dim", conf.value_dim)
    w.add_u32("megalodon.head_count", conf.num_heads)
    w.add_u32("megalodon.feed_forward_length", conf.ffn_hidden_dim)
    w.add_u32("megalodon.cema_ndim", conf.cema_ndim)
    w.add_u32("megalodon.chunk_size", conf.chunk_size)
    w.add_u32("megalodon.norm_groups", conf.norm_num_groups)
    w.add_f32("megalodon.norm_epsilon", conf.norm_eps)
    w.add_f32("megalodon.rope_freq_base", 10000.0 if conf.rope_base is None else conf.rope_base)
    w.add_u32("megalodon.vocab_size", conf.vocab_size)
    w.add_u32("megalodon.output_size", conf.out_size)
    w.add_bool("megalodon.swiglu", conf.swiglu)
    w.add_bool("megalodon.scale_emb", conf.scale_emb)
    w.add_bool("megalodon.share_emb", conf.share_emb)
    w.add_bool("megalodon.rescale_nffn", conf.rescale_nffn)
    w.add_bool("megalodon.norm_affine", conf.norm_affine)
    half = set(projection_names(conf))
    for gname, oname in tensor_map(conf):
        t = sd[oname]
        if oname.endswith("prior_count"):
            w.add_tensor(gname, np.array([int(t)], dtype=np.int32), G.GGML_I32)   # I32 ne [1]
        elif oname in half:
            w.add_tensor(gname, t.numpy(), GGML_OF[wtype])
        else:
            w.add_tensor(gname, t.numpy(), G.GGML_F32)
    return w


def state_dict_from_model_file(path, conf):
    """Inverse of model_writer: official-name float32 state dict from a model file."""
    f = G.read_gguf(path)
    sd = OrderedDict()
    for gname, oname in tensor_map(conf):
        t = f.tensors[gname]
        if oname.endswith("prior_count"):
            sd[oname] = torch.tensor(int(t.data[0]), dtype=torch.int64)
        else:
            sd[oname] = torch.from_numpy(G.tensor_as_f32(t).copy())
    return sd


# ----------------------------------------------------------------------------- call patterns
def chunk_split(L, C):
    return [C] * (L // C) + ([L % C] if L % C else [])


def split_5_3(L, C):
    """[5, C-5, C, C, ..., 1, rest]: partial calls filling a chunk, whole chunks, then a
    remainder split in two."""
    assert C > 5
    if L <= 5:
        return [L]
    if L < C:
        return [5, L - 5]
    s, rem = [5, C - 5], L - C
    while rem >= C:
        s.append(C)
        rem -= C
    if rem:
        s += [1] + ([rem - 1] if rem > 1 else [])
    return s


def random_split(L, C, rng):
    """A random call pattern obeying the cache rules (n + l <= C, or n == 0 and l = kC)."""
    s, n, rem = [], 0, L
    while rem:
        opts = list(range(1, min(C - n, rem) + 1))
        if n == 0:
            opts += [k * C for k in (2, 3) if k * C <= rem]
        l = rng.choice(opts)
        s.append(l)
        n = (n + l) % C
        rem -= l
    return s


def legal_full(L, C):
    return L < C or L % C == 0


# ----------------------------------------------------------------------------- comparisons
def diff_inter(a, b, n=None):
    """Max abs difference of two intermediate dicts over the first n rows."""
    n = a["embd"].shape[0] if n is None else n
    d = 0.0
    for key in ("embd", "output_norm", "logits"):
        d = max(d, (a[key][:n] - b[key][:n]).abs().max().item())
    for key in ("attn_out", "out"):
        for x, y in zip(a[key], b[key]):
            d = max(d, (x[:n] - y[:n]).abs().max().item())
    return d


def _dnorm(s, t):
    assert s.count == t.count, (s.count, t.count)
    return max((s.mean - t.mean).abs().max().item(), (s.var - t.var).abs().max().item())


def diff_cache(a, b):
    assert a.n == b.n and a.n_past == b.n_past, (a.n, b.n, a.n_past, b.n_past)
    d = _dnorm(a.final_norm, b.final_norm)
    for x, y in zip(a.layers, b.layers):
        d = max(d, _dnorm(x.norm, y.norm), (x.hx - y.hx).abs().max().item())
        if x.n:
            d = max(d, (x.k - y.k).abs().max().item(), (x.v - y.v).abs().max().item())
    return d


def check(what, d):
    if not d < TOL:
        raise AssertionError("reference self-check FAILED: %s: max abs diff %.3e >= %.0e" % (what, d, TOL))
    return d


def self_consistency(conf, sd, tokens, seed):
    """All the equivalence checks; returns (expected intermediates, final cache, stats)."""
    C = conf.chunk_size
    L = tokens.shape[0]
    model = Megalodon(conf, sd, check_cema=True)
    stats = {}

    # canonical streaming: one call per chunk
    ref, ref_cache, _ = model.forward_split(tokens, chunk_split(L, C))

    # token by token, with the state after every token
    tok, tok_cache, snaps = model.forward_split(tokens, [1] * L, snapshots=True)
    d_stream = check("chunk-by-chunk vs token-by-token", max(diff_inter(ref, tok),
                                                             diff_cache(ref_cache, tok_cache)))

    # other legal call patterns
    rng = random.Random(seed)
    splits = [split_5_3(L, C)] + [random_split(L, C, rng) for _ in range(3)]
    for s in splits:
        inter, cache, _ = model.forward_split(tokens, s)
        d_stream = max(d_stream, check("split %s" % s, max(diff_inter(ref, inter),
                                                           diff_cache(ref_cache, cache))))
    stats["stream"] = d_stream
    stats["splits"] = splits

    # full forward of every legal prefix vs streaming after the same tokens
    d_full = 0.0
    full_L = [l for l in range(1, L + 1) if legal_full(l, C)]
    for l in full_L:
        _, inter, cache = model.forward(tokens[:l])
        d_full = max(d_full, check("full forward L'=%d vs streaming" % l,
                                   max(diff_inter(ref, inter, l), diff_cache(snaps[l - 1], cache))))
    stats["full"] = d_full
    stats["full_lengths"] = full_L

    # whole model with the recurrence CEMA
    rec = Megalodon(conf, sd, cema_impl="recurrence")
    r_inter, r_cache, _ = rec.forward_split(tokens, chunk_split(L, C))
    stats["model_rec"] = check("model with recurrence CEMA vs FFT CEMA",
                               max(diff_inter(ref, r_inter), diff_cache(ref_cache, r_cache)))
    stats["cema"] = check("CEMA FFT vs recurrence (every call)", model.cema_max_diff)

    # expected values: the full forward where it is legal, chunk-by-chunk streaming otherwise
    if legal_full(L, C):
        _, expect, expect_cache = model.forward(tokens)
    else:
        expect, expect_cache = ref, ref_cache
    return expect, expect_cache, stats


# ----------------------------------------------------------------------------- expect file
def f32(t):
    return t.detach().to(torch.float32).numpy()


def expect_writer(name, conf, tokens, inter, cache):
    L = tokens.shape[0]
    n_kv = cache.n
    assert n_kv == L % conf.chunk_size
    w = G.GGUFWriter()
    w.add_str("general.architecture", "megalodon-golden")
    w.add_str("golden.case", name)
    w.add_u32("golden.n_tokens", L)
    w.add_u32("golden.n_kv", n_kv)
    w.add_tensor("tokens", tokens.numpy().astype(np.int32), G.GGML_I32)          # ne [L]
    w.add_tensor("logits", f32(inter["logits"]), G.GGML_F32)                     # ne [V, L]
    w.add_tensor("embd", f32(inter["embd"]), G.GGML_F32)                         # ne [D, L]
    for i in range(conf.num_layers):
        w.add_tensor("blk.%d.attn_out" % i, f32(inter["attn_out"][i]), G.GGML_F32)
        w.add_tensor("blk.%d.out" % i, f32(inter["out"][i]), G.GGML_F32)
    w.add_tensor("output_norm", f32(inter["output_norm"]), G.GGML_F32)
    for i, lc in enumerate(cache.layers):
        p = "state.blk.%d." % i
        w.add_tensor(p + "tnorm.count", np.array([lc.norm.count], dtype=np.int32), G.GGML_I32)
        w.add_tensor(p + "tnorm.mean", f32(lc.norm.mean), G.GGML_F32)
        w.add_tensor(p + "tnorm.var", f32(lc.norm.var), G.GGML_F32)
        # (D, N, 2): (real, imag) fastest, then n, then d          -> ne [2, N, D]
        w.add_tensor(p + "cema.h", f32(torch.view_as_real(lc.hx.contiguous())), G.GGML_F32)
        if n_kv:
            w.add_tensor(p + "k", f32(lc.k), G.GGML_F32)                         # ne [Z, n_kv]
            w.add_tensor(p + "v", f32(lc.v), G.GGML_F32)                         # ne [E, n_kv]
    fn = cache.final_norm
    w.add_tensor("state.output_norm.count", np.array([fn.count], dtype=np.int32), G.GGML_I32)
    w.add_tensor("state.output_norm.mean", f32(fn.mean), G.GGML_F32)
    w.add_tensor("state.output_norm.var", f32(fn.var), G.GGML_F32)
    return w


# ----------------------------------------------------------------------------- read-back check
def verify_roundtrip(path, w):
    f = G.read_gguf(path)
    assert f.version == 3
    assert list(f.kv.keys()) == list(w.kv.keys()), path
    for key, (vtype, value) in w.kv.items():
        rtype, rvalue = f.kv[key]
        assert rtype == vtype, (path, key)
        if vtype == G.T_FLOAT32:
            assert rvalue == float(np.float32(value)), (path, key)
        else:
            assert rvalue == value, (path, key, rvalue, value)
    assert list(f.tensors.keys()) == list(w.tensors.keys()), path
    for name, (gtype, a) in w.tensors.items():
        t = f.tensors[name]
        assert t.type == gtype, (path, name)
        assert t.ne == list(reversed(a.shape)), (path, name, t.ne, a.shape)
        assert t.data.shape == a.shape and t.data.dtype == a.dtype, (path, name)
        assert t.data.tobytes() == a.tobytes(), (path, name)


# ----------------------------------------------------------------------------- main
def run_case(name, overrides, L, wtype, seed):
    conf = ModelConf(**dict(BASE, **overrides))
    # the model file stores norm_epsilon as float32: compute with exactly that value
    conf.norm_eps = float(np.float32(conf.norm_eps))
    torch.manual_seed(seed)
    sd = init_state_dict(conf, wtype)
    tokens = torch.randint(0, conf.vocab_size, (L,), dtype=torch.int64)

    expect, cache, stats = self_consistency(conf, sd, tokens, seed)

    model_path = os.path.join(OUT_DIR, name + ".gguf")
    expect_path = os.path.join(OUT_DIR, name + ".expect.gguf")
    mw = model_writer(name, conf, sd, wtype)
    mw.write(model_path)
    verify_roundtrip(model_path, mw)
    ew = expect_writer(name, conf, tokens, expect, cache)
    ew.write(expect_path)
    verify_roundtrip(expect_path, ew)

    # the model read back from the file must give bit-identical reference outputs
    sd2 = state_dict_from_model_file(model_path, conf)
    assert sd2.keys() <= sd.keys() and all(torch.equal(sd2[k], sd[k]) for k in sd2)
    m2 = Megalodon(conf, sd2)
    inter2, cache2, _ = m2.forward_split(tokens, chunk_split(L, conf.chunk_size))
    assert diff_inter(expect, inter2) < TOL and diff_cache(cache, cache2) < TOL

    print("%-17s L=%2d n_kv=%d %-4s  cema fft/rec %.1e  full/stream %.1e  stream splits %.1e  "
          "rec-model %.1e  |logits|max %.2f  files %d+%d B"
          % (name, L, cache.n, wtype, stats["cema"], stats["full"], stats["stream"],
             stats["model_rec"], expect["logits"].abs().max().item(),
             os.path.getsize(model_path), os.path.getsize(expect_path)))
    return stats


def main():
    _self_test()
    os.makedirs(OUT_DIR, exist_ok=True)
    worst = {"cema": 0.0, "full": 0.0, "stream": 0.0, "model_rec": 0.0}
    for case in CASES:
        stats = run_case(*case)
        for k in worst:
            worst[k] = max(worst[k], stats[k])
    print("all checks passed; max diffs: CEMA FFT vs recurrence %.2e, full vs streaming %.2e, "
          "streaming patterns %.2e, recurrence-model vs FFT-model %.2e"
          % (worst["cema"], worst["full"], worst["stream"], worst["model_rec"]))


if __name__ == "__main__":
    main()
