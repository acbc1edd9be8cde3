"""Generate the quantized golden cases of tests/golden/ (q8_0, q4_0, q4_k_m).

Run from the top of the tree, after building (the quantizing is megalodon-quantize's):

    /usr/bin/python3 tests/reference/make_quant_golden.py BUILDDIR      (or: make golden-quant)

For every case: build a random float32 model as make_golden.py does (same initialization,
deterministic seed), write it, quantize it with BUILDDIR/bin/megalodon-quantize to the
case's recipe (that file is the golden model NAME.gguf), dequantize that back to f32 with
megalodon-quantize's f32 recipe, and run the float64 reference (megalodon_ref.py) on the
dequantized weights: the expected outputs are those of the model the quantized file holds.
The dequantized values are checked against the gguf Python package's dequantizer when it
is importable (tests/test-quant-gguf.sh checks the two agree bit for bit in general), and
every self-consistency check of make_golden.py runs on the dequantized model.

The rows of every matrix are a whole number of the recipe's blocks (32 for q8_0 and q4_0,
256 for q4_K and q6_K), except attn_h2 in the q4_k_m case (rows of E = 64), which takes the
fallback q4_0, so that case holds q4_K, q6_K and q4_0 matrices.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.dont_write_bytecode = True          # keep the tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_io as G  # noqa: E402
import make_golden as MG  # noqa: E402
from megalodon_ref import Megalodon, ModelConf  # noqa: E402

# (name, config overrides of make_golden.BASE, number of tokens L, recipe, seed)
QCASES = [
    ("q8_0", dict(model_dim=32, z_dim=8, value_dim=32, ffn_hidden_dim=64, swiglu=True), 21,
     "q8_0", 111),
    ("q4_0", dict(model_dim=32, z_dim=8, value_dim=32, ffn_hidden_dim=64), 21, "q4_0", 112),
    ("q4_k_m", dict(num_layers=1, model_dim=256, z_dim=16, value_dim=64, ffn_hidden_dim=256),
     21, "q4_k_m", 113),
]


def quantize(tool, src, dst, recipe):
    subprocess.run([tool, "-q", "-t", "1", src, dst, recipe], check=True,
                   stdout=subprocess.DEVNULL)


def check_against_gguf(qpath, deq_path):
    """The f32 copy holds gguf.quants.dequantize's values of every tensor (when gguf exists)."""
    try:
        import gguf
        from gguf import quants
    except ImportError:
        return "gguf package not found: not cross-checked"
    q, d = gguf.GGUFReader(qpath), gguf.GGUFReader(deq_path)
    types = {}
    for s, t in zip(q.tensors, d.tensors):
        assert s.name == t.name
        types[s.tensor_type.name] = types.get(s.tensor_type.name, 0) + 1
        if s.tensor_type.name in ("I32", "I64"):
            continue
        y = quants.dequantize(np.asarray(s.data), s.tensor_type).astype(np.float32).reshape(-1)
        assert np.asarray(t.data).reshape(-1).tobytes() == y.tobytes(), s.name
    return "dequantized = gguf.quants.dequantize; types " + ", ".join(
        "%s %d" % kv for kv in sorted(types.items()))


def run_case(build, tmp, name, overrides, L, recipe, seed):
    tool = os.path.join(build, "bin", "megalodon-quantize")
    conf = ModelConf(**dict(MG.BASE, **overrides))
    conf.norm_eps = float(np.float32(conf.norm_eps))
    torch.manual_seed(seed)
    sd = MG.init_state_dict(conf, "f32")
    tokens = torch.randint(0, conf.vocab_size, (L,), dtype=torch.int64)

    src = os.path.join(tmp, name + ".f32.gguf")
    deq = os.path.join(tmp, name + ".deq.gguf")
    model_path = os.path.join(MG.OUT_DIR, name + ".gguf")
    expect_path = os.path.join(MG.OUT_DIR, name + ".expect.gguf")
    mw = MG.model_writer(name, conf, sd, "f32")
    mw.write(src)
    MG.verify_roundtrip(src, mw)
    quantize(tool, src, model_path, recipe)
    quantize(tool, model_path, deq, "f32")
    note = check_against_gguf(model_path, deq)

    sdq = MG.state_dict_from_model_file(deq, conf)
    expect, cache, stats = MG.self_consistency(conf, sdq, tokens, seed)
    ew = MG.expect_writer(name, conf, tokens, expect, cache)
    ew.write(expect_path)
    MG.verify_roundtrip(expect_path, ew)

    # how far quantizing moved the logits (the golden tolerance must stay well below this)
    orig, _, _ = Megalodon(conf, sd).forward_split(tokens, MG.chunk_split(L, conf.chunk_size))
    moved = (orig["logits"] - expect["logits"]).abs().max().item()
    print("%-7s L=%2d n_kv=%d  full/stream %.1e  stream splits %.1e  |logits|max %.2f  "
          "quantizing moved the logits by %.3g  files %d+%d B\n        %s"
          % (name, L, cache.n, stats["full"], stats["stream"],
             expect["logits"].abs().max().item(), moved, os.path.getsize(model_path),
             os.path.getsize(expect_path), note))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_quant_golden.py BUILDDIR (where bin/megalodon-quantize is built)")
    os.makedirs(MG.OUT_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case in QCASES:
            run_case(sys.argv[1], tmp, *case)
    print("all checks passed")


if __name__ == "__main__":
    main()
