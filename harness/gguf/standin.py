"""A stand-in GGUF file for a model known only by its header: the header, then a hole as long as the weights.

llama.cpp's loader checks that every tensor's data lies inside the file, so a header-only prefix fails to
load, but the same header at the start of a sparse file of the full size loads, and with
``llama_model_params.no_alloc`` (load mode NONE) no tensor byte is ever read: that is a dry run of a model
that is not here (DESIGN.md, "Dry runs on a header alone"). The file costs a few MiB of disk, whatever the
size it reports.

The header is serialized here, from a ModelHeader, without numpy or gguf-py's writer: every key/value of the
model's metadata with its own type (arrays written from the bytes they were read from), every tensor info of
every shard as one file (offsets recomputed, the split.* keys dropped), padded to the alignment. A header with
no vocabulary (an architecture entry) gets a synthesized one of n_vocab tokens, which is all llama.cpp needs
from a tokenizer to build the model.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from harness.errors import GGUFError
from harness.gguf import ggml_types
from harness.gguf.format import GGUF_MAGIC, GGUFValueType, Keys
from harness.gguf.header import ModelHeader
from harness.gguf.reader import KeyValue, LazyArray

GGUF_VERSION = 3
_SPLIT_PREFIX = "split."  # the keys of Keys.Split: llama.cpp's split.no, split.count, split.tensors.count
_TOKENIZER_PREFIX = "tokenizer."
_SCALARS: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_SPM_SPECIAL = ("<unk>", "<s>", "</s>")  # llama.cpp's SPM defaults: unk 0, bos 1, eos 2


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U64.pack(len(raw)) + raw


def _value(kv: KeyValue) -> bytes:
    """One value, encoded as its type says: a scalar, a string, or an array's element type, count and elements."""
    try:
        value_type = GGUFValueType(kv.value_type)
    except ValueError:
        raise GGUFError(f"key {kv.key!r}: {kv.value_type} is not a GGUF value type") from None
    if value_type == GGUFValueType.STRING:
        if not isinstance(kv.value, str):
            raise GGUFError(f"key {kv.key!r}: a STRING holds {type(kv.value).__name__} {kv.value!r}")
        return _string(kv.value)
    if value_type == GGUFValueType.ARRAY:
        arr = kv.value
        if not isinstance(arr, LazyArray):  # the reader's form: elements kept encoded, exactly as stored
            raise GGUFError(f"key {kv.key!r}: an ARRAY holds {type(arr).__name__}, not the reader's LazyArray")
        return _U32.pack(GGUFValueType(arr.element_type)) + _U64.pack(arr.count) + arr.raw
    if isinstance(kv.value, (str, bytes, LazyArray)) or kv.value is None:
        raise GGUFError(f"key {kv.key!r}: a {value_type.name} holds {type(kv.value).__name__} {kv.value!r}")
    try:
        return _SCALARS[value_type].pack(kv.value)
    except struct.error as exc:
        raise GGUFError(f"key {kv.key!r}: {kv.value!r} does not fit a {value_type.name} ({exc})") from None


def encoded_array(element_type: GGUFValueType, values: Iterable) -> LazyArray:
    """An array in the reader's form (LazyArray), encoded from ``values``: strings or one scalar type."""
    items = list(values)
    if element_type == GGUFValueType.STRING:
        raw = b"".join(map(_string, items))
    elif element_type in _SCALARS:
        code = _SCALARS[element_type].format[1:]
        raw = struct.pack(f"<{len(items)}{code}", *items)
    else:
        raise GGUFError(f"cannot encode an array of {element_type.name} from plain values")
    return LazyArray(element_type, len(items), 0, "<stand-in>", raw)


def _n_vocab(header: ModelHeader) -> int:
    """Rows of token_embd: llama.cpp creates it as {n_embd, n_vocab} with n_vocab the tokenizer's count."""
    embd = header.tensor("token_embd.weight")
    if embd is not None and len(embd.shape) >= 2:
        return embd.shape[1]
    if header.arch.n_vocab:
        return header.arch.n_vocab
    raise GGUFError(f"{header.paths[0]}: no vocabulary, no token_embd.weight and no vocab_size: cannot make one")


@lru_cache(maxsize=4)  # ~0.1 s for 128k tokens; a planner asks for the digest, then the file
def synthetic_tokenizer(n_vocab: int) -> tuple[KeyValue, ...]:
    """A SentencePiece ("llama") vocabulary of ``n_vocab`` tokens that llama.cpp loads: unk, bos, eos, the
    256 byte tokens where there is room (its newline lookup finds <0x0A>), then placeholders; scores falling."""
    head = list(_SPM_SPECIAL) + [f"<0x{b:02X}>" for b in range(256)]
    tokens = head[:n_vocab] + [f"tok{i}" for i in range(len(head), n_vocab)]
    kvs = [
        (Keys.Tokenizer.MODEL, GGUFValueType.STRING, "llama"),
        (Keys.Tokenizer.LIST, GGUFValueType.ARRAY, encoded_array(GGUFValueType.STRING, tokens)),
        (
            Keys.Tokenizer.SCORES,
            GGUFValueType.ARRAY,
            encoded_array(GGUFValueType.FLOAT32, (float(-i) for i in range(n_vocab))),
        ),
    ]
    return tuple(KeyValue(k, t, 0, v) for k, t, v in kvs)


def standin_metadata(header: ModelHeader) -> dict[str, KeyValue]:
    """The stand-in's key/values: the model's, without split.* keys, with a tokenizer when it has none."""
    metadata = {k: kv for k, kv in header.metadata.items() if not k.startswith(_SPLIT_PREFIX)}
    if Keys.Tokenizer.LIST not in metadata:
        metadata = {k: kv for k, kv in metadata.items() if not k.startswith(_TOKENIZER_PREFIX)}
        metadata |= {kv.key: kv for kv in synthetic_tokenizer(_n_vocab(header))}
    return metadata


def standin_bytes(header: ModelHeader) -> bytes:
    """The stand-in's header: a GGUF v3 header of one file holding every shard's tensors, padded to the
    alignment (its length is the data section's offset)."""
    alignment = header.shards[0].alignment
    metadata = standin_metadata(header)
    parts = [_U32.pack(GGUF_MAGIC), _U32.pack(GGUF_VERSION), _U64.pack(len(header.tensors)), _U64.pack(len(metadata))]
    for key, kv in metadata.items():
        value = _value(kv)  # checks the type first
        parts += [_string(key), _U32.pack(kv.value_type), value]
    offset = 0
    for t in header.tensors:
        parts += [_string(t.name), _U32.pack(len(t.shape)), *map(_U64.pack, t.shape), _I32.pack(t.ggml_type)]
        parts.append(_U64.pack(offset))
        offset += ggml_types.pad(t.n_bytes, alignment)
    out = b"".join(parts)
    return out + bytes(ggml_types.pad(len(out), alignment) - len(out))


def standin_data_bytes(header: ModelHeader) -> int:
    """The data section's length: every tensor padded to the alignment, as gguf-py's writer lays it out."""
    alignment = header.shards[0].alignment
    return sum(ggml_types.pad(t.n_bytes, alignment) for t in header.tensors)


def standin_digest(header: ModelHeader) -> str:
    """sha256 of the stand-in's header bytes (hex): names the file, and keys whatever is cached from a dry run
    of it. The header fixes the data's length, so equal digests mean equal files."""
    return hashlib.sha256(standin_bytes(header)).hexdigest()


def write_standin(header: ModelHeader, directory: Path) -> Path:
    """The stand-in file in ``directory``, named by its digest: reused when it is already there at its size,
    else written under a temporary name and renamed (a reader never sees a partial file). The data section
    is a hole (ftruncate), never written."""
    head = standin_bytes(header)
    size_bytes = len(head) + standin_data_bytes(header)
    directory = Path(directory)
    path = directory / f"{hashlib.sha256(head).hexdigest()}.gguf"
    try:
        if path.is_file() and path.stat().st_size == size_bytes:
            return path
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".standin-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise GGUFError(f"{directory}: cannot write a stand-in file: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            f.truncate(size_bytes)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise GGUFError(f"{path}: cannot write a stand-in file: {exc.strerror or exc}") from None
        raise
    return path
