"""Small random Megalodon models in the official checkpoint layout, and checks of converted
model files against them (used by tests/test-convert.sh).

    python3 write_official.py variants
        list the variants: NAME MP-SIZES DESCRIPTION
    python3 write_official.py write --variant NAME --mp P --out DIR [--vocab-size V]
                                    [--additional-vocab-size A]
        write DIR/config.json, DIR/consolidate_config.json, DIR/consolidated.pth (P = 1) or
        DIR/consolidated.00.pth ... (P > 1), DIR/tokens.txt (the ids, separated by spaces)
        and DIR/expected.json
    python3 write_official.py write-all --out DIR
        every variant with every MP size it allows, as DIR/NAME.mpP
    python3 write_official.py verify --case CHECKPOINT GGUF OUTTYPE REL [--case ...]
        compare a converted model file with the unsharded checkpoint it came from: keys,
        tensor names (and order), GGUF ne, types and values (bit-exact after the documented
        rounding of --outtype OUTTYPE), the whole file against the reference GGUF writer
        (make_golden.model_writer), then recompute the perplexity with the reference from the
        file's own weights and compare it with CHECKPOINT/expected.json (relative tolerance
        REL); prints ok:/FAIL: per case
    python3 write_official.py compare --expect expected.json --got got.json [--rel R]
        compare the "nll" of two perplexity JSON files (relative tolerance R)

The official layout is what megalodon/reloading.py reads (docs/model.md §17): config.json with
the ModelConf fields under "model", consolidate_config.json with model_parallel_size and
dtype, and torch.save'd state dicts with the official names (docs/model.md §12). The P-way
model-parallel shards split every tensor exactly inverse to the merge rules of docs/model.md
§17 (contiguous parts along dim 0 or dim 1, or a full copy in every shard).

The weights come from make_golden.init_state_dict (the official initialisation, with every
zero-initialised parameter perturbed so that nothing is trivially zero). The expected
perplexity is computed with the float64 reference (megalodon_ref.py), streaming the whole
token sequence chunk by chunk (3 chunks of C = 8 tokens and a partial one of 5):
nll = sum over i = 1..N-1 of -log softmax(logits[i-1])[tok[i]], ppl = exp(nll / (N-1)).
Run with a python3 that has torch (and numpy); `verify` uses only tests/reference/gguf_io.py
to read model files.
"""
import argparse
import json
import math
import os
import re
import sys
from collections import OrderedDict

sys.dont_write_bytecode = True          # keep the tree free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gguf_io as G  # noqa: E402
from make_golden import (chunk_split, init_state_dict, model_writer, projection_names,  # noqa: E402
                         tensor_map, trunc_normal)
from megalodon_ref import Megalodon, ModelConf  # noqa: E402

# The official ModelConf fields with their defaults (megalodon/config.py); config.json holds
# all of them, as the official code writes it.
OFFICIAL_MODELCONF = OrderedDict([
    ("num_layers", 8), ("model_dim", 1024), ("z_dim", 256), ("value_dim", 2048), ("num_heads", 1),
    ("ffn_hidden_dim", 2048), ("cema_ndim", 16), ("chunk_size", 2048), ("efficient_attn", None),
    ("init_mode", "he"), ("vocab_size", -1), ("output_size", -1), ("norm_num_groups", 32),
    ("norm_affine", True), ("norm_eps", 1e-5), ("rope_base", None), ("dropout", 0.0),
    ("hidden_dropout", 0.0), ("attention_dropout", 0.0), ("swiglu", False), ("rescale_nffn", False),
    ("scale_emb", False), ("share_emb", False), ("layerwise_ckpt", False),
])

# Small model; num_heads 2 so that 2-way model parallelism is legal (the official code
# divides the heads between the ranks).
BASE = dict(num_layers=2, model_dim=16, z_dim=8, value_dim=12, num_heads=2, ffn_hidden_dim=24,
            cema_ndim=3, chunk_size=8, norm_num_groups=4, vocab_size=37, norm_eps=1e-5,
            rope_base=10000.0)
N_TOKENS = 29                     # 3 chunks of 8 + 5

# name: (config overrides, checkpoint dtype, MP sizes, seed, description).
# config overrides whose value is -1 for vocab_size/output_size are written to config.json
# as -1 (old official configs): the converter must take the sizes from the tensors.
VARIANTS = OrderedDict([
    ("base", ({}, "fp32", (1, 2), 201, "fp32, 2 heads")),
    ("heads1", (dict(num_heads=1), "fp32", (1,), 202, "one head (cannot be 2-way sharded)")),
    ("share_emb", (dict(share_emb=True, scale_emb=True), "fp32", (1, 2), 203,
                   "tied embedding/output (both keys stored), scaled embeddings")),
    ("swiglu", (dict(swiglu=True, output_size=41), "fp32", (1, 2), 204,
                "SwiGLU FFN, output_size 41 != vocab_size 37")),
    ("noaffine", (dict(norm_affine=False, rope_base=None, vocab_size_in_config=-1), "fp32", (1, 2), 205,
                  "norm_affine false, rope_base null, vocab_size -1 in config.json")),
    ("rescale", (dict(rescale_nffn=True), "fp32", (1,), 206,
                 "rescale_nffn (cannot be sharded, docs/model.md §17)")),
    ("bf16", ({}, "bf16", (1, 2), 207, "bf16 checkpoint (every float tensor, buffers too)")),
])

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# ----------------------------------------------------------------------------- sharding
# docs/model.md §17, merging the shards: the dimension along which each tensor is split
# (0, 1) or None when every rank holds the whole tensor.
SPLIT_RULES = [
    (r"layers\.\d+\.mega\.(wv|wz|wr|wh1)\.(weight|bias)", 0),
    (r"layers\.\d+\.nffn\.(fc1|fc3)\.weight", 0),
    (r"layers\.\d+\.mega\.cema\.(alpha|delta|theta|gamma|omega)", 0),
    (r"(layers\.\d+\.mega\.timenorm|output\.final_norm)\.(weight|bias|prior_mean|prior_logv)", 0),
    (r"embed\.weight", 1),
    (r"layers\.\d+\.mega\.wh2\.weight", 1),
    (r"layers\.\d+\.nffn\.fc2\.weight", 1),
    (r"output\.output\.weight", 1),
    (r"layers\.\d+\.mega\.(gamma|beta)", 1),
    (r"layers\.\d+\.mega\.rmsnorm\.weight", None),
    (r"layers\.\d+\.nffn\.norm\.(weight|bias)", None),
    (r"rope\.freqs", None),
    (r"(layers\.\d+\.mega\.timenorm|output\.final_norm)\.prior_count", None),
    (r"layers\.\d+\.nffn\.alpha", None),
]


def split_dim(name):
    for pat, dim in SPLIT_RULES:
        if re.fullmatch(pat, name):
            return dim
    raise KeyError("no model-parallel rule for %s" % name)


def shard_state_dict(sd, P, share_emb):
    """Split a full state dict into P per-rank state dicts (inverse of docs/model.md §17)."""
    shards = [OrderedDict() for _ in range(P)]
    for name, t in sd.items():
        if share_emb and name == "output.output.weight":
            continue                         # tied: the same tensor object as embed.weight
        dim = split_dim(name)
        if dim is None:
            for r in range(P):
                shards[r][name] = t.clone()
        else:
            assert t.shape[dim] % P == 0, (name, tuple(t.shape), P)
            for r, part in enumerate(torch.chunk(t, P, dim=dim)):
                shards[r][name] = part.clone().contiguous()     # own storage (torch.save saves views' whole storage)
        if share_emb and name == "embed.weight":
            for r in range(P):
                shards[r]["output.output.weight"] = shards[r][name]
    # self-check: the merge of docs/model.md §17 gives back the full tensors
    for name, t in sd.items():
        dim = split_dim(name)
        merged = shards[0][name] if dim is None else torch.cat([s[name] for s in shards], dim=dim)
        assert merged.dtype == t.dtype and torch.equal(merged, t), name
    return shards


# ----------------------------------------------------------------------------- model
def variant_conf(name, vocab_size=None):
    overrides, dtype, mps, seed, _ = VARIANTS[name]
    ov = dict(overrides)
    vocab_in_config = ov.pop("vocab_size_in_config", None)
    kw = dict(BASE, **ov)
    if vocab_size is not None:
        kw["vocab_size"] = vocab_size
    conf = ModelConf(**kw)
    # the model file stores norm_epsilon as float32: the reference computes with that value
    conf.norm_eps = float(np.float32(conf.norm_eps))
    cfg_model = OrderedDict(OFFICIAL_MODELCONF)
    for k, v in kw.items():
        cfg_model[k] = v
    cfg_model["norm_eps"] = 1e-5 if "norm_eps" not in kw else kw["norm_eps"]
    if vocab_in_config is not None:
        cfg_model["vocab_size"] = vocab_in_config
    return conf, cfg_model, dtype, mps, seed


def build(name, vocab_size=None):
    conf, cfg_model, dtype, mps, seed = variant_conf(name, vocab_size)
    torch.manual_seed(seed)
    sd = init_state_dict(conf, "f32")
    if conf.rope_base is None:
        assert torch.equal(sd["rope.freqs"], torch.tensor(
            [1.0 / 10000.0 ** (2.0 * i / (conf.z_dim // conf.num_heads))
             for i in range(conf.z_dim // conf.num_heads // 2)], dtype=torch.float64).float())
    if conf.share_emb:
        sd["output.output.weight"] = sd["embed.weight"]          # both keys, one tensor
    elif conf.out_size != conf.vocab_size:
        D = conf.model_dim        # output layer of output_size rows (init_state_dict makes vocab_size)
        sd["output.output.weight"] = trunc_normal((conf.out_size, D), 1 / math.sqrt(D),
                                                  -3 / math.sqrt(D), 3 / math.sqrt(D))
    if dtype != "fp32":
        # model.to(dtype): every floating parameter and buffer (rope.freqs too, docs/model.md §16)
        cast = OrderedDict()
        for k, t in sd.items():
            cast[k] = t.to(DTYPES[dtype]) if t.is_floating_point() else t
        if conf.share_emb:
            cast["output.output.weight"] = cast["embed.weight"]
        sd = cast
    g = torch.Generator().manual_seed(seed + 1000)
    tokens = torch.randint(0, conf.vocab_size, (N_TOKENS,), generator=g, dtype=torch.int64)
    return conf, cfg_model, dtype, mps, sd, tokens


def stream_nll(conf, sd, tokens):
    """Sum of -log p(tok[i] | tok[<i]) over i = 1..N-1, float64 reference, chunk-by-chunk
    streaming over the whole sequence."""
    model = Megalodon(conf, {k: v for k, v in sd.items()
                             if not (conf.share_emb and k == "output.output.weight")})
    inter, _, _ = model.forward_split(tokens, chunk_split(tokens.shape[0], conf.chunk_size))
    logp = torch.log_softmax(inter["logits"], dim=-1)
    n = tokens.shape[0]
    nll = -logp[torch.arange(n - 1), tokens[1:]].sum().item()
    return {"tokens": n - 1, "nll": nll, "ppl": math.exp(nll / (n - 1))}


def write_checkpoint(variant, P, out, vocab_size=None, additional_vocab_size=0):
    conf, cfg_model, dtype, mps, sd, tokens = build(variant, vocab_size)
    if P not in mps:
        sys.exit("write_official: variant %s cannot be written with model_parallel_size %d" % (variant, P))
    os.makedirs(out, exist_ok=True)
    cfg = OrderedDict([("model", cfg_model),
                       ("tokenizer", OrderedDict([("path", "tokenizer.model"),
                                                  ("additional_vocab_size", additional_vocab_size),
                                                  ("data_tokenized", False)])),
                       ("model_parallel_size", P), ("chunk_parallel_size", 1)])
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out, "consolidate_config.json"), "w") as f:
        json.dump({"model_parallel_size": P, "dtype": dtype}, f, indent=2)
    if P == 1:
        torch.save(sd, os.path.join(out, "consolidated.pth"))
    else:
        for r, shard in enumerate(shard_state_dict(sd, P, conf.share_emb)):
            torch.save(shard, os.path.join(out, "consolidated.%02d.pth" % r))
    with open(os.path.join(out, "tokens.txt"), "w") as f:
        f.write(" ".join(str(int(t)) for t in tokens) + "\n")
    exp = stream_nll(conf, sd, tokens)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f)
        f.write("\n")
    print("wrote %s: variant %s, MP %d, %s, %d tensors, nll %.10g over %d tokens, ppl %.6g"
          % (out, variant, P, dtype, len(sd), exp["nll"], exp["tokens"], exp["ppl"]))


def cmd_write(a):
    write_checkpoint(a.variant, a.mp, a.out, a.vocab_size, a.additional_vocab_size)


def cmd_write_all(a):
    for variant, (_, _, mps, _, _) in VARIANTS.items():
        for P in mps:
            write_checkpoint(variant, P, os.path.join(a.out, "%s.mp%d" % (variant, P)))


# ----------------------------------------------------------------------------- verify
def gguf_conf(f):
    v = f.value
    kw = dict(num_layers=v("megalodon.block_count"), model_dim=v("megalodon.embedding_length"),
              z_dim=v("megalodon.z_dim"), value_dim=v("megalodon.value_dim"),
              num_heads=v("megalodon.head_count"), ffn_hidden_dim=v("megalodon.feed_forward_length"),
              cema_ndim=v("megalodon.cema_ndim"), chunk_size=v("megalodon.chunk_size"),
              norm_num_groups=v("megalodon.norm_groups"), norm_eps=v("megalodon.norm_epsilon"),
              vocab_size=v("megalodon.vocab_size"), output_size=v("megalodon.output_size"),
              rope_base=v("megalodon.rope_freq_base"))
    for k in ("swiglu", "scale_emb", "share_emb", "rescale_nffn", "norm_affine"):
        kw[k] = v("megalodon." + k)
    return ModelConf(**kw)


def expected_storage(t, gtype):
    """The numpy array (storage dtype) a tensor must have in the file for type gtype."""
    if gtype == G.GGML_F32:
        return t.float().numpy()
    if gtype == G.GGML_F16:
        return t.float().half().numpy()
    if gtype == G.GGML_BF16:
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16)
        return G.f32_to_bf16_bits(t.float().numpy())
    raise ValueError(gtype)


def verify(checkpoint, path, outtype, rel_tol):
    """Returns (list of errors, summary line)."""
    with open(os.path.join(checkpoint, "config.json")) as fcfg:
        cfg_model = json.load(fcfg)["model"]
    with open(os.path.join(checkpoint, "consolidate_config.json")) as fcc:
        ck_dtype = json.load(fcc)["dtype"]
    sd = torch.load(os.path.join(checkpoint, "consolidated.pth"), map_location="cpu")
    with open(os.path.join(checkpoint, "tokens.txt")) as ft:
        tokens = torch.tensor([int(x) for x in ft.read().split()])
    with open(os.path.join(checkpoint, "expected.json")) as fe:
        expect = json.load(fe)
    f = G.read_gguf(path)
    errors = []

    # keys
    if f.value("general.architecture") != "megalodon":
        errors.append("general.architecture is %r" % f.value("general.architecture"))
    conf = gguf_conf(f)
    for k, key in (("num_layers", "block_count"), ("model_dim", "embedding_length"), ("z_dim", "z_dim"),
                   ("value_dim", "value_dim"), ("num_heads", "head_count"),
                   ("ffn_hidden_dim", "feed_forward_length"), ("cema_ndim", "cema_ndim"),
                   ("chunk_size", "chunk_size"), ("norm_num_groups", "norm_groups")):
        if f.kv["megalodon." + key][0] != G.T_UINT32 or f.value("megalodon." + key) != cfg_model[k]:
            errors.append("megalodon.%s = %r (type %d), config %s = %r" % (
                key, f.value("megalodon." + key), f.kv["megalodon." + key][0], k, cfg_model[k]))
    for k in ("swiglu", "scale_emb", "share_emb", "rescale_nffn", "norm_affine"):
        if f.kv["megalodon." + k][0] != G.T_BOOL or f.value("megalodon." + k) != cfg_model[k]:
            errors.append("megalodon.%s = %r, config %r" % (k, f.value("megalodon." + k), cfg_model[k]))
    V = sd["embed.weight"].shape[0]
    Vo = V if cfg_model["share_emb"] else sd["output.output.weight"].shape[0]
    for key, want in (("megalodon.vocab_size", V), ("megalodon.output_size", Vo)):
        if f.kv[key][0] != G.T_UINT32 or f.value(key) != want:
            errors.append("%s = %r, expected %d" % (key, f.value(key), want))
    for key, want in (("megalodon.norm_epsilon", float(np.float32(cfg_model["norm_eps"]))),
                      ("megalodon.rope_freq_base", 10000.0 if cfg_model["rope_base"] is None
                       else float(cfg_model["rope_base"]))):
        if f.kv[key][0] != G.T_FLOAT32 or f.value(key) != want:
            errors.append("%s = %r, expected %r" % (key, f.value(key), want))
    allowed = {"general.architecture", "general.name", "general.alignment"}
    allowed |= {"megalodon." + k for k in (
        "block_count embedding_length z_dim value_dim head_count feed_forward_length cema_ndim "
        "chunk_size norm_groups norm_epsilon rope_freq_base vocab_size output_size swiglu scale_emb "
        "share_emb rescale_nffn norm_affine").split()}
    extra = [k for k in f.kv if k not in allowed and not k.startswith("tokenizer.ggml.")]
    if extra:
        errors.append("unexpected keys %s" % extra)

    # tensors: names (in the order of docs/model-format.md), ne, types, values
    tmap = tensor_map(conf)
    if list(f.tensors) != [g for g, _ in tmap]:
        errors.append("tensor names/order differ: got %s, expected %s" % (list(f.tensors), [g for g, _ in tmap]))
    half = set(projection_names(conf))
    want_proj = {"auto": {"fp32": G.GGML_F32, "fp16": G.GGML_F16, "bf16": G.GGML_BF16}[ck_dtype],
                 "f32": G.GGML_F32, "f16": G.GGML_F16, "bf16": G.GGML_BF16}[outtype]
    n_checked = 0
    for gname, oname in tmap:
        if gname not in f.tensors:
            errors.append("tensor %s missing" % gname)
            continue
        t = f.tensors[gname]
        src = sd[oname]
        if oname.endswith("prior_count"):
            if t.type != G.GGML_I32 or t.ne != [1] or int(t.data[0]) != int(src):
                errors.append("%s: type %s ne %s value %s, expected I32 [1] %d" % (
                    gname, G.GGML_NAME.get(t.type), t.ne, t.data, int(src)))
            continue
        want_type = want_proj if oname in half else G.GGML_F32
        want_ne = list(reversed(src.shape))
        if t.type != want_type or t.ne != want_ne:
            errors.append("%s: type %s ne %s, expected %s %s" % (gname, G.GGML_NAME.get(t.type), t.ne,
                                                                 G.GGML_NAME[want_type], want_ne))
            continue
        exp = expected_storage(src, want_type)
        if exp.shape != t.data.shape or exp.tobytes() != t.data.tobytes():
            d = np.abs(G.tensor_as_f32(t).astype(np.float64) - src.double().numpy()).max()
            errors.append("%s: values differ from %s (max abs diff %.3g)" % (gname, oname, d))
        n_checked += 1

    # the whole file, byte for byte, as the reference GGUF writer (make_golden.model_writer)
    # writes the same weights (files without a tokenizer), up to the final padding
    if not errors and not any(k.startswith("tokenizer.") for k in f.kv):
        wtype = {G.GGML_F32: "f32", G.GGML_F16: "f16", G.GGML_BF16: "bf16"}[want_proj]
        sd32 = OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in sd.items())
        w = model_writer("", conf, sd32, wtype)
        if "general.name" in f.kv:
            w.kv["general.name"] = f.kv["general.name"]
        else:
            del w.kv["general.name"]
        ref = w.to_bytes()
        with open(path, "rb") as fb:
            data = fb.read()
        # (the gguf package also pads after the last tensor; gguf_io does not)
        if data[:len(ref)] != ref or len(data) - len(ref) >= 32 or data[len(ref):].strip(b"\0"):
            errors.append("the file differs from the reference writer's (make_golden.model_writer)")

    # perplexity from the file's own weights, with the float64 reference
    msg = ""
    if not errors:
        sd2 = OrderedDict()
        for gname, oname in tmap:
            t = f.tensors[gname]
            if oname.endswith("prior_count"):
                sd2[oname] = torch.tensor(int(t.data[0]), dtype=torch.int64)
            else:
                sd2[oname] = torch.from_numpy(G.tensor_as_f32(t).copy())
        got = stream_nll(conf, sd2, tokens)
        rel = abs(got["nll"] - expect["nll"]) / abs(expect["nll"])
        msg = ("%d tensors as expected, reference nll from the file %.10g vs expected %.10g (rel diff %.3g, "
               "tolerance %g)" % (n_checked, got["nll"], expect["nll"], rel, rel_tol))
        if not rel <= rel_tol:
            errors.append("nll %.10g differs from expected %.10g by %.3g relative (tolerance %g)"
                          % (got["nll"], expect["nll"], rel, rel_tol))
    return errors, msg


def cmd_verify(a):
    """Each case: CHECKPOINT GGUF OUTTYPE REL. Prints ok:/FAIL: lines; exit 1 on a failure."""
    failed = False
    for ckpt, path, outtype, rel in a.case:
        label = "%s (%s)" % (os.path.basename(path), outtype)
        try:
            errors, msg = verify(ckpt, path, outtype, float(rel))
        except Exception as e:          # noqa: BLE001 - a broken file is a failure, not a crash
            errors, msg = ["%s: %s" % (type(e).__name__, e)], ""
        if errors:
            failed = True
            print("FAIL: verify %s: %s" % (label, "; ".join(errors[:10])))
        else:
            print("ok: verify %s: %s" % (label, msg))
    sys.exit(1 if failed else 0)


def cmd_compare(a):
    with open(a.expect) as f:
        e = json.load(f)
    with open(a.got) as f:
        g = json.load(f)
    rel = abs(g["nll"] - e["nll"]) / abs(e["nll"])
    ok = rel <= a.rel and int(g.get("tokens", e["tokens"])) == int(e["tokens"])
    print("nll %.10g vs expected %.10g: rel diff %.3g (tolerance %g), tokens %s vs %s: %s"
          % (g["nll"], e["nll"], rel, a.rel, g.get("tokens"), e["tokens"], "ok" if ok else "MISMATCH"))
    sys.exit(0 if ok else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("variants")
    w = sub.add_parser("write")
    w.add_argument("--variant", required=True, choices=list(VARIANTS))
    w.add_argument("--mp", type=int, default=1)
    w.add_argument("--out", required=True)
    w.add_argument("--vocab-size", type=int, default=None)
    w.add_argument("--additional-vocab-size", type=int, default=0,
                   help="config.json tokenizer.additional_vocab_size (rows beyond the tokenizer's)")
    wa = sub.add_parser("write-all")
    wa.add_argument("--out", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--case", nargs=4, action="append", required=True,
                   metavar=("CHECKPOINT", "GGUF", "OUTTYPE", "REL"),
                   help="the unsharded (MP 1) checkpoint directory, the converted file, the "
                        "--outtype used (auto|f32|f16|bf16), the relative nll tolerance")
    c = sub.add_parser("compare")
    c.add_argument("--expect", required=True)
    c.add_argument("--got", required=True)
    c.add_argument("--rel", type=float, default=1e-4)
    a = p.parse_args()
    if a.cmd == "variants":
        for name, (_, dtype, mps, _, desc) in VARIANTS.items():
            print("%s %s %s" % (name, ",".join(str(m) for m in mps), desc))
    elif a.cmd == "write":
        cmd_write(a)
    elif a.cmd == "write-all":
        cmd_write_all(a)
    elif a.cmd == "verify":
        cmd_verify(a)
    else:
        cmd_compare(a)


if __name__ == "__main__":
    main()
