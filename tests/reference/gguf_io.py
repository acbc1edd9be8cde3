"""Minimal GGUF v3 writer and reader (pure Python + numpy, no `gguf` package).

Layout (little-endian), as summarized in lib/gguf.h:
    u32 magic "GGUF", u32 version 3, u64 n_tensors, u64 n_kv
    n_kv      x { string key, u32 value_type, value }
    n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
    zero padding to `general.alignment` (default 32), then the data section; every tensor's
    offset is relative to the data section and a multiple of the alignment.
    string = u64 byte length + UTF-8 bytes (no NUL).
ne[0] is the fastest-varying dimension: a numpy array of shape (a, b) is stored with
ne = [b, a] and its C-contiguous bytes.
"""
import struct
from collections import OrderedDict

import numpy as np

GGUF_MAGIC = 0x46554747  # b"GGUF" read as a little-endian u32
GGUF_VERSION = 3
GGUF_DEFAULT_ALIGNMENT = 32

# metadata value types (enum gguf_type)
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, \
    T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(13)
_SCALAR_FMT = {T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I",
               T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<B", T_UINT64: "<Q", T_INT64: "<q",
               T_FLOAT64: "<d"}

# tensor element types (enum ggml_type, only the ones libmegalodon supports)
GGML_F32, GGML_F16, GGML_I8, GGML_I16, GGML_I32, GGML_I64, GGML_F64, GGML_BF16 = \
    0, 1, 24, 25, 26, 27, 28, 30
# numpy storage dtype of each tensor type (BF16 is kept as its raw uint16 bit pattern)
GGML_NP = {GGML_F32: np.dtype("<f4"), GGML_F16: np.dtype("<f2"), GGML_I8: np.dtype("i1"),
           GGML_I16: np.dtype("<i2"), GGML_I32: np.dtype("<i4"), GGML_I64: np.dtype("<i8"),
           GGML_F64: np.dtype("<f8"), GGML_BF16: np.dtype("<u2")}
GGML_NAME = {GGML_F32: "F32", GGML_F16: "F16", GGML_I8: "I8", GGML_I16: "I16",
             GGML_I32: "I32", GGML_I64: "I64", GGML_F64: "F64", GGML_BF16: "BF16"}


def f32_to_bf16_bits(a):
    """float32 -> bf16 bit pattern (uint16), round to nearest even (inputs are finite)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    """bf16 bit pattern (uint16) -> float32 (exact)."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def tensor_as_f32(t):
    """A reader tensor (see GGUFFile) as float32 numpy (F32/F16/BF16 exact widening)."""
    if t.type == GGML_BF16:
        return bf16_bits_to_f32(t.data)
    return t.data.astype(np.float32)


# ------------------------------------------------------------------------------- writer
def _pack_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_value(vtype, value):
    if vtype == T_STRING:
        return _pack_str(value)
    if vtype == T_ARRAY:
        etype, items = value
        out = struct.pack("<IQ", etype, len(items))
        return out + b"".join(_pack_value(etype, it) for it in items)
    if vtype == T_BOOL:
        return struct.pack("<B", 1 if value else 0)
    return struct.pack(_SCALAR_FMT[vtype], value)


class GGUFWriter:
    """Collect keys and tensors, then write() them as one GGUF v3 file."""

    def __init__(self, alignment=GGUF_DEFAULT_ALIGNMENT, write_alignment_key=False):
        self.alignment = alignment
        self.kv = OrderedDict()        # key -> (value_type, value)
        self.tensors = OrderedDict()   # name -> (ggml_type, numpy array in storage dtype)
        if write_alignment_key:
            self.add_kv("general.alignment", T_UINT32, alignment)

    def add_kv(self, key, vtype, value):
        self.kv[key] = (vtype, value)

    def add_u32(self, key, v): self.add_kv(key, T_UINT32, int(v))
    def add_u64(self, key, v): self.add_kv(key, T_UINT64, int(v))
    def add_i32(self, key, v): self.add_kv(key, T_INT32, int(v))
    def add_f32(self, key, v): self.add_kv(key, T_FLOAT32, float(v))
    def add_bool(self, key, v): self.add_kv(key, T_BOOL, bool(v))
    def add_str(self, key, v): self.add_kv(key, T_STRING, str(v))

    def add_tensor(self, name, array, ggml_type):
        """array: numpy array in PyTorch shape order; converted to the storage dtype of
        ggml_type (F16 by numpy's round-to-nearest-even, BF16 by f32_to_bf16_bits)."""
        assert name not in self.tensors, name
        a = np.asarray(array)
        if ggml_type == GGML_BF16 and a.dtype != np.uint16:
            a = f32_to_bf16_bits(a.astype(np.float32))
        else:
            a = a.astype(GGML_NP[ggml_type])
        assert 1 <= a.ndim <= 4, (name, a.shape)
        self.tensors[name] = (ggml_type, np.ascontiguousarray(a))

    def to_bytes(self):
        head = struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(self.tensors), len(self.kv))
        for key, (vtype, value) in self.kv.items():
            head += _pack_str(key) + struct.pack("<I", vtype) + _pack_value(vtype, value)
        data = b""
        for name, (gtype, a) in self.tensors.items():
            ne = list(reversed(a.shape))          # ne[0] fastest
            pad = (-len(data)) % self.alignment   # each offset aligned
            data += b"\0" * pad
            head += _pack_str(name) + struct.pack("<I", len(ne))
            head += struct.pack("<%dQ" % len(ne), *ne) + struct.pack("<IQ", gtype, len(data))
            data += a.tobytes()
        head += b"\0" * ((-len(head)) % self.alignment)
        return head + data

    def write(self, path):
        with open(path, "wb") as f:
            f.write(self.to_bytes())


# ------------------------------------------------------------------------------- reader
class GGUFTensor:
    def __init__(self, name, type, ne, data):
        self.name, self.type, self.ne, self.data = name, type, ne, data  # data: shape ne[::-1]


class GGUFFile:
    """Parsed GGUF file: .version, .alignment, .kv {key: (type, value)}, .tensors {name: GGUFTensor}."""

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0
        magic, self.version, n_tensors, n_kv = self._unpack("<IIQQ")
        if magic != GGUF_MAGIC:
            raise ValueError("bad magic")
        if self.version != GGUF_VERSION:
            raise ValueError("unsupported version %d" % self.version)
        self.kv = OrderedDict()
        for _ in range(n_kv):
            key = self._str()
            (vtype,) = self._unpack("<I")
            self.kv[key] = (vtype, self._value(vtype))
        self.alignment = GGUF_DEFAULT_ALIGNMENT
        if "general.alignment" in self.kv:
            self.alignment = self.kv["general.alignment"][1]
        infos = []
        for _ in range(n_tensors):
            name = self._str()
            (n_dims,) = self._unpack("<I")
            if not 1 <= n_dims <= 4:
                raise ValueError("tensor %s: bad n_dims %d" % (name, n_dims))
            ne = list(self._unpack("<%dQ" % n_dims))
            gtype, offset = self._unpack("<IQ")
            if gtype not in GGML_NP:
                raise ValueError("tensor %s: unsupported type %d" % (name, gtype))
            if offset % self.alignment:
                raise ValueError("tensor %s: misaligned offset" % name)
            infos.append((name, ne, gtype, offset))
        data_start = self.pos + (-self.pos) % self.alignment
        self.tensors = OrderedDict()
        for name, ne, gtype, offset in infos:
            if name in self.tensors:
                raise ValueError("duplicate tensor %s" % name)
            dt = GGML_NP[gtype]
            n = int(np.prod(ne))
            start = data_start + offset
            if start + n * dt.itemsize > len(buf):
                raise ValueError("tensor %s: data past end of file" % name)
            arr = np.frombuffer(buf, dtype=dt, count=n, offset=start).reshape(ne[::-1])
            self.tensors[name] = GGUFTensor(name, gtype, ne, arr)

    def _unpack(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError("truncated file")
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return vals

    def _str(self):
        (n,) = self._unpack("<Q")
        if self.pos + n > len(self.buf):
            raise ValueError("truncated string")
        s = self.buf[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def _value(self, vtype):
        if vtype == T_STRING:
            return self._str()
        if vtype == T_ARRAY:
            etype, n = self._unpack("<IQ")
            return (etype, [self._value(etype) for _ in range(n)])
        if vtype not in _SCALAR_FMT:
            raise ValueError("bad value type %d" % vtype)
        (v,) = self._unpack(_SCALAR_FMT[vtype])
        return bool(v) if vtype == T_BOOL else v

    def value(self, key):
        return self.kv[key][1]


def read_gguf(path):
    with open(path, "rb") as f:
        return GGUFFile(f.read())
