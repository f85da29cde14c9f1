"""Malformed GGUF files, one per case: (id, bytes, fragments the error must contain).

``ENGINE_ACCEPTS`` lists the cases llama.cpp's own gguf parser lets through (it checks them later,
or never); every other case must be rejected by llama.cpp too, which test_malformed verifies.
"""

from __future__ import annotations

from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

from tests.support.ggufbytes import Tensor, base_kvs, base_model, base_tensors, gstr, kv, raw_kv, u32, u64


def _kvs_with(*extra: bytes, drop: str | None = None) -> list[bytes]:
    kvs = [k for k in base_kvs() if drop is None or not k.startswith(gstr(drop))]
    return kvs + list(extra)


def _model(**kw) -> bytes:
    return base_model(**kw).build()


def _tensors_with(i: int, t: Tensor) -> list[Tensor]:
    ts = base_tensors()
    ts[i] = t
    return ts


def _nested(depth: int) -> bytes:
    payload = u32(V.UINT8) + u64(1) + b"\x07"
    for _ in range(depth):
        payload = u32(V.ARRAY) + u64(1) + payload
    return payload


def _cut(data: bytes, n: int) -> bytes:
    return data[:n]


CASES: list[tuple[str, bytes, tuple[str, ...]]] = [
    # -- header --
    ("bad-magic", b"GGUG" + _model()[4:], ("magic", "b'GGUG'")),
    ("empty-file", b"", ("not a GGUF file", "0 bytes")),
    ("three-bytes", b"GGU", ("not a GGUF file", "3 bytes")),
    ("version-1", _model(version=1), ("version", "v1")),
    ("version-0", _model(version=0), ("version", "0 is not")),
    ("version-4", _model(version=4), ("version", "4 is not")),
    ("big-endian", _model(version=3 << 24), ("version", "big-endian")),
    ("tensor-count-huge", _model(n_tensors=1 << 63), ("tensor count", str(1 << 63))),
    ("tensor-count-beyond-file", _model(n_tensors=10_000), ("tensor count", "10000")),
    ("kv-count-huge", _model(n_kv=1 << 40), ("key/value count", str(1 << 40))),
    ("cut-in-counts", _cut(_model(), 20), ("tensor count", "remain in the file")),
    # -- keys and values --
    ("empty-key", _model(kvs=_kvs_with(kv("", V.UINT32, 1))), ("key #11", "empty key")),
    (
        "duplicate-key",
        _model(kvs=_kvs_with(kv("llama.block_count", V.UINT32, 2))),
        ("key #11", "duplicate key 'llama.block_count'"),
    ),
    ("key-length-huge", _model(kvs=_kvs_with(u64(1 << 40) + b"abc")), ("key #11", str(1 << 40))),
    ("key-too-long", _model(kvs=_kvs_with(kv("k" * 70000, V.UINT32, 1))), ("key #11", "70000", "65535")),
    ("key-not-utf8", _model(kvs=_kvs_with(kv(b"general.\xff\xfe", V.UINT32, 1))), ("key #11", "UTF-8", "0xff")),
    ("value-type-13", _model(kvs=_kvs_with(raw_kv("x.y", 13, u32(1)))), ("type of key 'x.y'", "13")),
    ("value-type-max", _model(kvs=_kvs_with(raw_kv("x.y", 0xFFFFFFFF, u32(1)))), ("type of key 'x.y'", "4294967295")),
    ("bool-is-2", _model(kvs=_kvs_with(raw_kv("x.flag", V.BOOL, b"\x02"))), ("'x.flag'", "bool is 2")),
    (
        "string-past-eof",
        _model(kvs=_kvs_with(raw_kv("x.s", V.STRING, u64(1 << 30) + b"abc"))),
        ("'x.s'", str(1 << 30), "bytes left"),
    ),
    ("string-over-limit", _model(kvs=_kvs_with(raw_kv("x.s", V.STRING, u64((1 << 30) + 1)))), ("'x.s'", "maximum")),
    ("string-not-utf8", _model(kvs=_kvs_with(kv("x.s", V.STRING, b"caf\xe9"))), ("'x.s'", "UTF-8", "0xe9")),
    (
        "value-cut-at-eof",
        base_model(tensors=[], kvs=_kvs_with(raw_kv("x.u", V.UINT32, b"\x01\x02"))).build(),
        ("'x.u'", "file ends"),
    ),
    # -- arrays --
    (
        "array-element-type-13",
        _model(kvs=_kvs_with(raw_kv("x.a", V.ARRAY, u32(13) + u64(1)))),
        ("array 'x.a' element type", "13"),
    ),
    (
        "array-count-past-eof",
        _model(kvs=_kvs_with(raw_kv("x.a", V.ARRAY, u32(V.UINT32) + u64(1 << 29)))),
        ("array 'x.a' length", str(1 << 29), "remain in the file"),
    ),
    (
        "array-count-over-limit",
        _model(kvs=_kvs_with(raw_kv("x.a", V.ARRAY, u32(V.UINT8) + u64((1 << 30) + 1)))),
        ("array 'x.a' length", "maximum"),
    ),
    (
        "string-array-element-past-eof",
        _model(kvs=_kvs_with(raw_kv("x.a", V.ARRAY, u32(V.STRING) + u64(3) + gstr("ok") + u64(1 << 40) + b"zz"))),
        ("array 'x.a' element 1", str(1 << 40)),
    ),
    (
        "arrays-nested-too-deep",
        _model(kvs=_kvs_with(raw_kv("x.a", V.ARRAY, _nested(12)))),
        ("array 'x.a'", "nested deeper"),
    ),
    (
        "nested-array-bad-type",
        _model(kvs=_kvs_with(raw_kv("x.a", V.ARRAY, u32(V.ARRAY) + u64(1) + u32(99) + u64(1)))),
        ("nested element type", "99"),
    ),
    (
        "bool-array-element-5",
        _model(
            kvs=_kvs_with(kv("x.a", V.ARRAY, (V.UINT8, [0, 1, 5])).replace(u32(V.UINT8) + u64(3), u32(V.BOOL) + u64(3)))
        ),
        ("array 'x.a'", "bool element is 5"),
    ),
    # -- alignment --
    (
        "alignment-zero",
        _model(kvs=_kvs_with(kv("general.alignment", V.UINT32, 0))),
        ("'general.alignment'", "alignment 0 is not a power of 2"),
    ),
    ("alignment-48", _model(kvs=_kvs_with(kv("general.alignment", V.UINT32, 48))), ("alignment 48",)),
    (
        "alignment-wrong-type",
        _model(kvs=_kvs_with(kv("general.alignment", V.UINT64, 32))),
        ("'general.alignment'", "UINT64", "UINT32"),
    ),
    # -- tensor infos --
    ("tensor-name-empty", _model(tensors=_tensors_with(1, Tensor("", (64,)))), ("tensor #1 name", "empty tensor name")),
    ("tensor-name-64-bytes", _model(tensors=_tensors_with(1, Tensor("n" * 64, (64,)))), ("tensor #1 name", "64", "63")),
    (
        "tensor-name-duplicate",
        _model(tensors=_tensors_with(2, Tensor("blk.0.attn_norm.weight", (64,)))),
        ("tensor #2 name", "duplicate tensor name 'blk.0.attn_norm.weight'"),
    ),
    (
        "tensor-name-not-utf8",
        _model(tensors=_tensors_with(1, Tensor(b"blk.\xc3(", (64,)))),
        ("tensor #1 name", "UTF-8"),
    ),
    (
        "tensor-0-dims",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (), n_dims=0))),
        ("dimension count", "0 is not in 1..4"),
    ),
    (
        "tensor-5-dims",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (64, 1, 1, 1, 1)))),
        ("dimension count", "5 is not in 1..4"),
    ),
    (
        "tensor-dim-zero",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (64, 0)))),
        ("dimension 1", "0 is not a valid size"),
    ),
    (
        "tensor-dim-2^63",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (64, 1 << 63)))),
        ("dimension 1", str(1 << 63)),
    ),
    (
        "tensor-elements-overflow",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (1 << 32, 1 << 32)))),
        ("shape", "more than 2^63-1 elements"),
    ),
    (
        "tensor-type-removed-q4_2",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (64,), 4))),
        ("type", "4 is not a ggml type"),
    ),
    (
        "tensor-type-negative",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (64,), -1))),
        ("type", "-1 is not a ggml type"),
    ),
    (
        "tensor-type-beyond-enum",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (64,), 1000))),
        ("type", "1000 is not a ggml type"),
    ),
    (
        "tensor-row-not-whole-blocks",
        _model(tensors=_tensors_with(2, Tensor("blk.0.attn_q.weight", (64, 64), T.Q4_K))),
        ("'blk.0.attn_q.weight' type", "blocks of 256", "rows have 64"),
    ),
    (
        "cut-in-tensor-infos",
        _cut(_model(), len(base_model(tensors=base_tensors()[:2]).header()) + 5),
        ("tensor #2", "file ends"),
    ),
    # -- offsets and data extent --
    (
        "offset-gap",
        _model(tensors=_tensors_with(2, Tensor("blk.0.attn_q.weight", (64, 64), T.Q8_0, offset=960))),
        ("'blk.0.attn_q.weight' data offset", "960, expected 896"),
    ),
    (
        "offset-misaligned",
        _model(tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (64,), offset=16))),
        ("data offset", "16, expected 640"),
    ),
    (
        "offsets-out-of-order",
        _model(tensors=_tensors_with(3, Tensor("blk.0.ffn_up.weight", (64, 128), T.Q4_0, offset=0))),
        ("'blk.0.ffn_up.weight' data offset", "0, expected"),
    ),
    (
        "extent-absurd",
        _model(with_data=False, tensors=_tensors_with(1, Tensor("blk.0.attn_norm.weight", (1 << 31, 1 << 20)))),
        ("shape", "more than 1 PiB"),
    ),
    # -- semantic errors in architecture keys --
    (
        "block-count-string",
        _model(kvs=_kvs_with(kv("llama.block_count", V.STRING, "2"), drop="llama.block_count")),
        ("'llama.block_count'", "STRING", "unsigned integer"),
    ),
    (
        "block-count-negative",
        _model(kvs=_kvs_with(kv("llama.block_count", V.INT32, -1), drop="llama.block_count")),
        ("'llama.block_count'", "-1", "negative"),
    ),
    (
        "architecture-not-string",
        _model(kvs=_kvs_with(kv("general.architecture", V.UINT32, 7), drop="general.architecture")),
        ("'general.architecture'", "UINT32", "STRING"),
    ),
    (
        "head-count-kv-wrong-length",
        _model(
            kvs=_kvs_with(
                kv("llama.attention.head_count_kv", V.ARRAY, (V.UINT32, [2, 2, 2])),
                drop="llama.attention.head_count_kv",
            )
        ),
        ("'llama.attention.head_count_kv'", "3 entries", "2 layers"),
    ),
    (
        "head-count-kv-strings",
        _model(
            kvs=_kvs_with(
                kv("llama.attention.head_count_kv", V.ARRAY, (V.STRING, ["2", "2"])),
                drop="llama.attention.head_count_kv",
            )
        ),
        ("'llama.attention.head_count_kv'", "array of STRING"),
    ),
    (
        "file-type-float",
        _model(kvs=_kvs_with(kv("general.file_type", V.FLOAT32, 1.0), drop="general.file_type")),
        ("'general.file_type'", "FLOAT32"),
    ),
    (
        "swa-pattern-u32-array",
        _model(kvs=_kvs_with(kv("llama.attention.sliding_window_pattern", V.ARRAY, (V.UINT32, [1, 0])))),
        ("'llama.attention.sliding_window_pattern'", "BOOL"),
    ),
    (
        "layer-beyond-block-count",
        _model(tensors=base_tensors() + [Tensor("blk.7.attn_norm.weight", (64,))]),
        ("blk.7", "block_count = 2"),
    ),
]

# Cases llama.cpp's gguf_init_from_file accepts: architecture semantics are checked (or not) by its
# model loader, later; the rest are looser checks of its parser that this reader makes strict.
ENGINE_ACCEPTS = {
    "bool-is-2",
    "key-not-utf8",
    "string-not-utf8",
    "key-too-long",
    "tensor-name-not-utf8",
    "bool-array-element-5",
    "tensor-0-dims",
    "tensor-dim-zero",
    "tensor-name-empty",
    "block-count-string",
    "block-count-negative",
    "architecture-not-string",
    "head-count-kv-wrong-length",
    "head-count-kv-strings",
    "file-type-float",
    "swa-pattern-u32-array",
    "layer-beyond-block-count",
}

# Never decoded eagerly: these errors surface when the array is decoded.
LAZY_CASES: list[tuple[str, bytes, str, tuple[str, ...]]] = [
    (
        "string-array-not-utf8",
        _model(kvs=_kvs_with(kv("x.a", V.ARRAY, (V.STRING, ["ok", b"\xff"])))),
        "x.a",
        ("array element 1", "UTF-8"),
    ),
]

assert len({c[0] for c in CASES}) == len(CASES)
