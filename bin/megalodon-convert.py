#!/usr/bin/env python3
"""megalodon-convert - convert an official Megalodon PyTorch checkpoint to a libmegalodon
model file (GGUF v3, docs/model-format.md).

    megalodon-convert CHECKPOINT -o OUT.gguf [--outtype auto|f32|f16|bf16|q8_0]
                      [--tokenizer tokenizer.model] [--name NAME] [--config config.json]
    megalodon-convert --vocab-only --tokenizer tokenizer.model -o OUT.gguf [--name NAME]
                      [--vocab-size N]

CHECKPOINT is either
  * a consolidated checkpoint directory of the official code (XuezheMax/megalodon,
    megalodon/reloading.py): config.json (its "model" section holds the ModelConf fields),
    consolidate_config.json ("model_parallel_size", "dtype") and consolidated.pth, or
    consolidated.00.pth ... consolidated.{P-1}.pth for a P-way model-parallel checkpoint,
    which are merged as the official layer definitions split them (docs/megalodon-convert.md);
  * or one complete (unsharded) state-dict file (.pth/.pt); its configuration is read from
    --config, or else from config.json in the same directory.

--vocab-only writes only the tokenizer keys of a SentencePiece model (general.architecture
megalodon-vocab, no tensors): the vocabulary file of megalodon-train --vocab.

Everything is explained in docs/megalodon-convert.md. Needs PyTorch and the `gguf` package
(PyPI); --tokenizer also needs `sentencepiece`. Exit status: 0 on success, 1 on any error
(the message, on stderr, names the file, key or tensor at fault).
"""
import argparse
import json
import os
import re
import struct
import sys
import tempfile

sys.dont_write_bytecode = True

PROG = "megalodon-convert"
VERBOSE = True


class ConvertError(Exception):
    """A problem with the input or the output; the message is shown to the user."""


def warn(msg):
    print("%s: warning: %s" % (PROG, msg), file=sys.stderr)


def note(msg):
    if VERBOSE:
        print("%s: %s" % (PROG, msg), file=sys.stderr)


def fmt_shape(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def first_few(names, n=8):
    names = list(names)
    s = ", ".join(names[:n])
    return s + (" ... (%d in all)" % len(names) if len(names) > n else "")


# ----------------------------------------------------------------------------- configuration
# The official ModelConf (megalodon/config.py) with its defaults.
MODELCONF_DEFAULTS = {
    "num_layers": 8, "model_dim": 1024, "z_dim": 256, "value_dim": 2048, "num_heads": 1,
    "ffn_hidden_dim": 2048, "cema_ndim": 16, "chunk_size": 2048, "efficient_attn": None,
    "init_mode": "he", "vocab_size": -1, "output_size": -1, "norm_num_groups": 32,
    "norm_affine": True, "norm_eps": 1e-5, "rope_base": None, "dropout": 0.0,
    "hidden_dropout": 0.0, "attention_dropout": 0.0, "swiglu": False, "rescale_nffn": False,
    "scale_emb": False, "share_emb": False, "layerwise_ckpt": False,
}
# The shape of the model is never guessed: these must be in the config.
REQUIRED_KEYS = ("num_layers", "model_dim", "z_dim", "value_dim", "num_heads", "ffn_hidden_dim",
                 "cema_ndim", "chunk_size", "norm_num_groups")
BOOL_KEYS = ("norm_affine", "swiglu", "rescale_nffn", "scale_emb", "share_emb", "layerwise_ckpt")
# Set by the official reloading code after building ModelConf; harmless if present.
IGNORED_KEYS = ("custom_bwd", "loss_parallel")


def read_json(path, what):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConvertError("%s: not found (%s)" % (path, what))
    except json.JSONDecodeError as e:
        raise ConvertError("%s: not valid JSON: %s" % (path, e))
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))


class Conf:
    """The model configuration, validated. Attributes are the ModelConf field names."""

    def __init__(self, cfg, path):
        self.path = path
        if not isinstance(cfg, dict):
            raise ConvertError("%s: expected a JSON object" % path)
        if "model" in cfg:
            model = cfg["model"]
            where = "model"
        elif "model_dim" in cfg:            # a bare ModelConf dump is accepted too
            model, where = cfg, ""
        else:
            raise ConvertError("%s: no \"model\" section (the official config.json has the "
                               "ModelConf fields under \"model\")" % path)
        if not isinstance(model, dict):
            raise ConvertError("%s: \"model\" must be a JSON object" % path)
        self.where = where
        missing = [k for k in REQUIRED_KEYS if k not in model]
        if missing:
            raise ConvertError("%s: missing config key%s %s" % (
                path, "s" if len(missing) > 1 else "",
                ", ".join(self._key(k) for k in missing)))
        if where:
            unknown = [k for k in model if k not in MODELCONF_DEFAULTS and k not in IGNORED_KEYS]
            if unknown:
                warn("%s: unknown ModelConf key(s) ignored: %s" % (path, ", ".join(unknown)))
        self.defaulted = [k for k in MODELCONF_DEFAULTS if k not in model]
        for k, dflt in MODELCONF_DEFAULTS.items():
            setattr(self, k, model.get(k, dflt))
        for k in REQUIRED_KEYS:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConvertError("%s: %s must be a positive integer, got %r" % (path, self._key(k), v))
        for k in ("vocab_size", "output_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v == 0 or v < -1:
                raise ConvertError("%s: %s must be a positive integer or -1, got %r" % (path, self._key(k), v))
        for k in BOOL_KEYS:
            v = getattr(self, k)
            if not isinstance(v, bool):
                raise ConvertError("%s: %s must be true or false, got %r" % (path, self._key(k), v))
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float)) \
                or not self.norm_eps > 0:
            raise ConvertError("%s: %s must be a positive number, got %r" % (path, self._key("norm_eps"), self.norm_eps))
        if self.rope_base is not None and (isinstance(self.rope_base, bool) or
                                           not isinstance(self.rope_base, (int, float)) or
                                           not self.rope_base > 0):
            raise ConvertError("%s: %s must be null or a positive number, got %r" % (path, self._key("rope_base"), self.rope_base))
        D, Z, E, H, G = self.model_dim, self.z_dim, self.value_dim, self.num_heads, self.norm_num_groups
        if Z % H or E % H:
            raise ConvertError("%s: z_dim (%d) and value_dim (%d) must be divisible by num_heads (%d)" % (path, Z, E, H))
        if (Z // H) % 2:
            raise ConvertError("%s: z_dim/num_heads (%d) must be even (RoPE pairs)" % (path, Z // H))
        if D % G:
            raise ConvertError("%s: model_dim (%d) must be divisible by norm_num_groups (%d)" % (path, D, G))
        if G == D:
            raise ConvertError("%s: norm_num_groups == model_dim is not usable by the official "
                               "code (TimestepNorm needs prior_count > 1)" % path)
        # Derived values; vocab_size/output_size -1 are resolved from the tensors later.
        self.dz = Z // H
        self.rope_base_value = 10000.0 if self.rope_base is None else float(self.rope_base)

    def _key(self, k):
        return "%s.%s" % (self.where, k) if self.where else k

    @property
    def V(self):
        return self.vocab_size

    @property
    def Vout(self):
        return self.vocab_size if self.output_size == -1 else self.output_size


# ----------------------------------------------------------------------------- tensor table
# kind: "proj" = 2-D projection or embedding (stored in --outtype); "f32" = always F32;
#       "count" = integer prior_count (I32).
class Entry:
    def __init__(self, oname, gname, shape, sym, split, kind, required=True, buffer=False):
        self.oname, self.gname, self.shape, self.sym = oname, gname, tuple(shape), sym
        self.split, self.kind, self.required, self.buffer = split, kind, required, buffer


def tensor_table(c):
    """Every tensor of the model in the order of docs/model-format.md: official name, GGUF
    name, full PyTorch shape (and the same in config symbols), the model-parallel split
    dimension (0, 1 or None = replicated; docs/model.md §17) and the storage kind."""
    D, Z, E, F, N, G = c.model_dim, c.z_dim, c.value_dim, c.ffn_hidden_dim, c.cema_ndim, c.norm_num_groups
    V, Vo = c.V, c.Vout
    T = []
    T.append(Entry("embed.weight", "token_embd.weight", (V, D), "(vocab_size, model_dim)", 1, "proj"))
    T.append(Entry("rope.freqs", "rope.freqs", (c.dz // 2,), "(z_dim/num_heads/2,)", None, "f32", buffer=True))

    def tnorm(opre, gpre):
        return [Entry(opre + ".weight", gpre + ".weight", (D,), "(model_dim,)", 0, "f32"),
                Entry(opre + ".bias", gpre + ".bias", (D,), "(model_dim,)", 0, "f32"),
                Entry(opre + ".prior_count", gpre + ".prior_count", (), "()", None, "count", buffer=True),
                Entry(opre + ".prior_mean", gpre + ".prior_mean", (G,), "(norm_num_groups,)", 0, "f32", buffer=True),
                Entry(opre + ".prior_logv", gpre + ".prior_logv", (G,), "(norm_num_groups,)", 0, "f32", buffer=True)]

    for i in range(c.num_layers):
        m, f, b = "layers.%d.mega." % i, "layers.%d.nffn." % i, "blk.%d." % i
        T += tnorm(m + "timenorm", b + "tnorm")
        T += [Entry(m + "cema.alpha", b + "cema.alpha", (D, N, 1), "(model_dim, cema_ndim, 1)", 0, "f32"),
              Entry(m + "cema.delta", b + "cema.delta", (D, N, 1), "(model_dim, cema_ndim, 1)", 0, "f32"),
              Entry(m + "cema.theta", b + "cema.theta", (D, 1, 1), "(model_dim, 1, 1)", 0, "f32"),
              Entry(m + "cema.gamma", b + "cema.gamma", (D, N, 2), "(model_dim, cema_ndim, 2)", 0, "f32"),
              Entry(m + "cema.omega", b + "cema.omega", (D, 1), "(model_dim, 1)", 0, "f32")]
        if c.norm_affine:
            T.append(Entry(m + "rmsnorm.weight", b + "attn_norm.weight", (D,), "(model_dim,)", None, "f32"))
        for o, g, rows, rsym in (("wz", "attn_z", Z, "z_dim"), ("wv", "attn_v", E, "value_dim"),
                                 ("wr", "attn_r", E, "value_dim"), ("wh1", "attn_h1", D, "model_dim")):
            T.append(Entry(m + o + ".weight", b + g + ".weight", (rows, D), "(%s, model_dim)" % rsym, 0, "proj"))
            T.append(Entry(m + o + ".bias", b + g + ".bias", (rows,), "(%s,)" % rsym, 0, "f32"))
        T += [Entry(m + "wh2.weight", b + "attn_h2.weight", (D, E), "(model_dim, value_dim)", 1, "proj"),
              Entry(m + "gamma", b + "attn_qk.gamma", (2, Z), "(2, z_dim)", 1, "f32"),
              Entry(m + "beta", b + "attn_qk.beta", (2, Z), "(2, z_dim)", 1, "f32")]
        if c.norm_affine:
            T += [Entry(f + "norm.weight", b + "ffn_norm.weight", (D,), "(model_dim,)", None, "f32"),
                  Entry(f + "norm.bias", b + "ffn_norm.bias", (D,), "(model_dim,)", None, "f32")]
        T.append(Entry(f + "fc1.weight", b + "ffn_up.weight", (F, D), "(ffn_hidden_dim, model_dim)", 0, "proj"))
        if c.swiglu:
            T.append(Entry(f + "fc3.weight", b + "ffn_gate.weight", (F, D), "(ffn_hidden_dim, model_dim)", 0, "proj"))
        T.append(Entry(f + "fc2.weight", b + "ffn_down.weight", (D, F), "(model_dim, ffn_hidden_dim)", 1, "proj"))
        if c.rescale_nffn:
            T.append(Entry(f + "alpha", b + "ffn_alpha", (D,), "(model_dim,)", None, "f32"))
    T += tnorm("output.final_norm", "output_norm")
    # With share_emb the state dict still holds output.output.weight (the same tensor).
    T.append(Entry("output.output.weight", "output.weight", (Vo, D), "(output_size, model_dim)", 1,
                   "proj", required=not c.share_emb))
    return T


# ----------------------------------------------------------------------------- reading
def import_torch():
    try:
        import torch
    except ImportError:
        raise ConvertError("PyTorch is needed to read checkpoints (Debian: apt-get install "
                           "python3-torch; run this script with that python3)")
    return torch


def load_state_dict(path, trust_pickle):
    torch = import_torch()
    if not os.path.exists(path):
        raise ConvertError("%s: not found" % path)
    try:
        import inspect
        params = inspect.signature(torch.load).parameters
        kw = {"map_location": "cpu"}
        if "weights_only" in params:            # torch >= 1.13
            kw["weights_only"] = not trust_pickle
        obj = None
        if "mmap" in params:                    # torch >= 2.1: tensors stay in the page cache
            try:
                obj = torch.load(path, mmap=True, **kw)
            except Exception:                   # noqa: BLE001 - e.g. the legacy format: load normally
                obj = None
        if obj is None:
            obj = torch.load(path, **kw)
    except Exception as e:                      # noqa: BLE001 - any unpickling failure
        why = " ".join(str(e).split()) or type(e).__name__
        m = re.search(r"WeightsUnpickler error: (.*)", why)
        if m:                                   # torch's long weights_only explanation
            why = m.group(1)
        hint = "" if trust_pickle or not m else (" (if the file holds more than tensors and you "
                                                 "trust it, try --trust-pickle)")
        raise ConvertError("%s: cannot read as a PyTorch state dict: %s%s" % (path, why, hint))
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in ("model", "state_dict"):
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict):
        raise ConvertError("%s: expected a state dict (a dict of tensors), got %s" % (path, type(obj).__name__))
    sd = {}
    dropped = []
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            sd[str(k)] = v
        else:
            dropped.append(str(k))
    if dropped:
        warn("%s: non-tensor entries ignored: %s" % (path, first_few(dropped)))
    if not sd:
        raise ConvertError("%s: the state dict holds no tensors" % path)
    return sd


SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")


class Checkpoint:
    """Configuration, per-rank state dicts and where they came from."""

    def _read_config(self, cfg_path, what):
        cfg = read_json(cfg_path, what)
        self.conf = Conf(cfg, cfg_path)
        self.cfg_path = cfg_path
        tc = cfg.get("tokenizer") if isinstance(cfg, dict) else None
        self.tokenizer_cfg = tc if isinstance(tc, dict) else {}

    def __init__(self, args):
        src = args.checkpoint
        self.mp = 1
        self.dtype_decl = None              # consolidate_config.json "dtype"
        if os.path.isdir(src):
            cfg_path = args.config or os.path.join(src, "config.json")
            self._read_config(cfg_path, "the model configuration")
            cc_path = os.path.join(src, "consolidate_config.json")
            if not os.path.exists(cc_path):
                fsdp = [n for n in os.listdir(src) if n.startswith("model.ckpt.")]
                raise ConvertError(
                    "%s: not found: %s is not a consolidated checkpoint%s" % (
                        cc_path, src, " (raw FSDP checkpoints model.ckpt.NNNNN.pth are not "
                        "supported: consolidate them first with the official tools)" if fsdp else ""))
            cc = read_json(cc_path, "the consolidated checkpoint's settings")
            if not isinstance(cc, dict):
                raise ConvertError("%s: expected a JSON object" % cc_path)
            for k in ("model_parallel_size", "dtype"):
                if k not in cc:
                    raise ConvertError("%s: missing config key %s" % (cc_path, k))
            mp = cc["model_parallel_size"]
            if isinstance(mp, bool) or not isinstance(mp, int) or mp < 1:
                raise ConvertError("%s: bad model_parallel_size %r (a positive integer is needed)" % (cc_path, mp))
            self.mp = mp
            self.dtype_decl = cc["dtype"]
            if self.dtype_decl not in ("fp32", "fp16", "bf16"):
                warn("%s: unknown dtype %r (the official values are fp32, fp16, bf16)" % (cc_path, self.dtype_decl))
            if mp == 1:
                self.files = [os.path.join(src, "consolidated.pth")]
            else:
                self.files = [os.path.join(src, "consolidated.%02d.pth" % r) for r in range(mp)]
            missing = [p for p in self.files if not os.path.exists(p)]
            if missing:
                raise ConvertError("%s: missing %s%s for model_parallel_size %d (from %s): %s" % (
                    src, "shard" if mp > 1 else "file", "s" if len(missing) > 1 else "", mp, cc_path,
                    ", ".join(os.path.basename(p) for p in missing)))
            extra = sorted(n for n in os.listdir(src) if SHARD_RE.match(n)
                           and int(SHARD_RE.match(n).group(1)) >= mp)
            if extra or (mp > 1 and os.path.exists(os.path.join(src, "consolidated.pth"))):
                warn("%s: files not used with model_parallel_size %d: %s" % (
                    src, mp, ", ".join(extra + (["consolidated.pth"] if mp > 1 and os.path.exists(
                        os.path.join(src, "consolidated.pth")) else []))))
        elif os.path.exists(src):
            cfg_path = args.config or os.path.join(os.path.dirname(os.path.abspath(src)), "config.json")
            self._read_config(cfg_path, "the model configuration; give it with --config")
            m = SHARD_RE.match(os.path.basename(src))
            if m:
                cc_path = os.path.join(os.path.dirname(os.path.abspath(src)), "consolidate_config.json")
                if os.path.exists(cc_path):
                    cc = read_json(cc_path, "the consolidated checkpoint's settings")
                    if isinstance(cc, dict) and cc.get("model_parallel_size", 1) != 1:
                        raise ConvertError("%s is one shard of a %s-way model-parallel checkpoint: give "
                                           "the directory %s instead" % (src, cc.get("model_parallel_size"),
                                                                         os.path.dirname(os.path.abspath(src))))
            self.files = [src]
        else:
            raise ConvertError("%s: not found" % src)
        if self.conf.defaulted:
            opts = [k for k in self.conf.defaulted if k in ("norm_affine", "norm_eps", "rope_base", "swiglu",
                                                            "rescale_nffn", "scale_emb", "share_emb")]
            if opts:
                note("%s: not given, official defaults used: %s" % (cfg_path, ", ".join(
                    "%s=%s" % (k, json.dumps(MODELCONF_DEFAULTS[k])) for k in opts)))
        self.shards = []
        for p in self.files:
            note("reading %s" % p)
            self.shards.append(load_state_dict(p, args.trust_pickle))


# ----------------------------------------------------------------------------- merging
def resolve_vocab(conf, sd0, mp):
    """vocab_size/output_size -1 (as in old official configs) come from the tensors."""
    if conf.vocab_size == -1:
        t = sd0.get("embed.weight", sd0.get("output.output.weight") if conf.share_emb else None)
        if t is None or t.dim() != 2:
            raise ConvertError("%s: vocab_size is -1 (or absent) and embed.weight is missing or not "
                               "2-D, so the vocabulary size is unknown" % conf.path)
        conf.vocab_size = int(t.shape[0])
        note("vocab_size taken from embed.weight: %d" % conf.vocab_size)
    if conf.output_size == -1 and not conf.share_emb:
        t = sd0.get("output.output.weight")
        if t is not None and t.dim() == 2 and int(t.shape[0]) != conf.vocab_size:
            raise ConvertError("tensor output.output.weight: shape %s, expected %s = (vocab_size, model_dim) "
                               "(output_size is -1; set output_size in %s if the output layer differs)"
                               % (fmt_shape(t.shape), fmt_shape((conf.vocab_size, conf.model_dim // mp)
                                                                if mp > 1 else (conf.vocab_size, conf.model_dim)), conf.path))
    if conf.share_emb and conf.Vout != conf.V:
        raise ConvertError("%s: share_emb needs output_size == vocab_size (got %d and %d)" % (conf.path, conf.Vout, conf.V))


def check_mp(conf, mp, path):
    if mp == 1:
        return
    c = conf
    for name, v in (("model_dim", c.model_dim), ("z_dim", c.z_dim), ("value_dim", c.value_dim),
                    ("num_heads", c.num_heads), ("ffn_hidden_dim", c.ffn_hidden_dim),
                    ("norm_num_groups", c.norm_num_groups)):
        if v % mp:
            raise ConvertError("bad model_parallel_size %d (%s): %s = %d is not divisible by it"
                               % (mp, path, name, v))
    if c.rescale_nffn:
        raise ConvertError("bad model_parallel_size %d (%s): rescale_nffn models cannot be model-parallel "
                           "(nffn.alpha (model_dim,) multiplies a model_dim/P tensor in the official code)"
                           % (mp, path))


def merge(ck):
    """Validate the per-rank state dicts against the configuration and merge them
    (docs/model.md §17). Returns {official name: full tensor}; pops consumed tensors."""
    torch = import_torch()
    conf, mp, shards, files = ck.conf, ck.mp, ck.shards, ck.files
    check_mp(conf, mp, ck.cfg_path if mp == 1 else os.path.join(os.path.dirname(files[0]), "consolidate_config.json"))
    resolve_vocab(conf, shards[0], mp)
    table = tensor_table(conf)
    known = {e.oname for e in table}

    # the same keys in every shard
    if mp > 1:
        k0 = set(shards[0])
        for r in range(1, mp):
            kr = set(shards[r])
            if kr != k0:
                only0, onlyr = sorted(k0 - kr), sorted(kr - k0)
                msg = "inconsistent shards: "
                if only0:
                    msg += "%s lacks %s (present in %s)" % (os.path.basename(files[r]), first_few(only0),
                                                            os.path.basename(files[0]))
                if onlyr:
                    msg += "%s%s has %s (absent from %s)" % ("; " if only0 else "", os.path.basename(files[r]),
                                                             first_few(onlyr), os.path.basename(files[0]))
                raise ConvertError(msg)
    unknown = [k for k in shards[0] if k not in known]
    if unknown:
        warn("tensors not used by this configuration, ignored: %s" % first_few(unknown))

    missing = [e.oname for e in table if e.required and not e.buffer and e.oname not in shards[0]]
    if conf.share_emb and "embed.weight" not in shards[0] and "output.output.weight" in shards[0]:
        missing.remove("embed.weight")
    if missing:
        raise ConvertError("missing tensor%s in %s: %s" % ("s" if len(missing) > 1 else "",
                                                           ", ".join(os.path.basename(f) for f in files),
                                                           first_few(missing, 12)))

    out = {}
    for e in table:
        if e.oname not in shards[0]:
            if e.buffer:
                out[e.oname] = default_buffer(e, conf, torch)
                warn("buffer %s missing: using its official initial value" % e.oname)
            continue
        parts = [sd.pop(e.oname) for sd in shards]
        t0 = parts[0]
        if e.kind == "count":
            for r, t in enumerate(parts):
                if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                    raise ConvertError("tensor %s in %s: dtype %s, expected an integer tensor"
                                       % (e.oname, os.path.basename(files[r]), str(t.dtype).replace("torch.", "")))
                if t.numel() != 1 or t.dim() > 1:
                    raise ConvertError("tensor %s in %s: shape %s, expected () (a scalar)"
                                       % (e.oname, os.path.basename(files[r]), fmt_shape(t.shape)))
            v = int(t0.reshape(-1)[0])
            if v < 0:
                raise ConvertError("tensor %s: prior_count %d is negative" % (e.oname, v))
            if any(int(t.reshape(-1)[0]) != v for t in parts[1:]):
                warn("replicated tensor %s differs between shards: rank 0's value used" % e.oname)
            out[e.oname] = torch.tensor(v, dtype=torch.int64)
            continue
        for r, t in enumerate(parts):
            if not t.dtype.is_floating_point:
                raise ConvertError("tensor %s in %s: dtype %s, expected a floating-point tensor"
                                   % (e.oname, os.path.basename(files[r]), str(t.dtype).replace("torch.", "")))
            if t.dtype != t0.dtype:
                raise ConvertError("inconsistent shards: tensor %s is %s in %s but %s in %s" % (
                    e.oname, str(t0.dtype).replace("torch.", ""), os.path.basename(files[0]),
                    str(t.dtype).replace("torch.", ""), os.path.basename(files[r])))
        if mp == 1:
            if tuple(t0.shape) != e.shape:
                raise ConvertError("tensor %s: shape %s, expected %s = %s from %s" % (
                    e.oname, fmt_shape(t0.shape), fmt_shape(e.shape), e.sym, ck.cfg_path))
            out[e.oname] = t0
            continue
        if e.split is None:
            for r, t in enumerate(parts):
                if tuple(t.shape) != e.shape:
                    raise ConvertError("tensor %s in %s: shape %s, expected %s = %s (replicated in every shard)"
                                       % (e.oname, os.path.basename(files[r]), fmt_shape(t.shape),
                                          fmt_shape(e.shape), e.sym))
            for r, t in enumerate(parts[1:], 1):
                if not torch.equal(t, t0):
                    d = (t.double() - t0.double()).abs().max().item()
                    warn("replicated tensor %s differs between %s and %s (max abs diff %.3g): rank 0's value used"
                         % (e.oname, os.path.basename(files[0]), os.path.basename(files[r]), d))
            out[e.oname] = t0
            continue
        per = list(e.shape)
        per[e.split] //= mp
        for r, t in enumerate(parts):
            if tuple(t.shape) != tuple(per):
                raise ConvertError(
                    "inconsistent shards: tensor %s in %s: shape %s, expected %s (the full %s = %s split "
                    "along dim %d into %d parts)" % (e.oname, os.path.basename(files[r]), fmt_shape(t.shape),
                                                     fmt_shape(per), e.sym, fmt_shape(e.shape), e.split, mp))
        out[e.oname] = Pending(parts, e.split)      # concatenated when written (memory)
        del parts

    # the tied output weight
    if conf.share_emb:
        emb, outw = out.get("embed.weight"), out.pop("output.output.weight", None)
        if emb is None:
            out["embed.weight"] = outw
        elif outw is not None and not pending_equal(emb, outw, torch):
            d = max((a.double() - b.double()).abs().max().item()
                    for a, b in zip(pending_parts(emb), pending_parts(outw)))
            warn("share_emb: embed.weight and output.output.weight differ (max abs diff %.3g); the official "
                 "loader ends with output.output.weight in the tied parameter, so that one is used" % d)
            out["embed.weight"] = outw
    return table, out


class Pending:
    """A tensor split across model-parallel shards: the parts and the concat dimension."""

    def __init__(self, parts, dim):
        self.parts, self.dim = parts, dim
        self.dtype = parts[0].dtype

    def get(self):
        import torch
        t = torch.cat(self.parts, dim=self.dim)
        self.parts = None
        return t


def pending_parts(t):
    return t.parts if isinstance(t, Pending) else [t]


def pending_equal(a, b, torch):
    pa, pb = pending_parts(a), pending_parts(b)
    return len(pa) == len(pb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(pa, pb))


def default_buffer(e, conf, torch):
    if e.kind == "count":
        return torch.tensor(0, dtype=torch.int64)
    if e.oname == "rope.freqs":
        dz = conf.dz
        return torch.tensor([1.0 / conf.rope_base_value ** (2.0 * i / dz) for i in range(dz // 2)],
                            dtype=torch.float64).float()
    return torch.zeros(e.shape, dtype=torch.float32)      # prior_mean, prior_logv


# ----------------------------------------------------------------------------- tokenizer
def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Protocol-buffer wire format: yield (field number, wire type, value)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        fn, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        if pos > len(buf):
            raise ValueError("truncated field")
        yield fn, wt, v


def parse_sentencepiece_model(data):
    """Minimal reader of sentencepiece_model.proto's ModelProto: pieces (piece, score, type),
    trainer_spec.model_type and normalizer_spec.add_dummy_prefix."""
    pieces, model_type, add_dummy_prefix = [], 1, True
    for fn, wt, v in _fields(data):
        if fn == 1 and wt == 2:                                # SentencePiece
            piece, score, ptype = "", 0.0, 1
            for f2, w2, v2 in _fields(v):
                if f2 == 1 and w2 == 2:
                    piece = bytes(v2).decode("utf-8")
                elif f2 == 2 and w2 == 5:
                    score = struct.unpack("<f", v2)[0]
                elif f2 == 3 and w2 == 0:
                    ptype = v2
            pieces.append((piece, score, ptype))
        elif fn == 2 and wt == 2:                              # TrainerSpec
            for f2, w2, v2 in _fields(v):
                if f2 == 3 and w2 == 0:
                    model_type = v2
        elif fn == 3 and wt == 2:                              # NormalizerSpec
            for f2, w2, v2 in _fields(v):
                if f2 == 3 and w2 == 0:
                    add_dummy_prefix = bool(v2)
    return pieces, model_type, add_dummy_prefix


TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def load_sentencepiece(path):
    """The SentencePiece model at path: (its SentencePieceProcessor, the file's bytes)."""
    try:
        import sentencepiece
    except ImportError:
        raise ConvertError("--tokenizer needs the sentencepiece module (Debian: apt-get install "
                           "python3-sentencepiece)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(data)
    except Exception as e:                  # noqa: BLE001
        raise ConvertError("%s: not a SentencePiece model: %s" % (path, e))
    return sp, data


def read_tokenizer(path, n_vocab, additional_cfg):
    """The tokenizer.ggml.* values for a SentencePiece model and a model vocabulary of
    n_vocab rows (>= the tokenizer's pieces; the extra rows are the official
    additional_vocab_size placeholders)."""
    sp, data = load_sentencepiece(path)
    try:
        pieces, model_type, add_prefix = parse_sentencepiece_model(data)
    except Exception as e:                  # noqa: BLE001
        raise ConvertError("%s: not a SentencePiece model: %s" % (path, e))
    n_sp = sp.get_piece_size()
    if len(pieces) != n_sp or any(sp.id_to_piece(i) != pieces[i][0] for i in range(n_sp)):
        raise ConvertError("%s: could not read the pieces of the SentencePiece model consistently" % path)
    if n_vocab < n_sp:
        raise ConvertError("%s: the tokenizer has %d pieces but the model's vocab_size is %d"
                           % (path, n_sp, n_vocab))
    if model_type != 2:
        warn("%s: SentencePiece model type %d is not BPE (2); stored as \"llama\" anyway"
             % (path, model_type))
    extra = n_vocab - n_sp
    add_cfg = additional_cfg.get("additional_vocab_size") if additional_cfg else None
    if isinstance(add_cfg, int) and add_cfg != extra:
        warn("the config's tokenizer.additional_vocab_size is %d but vocab_size - tokenizer pieces = %d"
             % (add_cfg, extra))
    if extra % 256:
        warn("vocab_size - tokenizer pieces = %d is not a multiple of 256 (the official "
             "additional_vocab_size is)" % extra)
    tokens = [p[0] for p in pieces]
    scores = [float(p[1]) for p in pieces]
    types = [int(p[2]) for p in pieces]
    for i, t in enumerate(types):
        if t not in (1, 2, 3, 4, 5, 6):
            raise ConvertError("%s: piece %d has unknown type %d" % (path, i, t))
    ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id()}
    # Official Tokenizer (megalodon/data/tokenizer.py): with additional_vocab_size > 0, a
    # special token the SentencePiece model lacks takes the next extra id, in the order
    # bos, eos, pad (the order its constructor asks for them).
    present = set(tokens)
    slot = 0
    special = {}
    if extra:
        for key, piece in (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>")):
            if ids[key] == -1:
                ids[key] = n_sp + slot
                special[n_sp + slot] = piece if piece not in present else "<unused_%d>" % slot
                slot += 1
    for j in range(extra):
        tid = n_sp + j
        if tid in special:
            tokens.append(special[tid])
            types.append(TOKEN_CONTROL)
        else:
            tokens.append("<unused_%d>" % j)
            types.append(TOKEN_UNUSED)
        scores.append(0.0)
    return {"tokens": tokens, "scores": scores, "types": types, "ids": ids,
            "add_space_prefix": add_prefix, "n_sp": n_sp}


# ----------------------------------------------------------------------------- writing
OUTTYPES = ("auto", "f32", "f16", "bf16", "q8_0")
Q8_0_BLOCK = 32  # values per q8_0 block: a row length must be a multiple (else f16)


def to_numpy(t, gtype, name, torch, np):
    """t (torch, any float dtype) -> numpy array in the storage dtype of gtype."""
    if gtype == "f32":
        return t.to(torch.float32).contiguous().numpy()
    if gtype == "f16":
        f = t.to(torch.float32)
        h = f.to(torch.float16)
        if bool((torch.isinf(h) & torch.isfinite(f)).any()):
            raise ConvertError("tensor %s: values beyond the float16 range (max |x| = %.6g): use "
                               "--outtype bf16 or f32" % (name, f.abs().max().item()))
        return h.contiguous().numpy()
    if gtype == "bf16":
        b = t if t.dtype == torch.bfloat16 else t.to(torch.float32).to(torch.bfloat16)
        return b.contiguous().view(torch.int16).numpy().view(np.uint16)
    if gtype == "q8_0":
        # per block of 32 along a row: d = max|x| / 127 (stored fp16), q = round(x / d); the
        # gguf package's quantizer gives ggml's (and megalodon-quantize's) bytes
        from gguf import quants, GGMLQuantizationType
        f = t.to(torch.float32).contiguous().numpy()
        if not np.isfinite(f).all():
            raise ConvertError("tensor %s: NaN or infinite values cannot be stored as q8_0: use "
                               "--outtype f32" % name)
        return quants.quantize(f, GGMLQuantizationType.Q8_0)
    raise AssertionError(gtype)


def check_output_path(out):
    d = os.path.dirname(os.path.abspath(out)) or "."
    if os.path.isdir(out):
        raise ConvertError("%s: is a directory" % out)
    if not os.path.isdir(d):
        raise ConvertError("%s: cannot write: directory %s does not exist" % (out, d))
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(out) + ".", suffix=".tmp")
    except OSError as e:
        raise ConvertError("%s: cannot write: %s" % (out, e.strerror or e))
    os.close(fd)
    return tmp


def write_gguf(out, tmp, conf, table, tensors, outtype, name, tok, rope_bf16):
    import numpy as np
    torch = import_torch()
    try:
        import gguf
    except ImportError:
        raise ConvertError("the gguf Python package is needed (pip install gguf)")
    from gguf import GGMLQuantizationType as QT

    w = gguf.GGUFWriter(tmp, "megalodon")
    if name:
        w.add_string("general.name", name)
    c = conf
    w.add_uint32("megalodon.block_count", c.num_layers)
    w.add_uint32("megalodon.embedding_length", c.model_dim)
    w.add_uint32("megalodon.z_dim", c.z_dim)
    w.add_uint32("megalodon.value_dim", c.value_dim)
    w.add_uint32("megalodon.head_count", c.num_heads)
    w.add_uint32("megalodon.feed_forward_length", c.ffn_hidden_dim)
    w.add_uint32("megalodon.cema_ndim", c.cema_ndim)
    w.add_uint32("megalodon.chunk_size", c.chunk_size)
    w.add_uint32("megalodon.norm_groups", c.norm_num_groups)
    w.add_float32("megalodon.norm_epsilon", float(c.norm_eps))
    w.add_float32("megalodon.rope_freq_base", c.rope_base_value)
    w.add_uint32("megalodon.vocab_size", c.V)
    w.add_uint32("megalodon.output_size", c.Vout)
    w.add_bool("megalodon.swiglu", c.swiglu)
    w.add_bool("megalodon.scale_emb", c.scale_emb)
    w.add_bool("megalodon.share_emb", c.share_emb)
    w.add_bool("megalodon.rescale_nffn", c.rescale_nffn)
    w.add_bool("megalodon.norm_affine", c.norm_affine)
    if tok is not None:
        add_tokenizer_keys(w, tok)

    # plan: (gguf name, official name, storage type, numpy shape)
    plan = []
    for e in table:
        if e.oname not in tensors:
            continue                                   # output.output.weight with share_emb
        t = tensors[e.oname]
        if e.kind == "count":
            v = int(t)
            plan.append((e.gname, e.oname, "i32" if v < 2 ** 31 else "i64", (1,)))
        elif e.kind == "proj":
            gt = outtype
            if gt == "auto":
                gt = {torch.float16: "f16", torch.bfloat16: "bf16"}.get(t.dtype, "f32")
            if gt == "q8_0" and e.shape[-1] % Q8_0_BLOCK != 0:
                warn("%s: row length %d is not a multiple of 32: stored as f16 instead of q8_0"
                     % (e.gname, e.shape[-1]))
                gt = "f16"
            plan.append((e.gname, e.oname, gt, tuple(e.shape)))
        else:
            plan.append((e.gname, e.oname, "f32", tuple(e.shape)))
    NP = {"f32": (np.float32, None, 4), "f16": (np.float16, None, 2), "bf16": (np.uint16, QT.BF16, 2),
          "i32": (np.int32, None, 4), "i64": (np.int64, None, 8)}
    for gname, _, gt, shape in plan:
        if gt == "q8_0":  # the writer takes a quantized tensor's shape in bytes per row
            bshape = (*shape[:-1], shape[-1] // Q8_0_BLOCK * 34)
            w.add_tensor_info(gname, bshape, np.dtype(np.uint8), int(np.prod(bshape, dtype=np.int64)),
                              raw_dtype=QT.Q8_0)
            continue
        dt, raw, size = NP[gt]
        w.add_tensor_info(gname, shape, np.dtype(dt), int(np.prod(shape, dtype=np.int64)) * size, raw_dtype=raw)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    nonfinite = []
    for gname, oname, gt, shape in plan:
        t = tensors.pop(oname)
        if isinstance(t, Pending):
            t = t.get()
        if gt in ("i32", "i64"):
            a = np.array([int(t)], dtype=np.int32 if gt == "i32" else np.int64)
        else:
            if oname == "rope.freqs" and rope_bf16:
                t = t.to(torch.bfloat16)
            if not bool(torch.isfinite(t).all()):
                nonfinite.append(oname)
            a = to_numpy(t, gt, oname, torch, np)
        want = (*shape[:-1], shape[-1] // Q8_0_BLOCK * 34) if gt == "q8_0" else shape
        assert tuple(a.shape) == want, (gname, a.shape, want)
        w.write_tensor_data(a)
        del t, a
    if nonfinite:
        warn("tensors with NaN or infinite values: %s" % first_few(nonfinite))
    w.flush()
    for f in w.fout:
        os.fsync(f.fileno())
    w.close()
    return plan


def add_tokenizer_keys(w, tok):
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_array("tokenizer.ggml.tokens", tok["tokens"])
    w.add_array("tokenizer.ggml.scores", tok["scores"])
    w.add_array("tokenizer.ggml.token_type", tok["types"])
    for key, gkey in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        if tok["ids"][key] >= 0:
            w.add_uint32("tokenizer.ggml." + gkey, tok["ids"][key])
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_bool("tokenizer.ggml.add_space_prefix", tok["add_space_prefix"])


# general.architecture of a tokenizer-only file (--vocab-only)
VOCAB_ARCH = "megalodon-vocab"


def write_vocab_gguf(tmp, name, tok):
    """A tokenizer-only GGUF: general.architecture, general.name and the tokenizer keys; no
    tensors. Read back before it replaces OUT."""
    try:
        import gguf
    except ImportError:
        raise ConvertError("the gguf Python package is needed (pip install gguf)")
    w = gguf.GGUFWriter(tmp, VOCAB_ARCH)
    w.add_string("general.name", name)
    add_tokenizer_keys(w, tok)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.flush()
    for f in w.fout:
        os.fsync(f.fileno())
    w.close()
    r = gguf.GGUFReader(tmp, "r")
    got_arch = r.fields["general.architecture"].contents() if "general.architecture" in r.fields else None
    ntok = len(r.fields["tokenizer.ggml.tokens"].contents()) if "tokenizer.ggml.tokens" in r.fields else -1
    if r.tensors or got_arch != VOCAB_ARCH or ntok != len(tok["tokens"]):
        raise ConvertError("internal error: the written vocabulary file reads back as %d tensors, "
                           "architecture %r, %d tokens" % (len(r.tensors), got_arch, ntok))


def verify_header(path, plan, gguf_mod):
    """Re-read what was written (header only) and check names, GGUF ne and types."""
    r = gguf_mod.GGUFReader(path, "r")
    types = {"f32": 0, "f16": 1, "q8_0": 8, "bf16": 30, "i32": 26, "i64": 27}
    got = [(t.name, [int(x) for x in t.shape], int(t.tensor_type)) for t in r.tensors]
    want = [(g, list(reversed(shape)), types[gt]) for g, _, gt, shape in plan]
    if got != want:
        for a, b in zip(got, want):
            if a != b:
                raise ConvertError("internal error: written tensor %s has ne %s type %d, expected ne %s type %d"
                                   % (a[0], a[1], a[2], b[1], b[2]))
        raise ConvertError("internal error: the written file has %d tensors, expected %d" % (len(got), len(want)))


def finish(tmp, out):
    mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)
    try:
        os.replace(tmp, out)
    except OSError as e:
        raise ConvertError("%s: cannot write: %s" % (out, e.strerror or e))
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(out)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_tmp(tmp):
    """Remove the temporary file of a write that did not finish (None: it was renamed into place)."""
    if tmp is not None and os.path.exists(tmp):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


# ----------------------------------------------------------------------------- main
class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print("%s: error: %s" % (PROG, message), file=sys.stderr)
        sys.exit(1)


def parse_args(argv):
    p = Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
               usage="%(prog)s CHECKPOINT -o OUT.gguf [options]\n"
                     "       %(prog)s --vocab-only --tokenizer tokenizer.model -o OUT.gguf "
                     "[--name NAME] [--vocab-size N]",
               description="Convert an official Megalodon PyTorch checkpoint (XuezheMax/megalodon) to a "
                           "libmegalodon model file (GGUF), or (--vocab-only) a SentencePiece model "
                           "to a tokenizer-only GGUF.",
               epilog="CHECKPOINT is a consolidated checkpoint directory (config.json, "
                      "consolidate_config.json,\nconsolidated.pth or consolidated.NN.pth shards, which are "
                      "merged) or a single state-dict\nfile (.pth/.pt) whose config.json is --config or "
                      "lies beside it.\n\n--outtype sets the storage type of the 2-D projection matrices "
                      "and the embedding/output\nmatrix; every other tensor (norms, CEMA parameters, q/k "
                      "gamma and beta, biases, rope.freqs,\npriors) is F32. auto (the default) keeps the "
                      "checkpoint's precision (fp32 -> f32,\nfp16 -> f16, bf16 -> bf16), so nothing is "
                      "rounded. q8_0 quantizes them (8.5 bits per\nweight; a matrix whose rows are not a "
                      "multiple of 32 long is stored as f16);\nmegalodon-quantize makes the 4-bit types "
                      "(docs/quantization.md).\n\nSee docs/megalodon-convert.md. Exit status 0 on success, 1 on error.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?",
                   help="checkpoint directory or state-dict file (not with --vocab-only)")
    p.add_argument("-o", "--output", metavar="OUT.gguf", required=True, help="model file to write (atomically)")
    p.add_argument("--outtype", choices=OUTTYPES, default="auto",
                   help="storage type of the projection and embedding matrices: auto, f32, f16, bf16 "
                        "or q8_0 (default: auto)")
    p.add_argument("--tokenizer", metavar="tokenizer.model", help="SentencePiece model to embed")
    p.add_argument("--name", help="general.name (default: the checkpoint's directory or file name)")
    p.add_argument("--config", metavar="config.json",
                   help="model configuration (default: config.json in the checkpoint directory, or "
                        "beside the state-dict file)")
    p.add_argument("--rope-freqs-bf16", action="store_true",
                   help="round rope.freqs to bfloat16 values (stored as F32), as the official bf16 "
                        "inference path does (docs/model.md §16)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle checkpoint files without torch.load(weights_only=True) (only for "
                        "files you trust)")
    p.add_argument("--vocab-only", action="store_true",
                   help="write only the tokenizer of --tokenizer (general.architecture "
                        "%s, no tensors), e.g. for megalodon-train --vocab" % VOCAB_ARCH)
    p.add_argument("--vocab-size", metavar="N", type=int,
                   help="with --vocab-only: vocabulary rows, at least the tokenizer's pieces "
                        "(default: the pieces; extra rows as the official additional_vocab_size)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    args = p.parse_args(argv)
    if args.vocab_only:
        if args.checkpoint is not None:
            p.error("--vocab-only takes no CHECKPOINT (the vocabulary comes from --tokenizer)")
        if not args.tokenizer:
            p.error("--vocab-only needs --tokenizer tokenizer.model")
        for flag, given in (("--outtype", args.outtype != "auto"), ("--config", args.config),
                            ("--rope-freqs-bf16", args.rope_freqs_bf16),
                            ("--trust-pickle", args.trust_pickle)):
            if given:
                p.error("%s does not apply to --vocab-only" % flag)
        if args.vocab_size is not None and args.vocab_size <= 0:
            p.error("--vocab-size must be a positive integer")
    else:
        if args.checkpoint is None:
            p.error("the following arguments are required: CHECKPOINT")
        if args.vocab_size is not None:
            p.error("--vocab-size is only for --vocab-only (a model's comes from its config)")
    return args


def main_vocab_only(args):
    """--vocab-only: the tokenizer keys of a SentencePiece model in a GGUF without tensors."""
    tmp = check_output_path(args.output)
    try:
        n_sp = read_tokenizer_size(args.tokenizer)
        if args.vocab_size is not None and args.vocab_size < n_sp:
            raise ConvertError("--vocab-size %d: %s has %d pieces (--vocab-size must be at least that)"
                               % (args.vocab_size, args.tokenizer, n_sp))
        tok = read_tokenizer(args.tokenizer, args.vocab_size or n_sp, None)
        name = args.name
        if name is None:
            name = os.path.splitext(os.path.basename(args.tokenizer))[0]
        write_vocab_gguf(tmp, name, tok)
        finish(tmp, args.output)
        tmp = None
        note("wrote %s: tokenizer only, %d tokens (%d pieces%s), %d bytes" % (
            args.output, len(tok["tokens"]), tok["n_sp"],
            " + %d extra rows" % (len(tok["tokens"]) - tok["n_sp"]) if len(tok["tokens"]) > tok["n_sp"] else "",
            os.path.getsize(args.output)))
        return 0
    finally:
        remove_tmp(tmp)


def read_tokenizer_size(path):
    return load_sentencepiece(path)[0].get_piece_size()


def main(argv=None):
    global VERBOSE
    args = parse_args(sys.argv[1:] if argv is None else argv)
    VERBOSE = not args.quiet
    tmp = None
    try:
        try:
            import gguf
        except ImportError:
            raise ConvertError("the gguf Python package is needed (pip install gguf)")
        if args.vocab_only:
            return main_vocab_only(args)
        out = args.output
        tmp = check_output_path(out)                  # fail early if OUT cannot be written
        ck = Checkpoint(args)
        conf = ck.conf
        decl = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(ck.dtype_decl)
        table, tensors = merge(ck)
        emb = tensors["embed.weight"]
        if decl and str(emb.dtype).replace("torch.", "") != decl:
            warn("consolidate_config.json says dtype %s but embed.weight is %s"
                 % (ck.dtype_decl, str(emb.dtype).replace("torch.", "")))
        tok = None
        if args.tokenizer:
            tok = read_tokenizer(args.tokenizer, conf.V, ck.tokenizer_cfg)
        name = args.name
        if name is None:
            src = os.path.abspath(args.checkpoint)
            name = os.path.basename(src) if os.path.isdir(src) else os.path.splitext(os.path.basename(src))[0]
        note("model: %d layers, D=%d Z=%d E=%d H=%d F=%d N=%d C=%d G=%d V=%d V'=%d%s%s%s%s%s, MP=%d"
             % (conf.num_layers, conf.model_dim, conf.z_dim, conf.value_dim, conf.num_heads,
                conf.ffn_hidden_dim, conf.cema_ndim, conf.chunk_size, conf.norm_num_groups, conf.V,
                conf.Vout, ", swiglu" if conf.swiglu else "", ", share_emb" if conf.share_emb else "",
                ", scale_emb" if conf.scale_emb else "", ", rescale_nffn" if conf.rescale_nffn else "",
                "" if conf.norm_affine else ", no norm affine", ck.mp))
        plan = write_gguf(out, tmp, conf, table, tensors, args.outtype, name, tok, args.rope_freqs_bf16)
        verify_header(tmp, plan, gguf)
        finish(tmp, out)
        tmp = None
        counts = {}
        for _, _, gt, _ in plan:
            counts[gt] = counts.get(gt, 0) + 1
        note("wrote %s: %d tensors (%s)%s, %d bytes" % (
            out, len(plan), ", ".join("%d %s" % (n, k.upper()) for k, n in sorted(counts.items())),
            ", tokenizer with %d tokens" % len(tok["tokens"]) if tok else "", os.path.getsize(out)))
        return 0
    except ConvertError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    except MemoryError:
        print("%s: error: out of memory" % PROG, file=sys.stderr)
        return 1
    except OSError as e:
        print("%s: error: %s%s" % (PROG, (e.filename + ": ") if getattr(e, "filename", None) else "",
                                   e.strerror or e), file=sys.stderr)
        return 1
    finally:
        remove_tmp(tmp)


if __name__ == "__main__":
    sys.exit(main())
