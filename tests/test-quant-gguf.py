"""test-quant-gguf: our weight types against the gguf Python package (gguf.quants).

Reads the file that `test-quant --write FILE` makes: an fp32 matrix "src" and, per type, our
quantized bytes "q.TYPE" and our dequantization "dq.TYPE". Checks, with gguf.GGUFReader:
  * the tensor types and shapes are read as written;
  * gguf.quants.quantize(src) gives our bytes, for the types the package can quantize
    (F16, BF16, Q8_0, Q4_0);
  * gguf.quants.dequantize(our bytes) gives our floats bit for bit, for all six types.
Prints one line per check and exits 1 on any failure."""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

TYPES = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_K": T.Q4_K,
         "q6_K": T.Q6_K}
QUANTIZABLE = ("f16", "bf16", "q8_0", "q4_0")


def main(path):
    r = gguf.GGUFReader(path)
    t = {x.name: x for x in r.tensors}
    src = np.asarray(t["src"].data, dtype=np.float32)
    rows, cols = src.shape
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("ok: " if ok else "FAIL: ") + what)
        fails += 0 if ok else 1

    for name, qt in TYPES.items():
        q = t["q." + name]
        check(q.tensor_type == qt and list(q.shape) == [cols, rows],
              f"{name}: type {q.tensor_type.name}, ne {list(q.shape)}")
        ours = np.asarray(q.data).view(np.uint8).reshape(rows, -1)
        if name in QUANTIZABLE:
            theirs = np.asarray(quants.quantize(src, qt)).view(np.uint8).reshape(rows, -1)
            diff = np.argwhere(theirs != ours)
            check(diff.size == 0, f"{name}: gguf.quants.quantize gives our bytes"
                  + (f" (first difference at row, byte {diff[0].tolist()})" if diff.size else ""))
        deq = np.asarray(quants.dequantize(ours, qt), dtype=np.float32).reshape(rows, cols)
        dq = np.asarray(t["dq." + name].data, dtype=np.float32).reshape(rows, cols)
        diff = np.argwhere(deq.view(np.uint32) != dq.view(np.uint32))
        check(diff.size == 0, f"{name}: gguf.quants.dequantize gives our floats bit for bit"
              + (f" (first difference at {diff[0].tolist()}: {deq[tuple(diff[0])]!r} vs"
                 f" {dq[tuple(diff[0])]!r})" if diff.size else ""))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
