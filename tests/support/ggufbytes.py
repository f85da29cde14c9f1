"""A byte-level GGUF builder for tests: every field is a knob, so any field can be made wrong.

Valid files built here are cross-checked against gguf-py's writer and llama.cpp's parser in the
tests; malformed ones are made by passing wrong values. It deliberately does not share code with
harness.reader.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass, field
from typing import Any

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

FMT = {
    V.UINT8: "B",
    V.INT8: "b",
    V.UINT16: "H",
    V.INT16: "h",
    V.UINT32: "I",
    V.INT32: "i",
    V.FLOAT32: "f",
    V.BOOL: "B",
    V.UINT64: "Q",
    V.INT64: "q",
    V.FLOAT64: "d",
}


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b)) + b


def value(vtype: int, v: Any) -> bytes:
    """Encode a value of a GGUF type (no type tag)."""
    if vtype == V.STRING:
        return gstr(v)
    if vtype == V.ARRAY:
        etype, items = v
        return u32(etype) + u64(len(items)) + b"".join(value(etype, x) for x in items)
    return struct.pack("<" + FMT[V(vtype)], v)


def kv(key: str | bytes, vtype: int, v: Any) -> bytes:
    return gstr(key) + u32(vtype) + value(vtype, v)


def raw_kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def nbytes(shape: tuple[int, ...], ttype: int) -> int:
    block, size = GGML_QUANT_SIZES[T(ttype)]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def pad(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class Tensor:
    name: str | bytes
    shape: tuple[int, ...]
    ttype: int = T.F32
    offset: int | None = None  # None: the correct running offset
    n_dims: int | None = None  # None: len(shape)

    def info(self, offset: int) -> bytes:
        n_dims = len(self.shape) if self.n_dims is None else self.n_dims
        return (
            gstr(self.name)
            + u32(n_dims)
            + b"".join(u64(d) for d in self.shape)
            + struct.pack("<i", self.ttype)
            + u64((offset if self.offset is None else self.offset) % (1 << 64))
        )


@dataclass
class Model:
    kvs: list[bytes] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32
    with_data: bool = True

    def header(self) -> bytes:
        out = [
            self.magic,
            u32(self.version),
            u64(len(self.tensors) if self.n_tensors is None else self.n_tensors),
            u64(len(self.kvs) if self.n_kv is None else self.n_kv),
        ]
        out += self.kvs
        offset = 0
        for t in self.tensors:
            out.append(t.info(offset))
            with contextlib.suppress(KeyError, ValueError):
                offset += pad(nbytes(t.shape, t.ttype), self.alignment)
        return b"".join(out)

    def data_bytes(self) -> int:
        try:
            return sum(pad(nbytes(t.shape, t.ttype), self.alignment) for t in self.tensors)
        except (KeyError, ValueError):
            return 0

    def build(self) -> bytes:
        h = self.header()
        if not self.with_data or not self.tensors or self.data_bytes() > 64 << 20:
            return h
        h += b"\0" * (pad(len(h), self.alignment) - len(h))
        return h + bytes(range(256)) * (self.data_bytes() // 256) + b"\x01" * (self.data_bytes() % 256)


def base_kvs(arch: str = "llama", n_layer: int = 2, extra: list[bytes] | None = None) -> list[bytes]:
    return [
        kv("general.architecture", V.STRING, arch),
        kv("general.name", V.STRING, "tiny test model"),
        kv("general.file_type", V.UINT32, 1),
        kv(f"{arch}.block_count", V.UINT32, n_layer),
        kv(f"{arch}.context_length", V.UINT32, 256),
        kv(f"{arch}.embedding_length", V.UINT32, 64),
        kv(f"{arch}.feed_forward_length", V.UINT32, 128),
        kv(f"{arch}.attention.head_count", V.UINT32, 4),
        kv(f"{arch}.attention.head_count_kv", V.UINT32, 2),
        kv("tokenizer.ggml.tokens", V.ARRAY, (V.STRING, ["<s>", "a", "b", "ab", "é"])),
        kv("tokenizer.ggml.scores", V.ARRAY, (V.FLOAT32, [0.0, -1.0, -2.0, -3.0, -4.0])),
    ] + (extra or [])


def base_tensors(n_layer: int = 2) -> list[Tensor]:
    ts = [Tensor("token_embd.weight", (64, 5), T.F16)]
    for i in range(n_layer):
        ts += [
            Tensor(f"blk.{i}.attn_norm.weight", (64,), T.F32),
            Tensor(f"blk.{i}.attn_q.weight", (64, 64), T.Q8_0),
            Tensor(f"blk.{i}.ffn_up.weight", (64, 128), T.Q4_0),
        ]
    ts += [Tensor("output_norm.weight", (64,), T.F32)]
    return ts


def base_model(**kw: Any) -> Model:
    n_layer = kw.pop("n_layer", 2)
    return Model(kvs=kw.pop("kvs", base_kvs(n_layer=n_layer)), tensors=kw.pop("tensors", base_tensors(n_layer)), **kw)
