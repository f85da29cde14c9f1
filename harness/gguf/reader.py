"""A streaming, strict GGUF header parser.

It reads the header of one GGUF file (v2 or v3) from a ByteSource: magic, key/value metadata and
tensor infos, never tensor data. Arrays are skipped, not decoded (a 262k-entry vocabulary is walked
once to find its end, at C-ish speed) and decoded only on request. Every malformed input raises
GGUFError naming the file, the field, the byte offset and the bad value, in time and memory
bounded by the bytes actually present: nothing is preallocated from a count read off the file.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from harness.errors import GGUFError
from harness.gguf import ggml_types
from harness.gguf.format import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType, Keys
from harness.gguf.source import ByteSource

# Limits. The first two are llama.cpp's (GGUF_MAX_STRING_LENGTH, GGUF_MAX_ARRAY_ELEMENTS); the
# name limit is GGML_MAX_NAME - 1; the data limit is ours: 1 PiB is absurd for any model.
MAX_STRING_BYTES = 1 << 30
MAX_ARRAY_ELEMENTS = 1 << 30
MAX_TENSOR_NAME_BYTES = 63
MAX_KEY_BYTES = 65535
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 8
MAX_DATA_BYTES = 1 << 50
MAX_HEADER_BYTES = 256 << 20  # real headers are a few MiB (a 262k vocabulary is ~6 MiB)
INT64_MAX = (1 << 63) - 1
SIZE_MAX = (1 << 64) - 1

_FIRST_READ_BYTES = 256 * 1024

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "B",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_SCALAR_STRUCTS = {t: struct.Struct("<" + f) for t, f in _SCALAR_FORMATS.items()}
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
# Smallest encodings, used to bound counts by the bytes that remain.
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8


def value_type_name(value_type: int) -> str:
    try:
        return GGUFValueType(value_type).name
    except ValueError:
        return f"type {value_type}"


@dataclass(frozen=True)
class LazyArray:
    """A metadata array kept as the bytes it was read from; ``decode()`` turns it into values.

    Elements of an array of arrays decode to LazyArrays themselves, so nothing ever recurses.
    """

    element_type: GGUFValueType
    count: int
    offset: int  # byte offset of the first element in the file
    source_name: str
    _raw: bytes = field(repr=False, compare=False)

    def __len__(self) -> int:
        return self.count

    @property
    def raw(self) -> bytes:
        """The array's encoded elements, exactly as stored."""
        return self._raw

    def decode(self) -> list[Any]:
        raw, t, n = self._raw, self.element_type, self.count
        if t in _SCALAR_FORMATS:
            values = list(struct.unpack_from(f"<{n}{_SCALAR_FORMATS[t]}", raw, 0))
            if t == GGUFValueType.BOOL:
                for i, v in enumerate(values):
                    if v > 1:
                        self._fail(i, f"bool element is {v}, must be 0 or 1")
                return [bool(v) for v in values]
            return values
        out: list[Any] = []
        pos = 0
        if t == GGUFValueType.STRING:
            for i in range(n):
                (length,) = _U64.unpack_from(raw, pos)
                try:
                    out.append(raw[pos + 8 : pos + 8 + length].decode("utf-8"))
                except UnicodeDecodeError as exc:
                    self._fail(i, f"string is not valid UTF-8 ({exc.reason} at byte {exc.start})")
                pos += 8 + length
            return out
        for _ in range(n):  # array of arrays: one level at a time
            inner_type, inner_count = _U32.unpack_from(raw, pos)[0], _U64.unpack_from(raw, pos + 4)[0]
            end = _array_extent(raw, pos + 12, GGUFValueType(inner_type), inner_count)
            out.append(
                LazyArray(
                    GGUFValueType(inner_type),
                    inner_count,
                    self.offset + pos + 12,
                    self.source_name,
                    raw[pos + 12 : end],
                )
            )
            pos = end
        return out

    def _fail(self, index: int, problem: str) -> None:
        raise GGUFError(f"{self.source_name}: array element {index} (array at byte {self.offset}): {problem}")


def _array_extent(raw: bytes, pos: int, element_type: GGUFValueType, count: int) -> int:
    """End of an already validated array inside ``raw`` (iterative for nested arrays)."""
    stack = [(element_type, count)]
    while stack:
        t, n = stack.pop()
        if t in _SCALAR_FORMATS:
            pos += n * _SCALAR_STRUCTS[t].size
        elif t == GGUFValueType.STRING:
            for _ in range(n):
                pos += 8 + _U64.unpack_from(raw, pos)[0]
        elif n:
            inner_type, inner_count = _U32.unpack_from(raw, pos)[0], _U64.unpack_from(raw, pos + 4)[0]
            pos += 12
            stack.append((t, n - 1))
            stack.append((GGUFValueType(inner_type), inner_count))
    return pos


@dataclass(frozen=True)
class KeyValue:
    key: str
    value_type: GGUFValueType
    offset: int  # byte offset of the value (after key and type) in its file
    value: Any  # int, float, bool, str, or LazyArray


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length (ne0)
    ggml_type: int
    offset_bytes: int  # from the start of its file's data section
    n_bytes: int
    shard: int = 0  # index into ModelHeader.shards

    @property
    def type_name(self) -> str:
        return ggml_types.type_name(self.ggml_type)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def layer(self) -> int | None:
        """Block index for ``blk.N.*`` tensors, None for the rest (embeddings, output, ...)."""
        if not self.name.startswith("blk."):
            return None
        index, _, _ = self.name[4:].partition(".")
        return int(index) if index.isdigit() else None


@dataclass(frozen=True)
class GGUFFile:
    """The parsed header of one GGUF file."""

    name: str
    version: int
    file_bytes: int
    header_bytes: int  # end of the tensor infos
    alignment: int
    data_offset: int  # start of the data section
    data_bytes: int  # extent of the data section, each tensor padded to the alignment
    metadata: dict[str, KeyValue]
    tensors: tuple[TensorInfo, ...]

    @property
    def data_end(self) -> int:
        """Byte just past the last tensor's data: the file must be at least this long."""
        if not self.tensors:
            return self.data_offset
        last = self.tensors[-1]
        return self.data_offset + last.offset_bytes + last.n_bytes

    @property
    def truncated(self) -> bool:
        return self.file_bytes < self.data_end


def parse_gguf(source: ByteSource) -> GGUFFile:
    """Parse the header of one GGUF file. Raises GGUFError on anything malformed."""
    return _Parser(source).parse()


def parse_gguf_keeping_bytes(source: ByteSource) -> tuple[GGUFFile, bytes]:
    """parse_gguf, plus the header's bytes as read (for caching a remote header without refetching it)."""
    parser = _Parser(source)
    parsed = parser.parse()
    return parsed, bytes(parser.buf[: parsed.header_bytes])


class _Parser:
    def __init__(self, source: ByteSource) -> None:
        self.src = source
        self.size = source.size_bytes
        self.buf = bytearray()
        self.pos = 0

    # -- errors and buffering -------------------------------------------------------------------

    def fail(self, what: str, offset: int, problem: str) -> GGUFError:
        return GGUFError(f"{self.src.name}: {what} at byte {offset}: {problem}")

    def fill(self, end: int, what: str, offset: int, hint: int = 0) -> None:
        """Make buf hold bytes [0, end), reading ahead geometrically (and towards ``hint``, a guess of
        what will be needed next); fail only if bytes before ``end`` are missing."""
        have = len(self.buf)
        if end <= have:
            return
        if end > self.size:
            raise self.fail(
                what,
                offset,
                f"the file ends at byte {self.size}, {end - self.size} bytes short of what this field needs",
            )
        if end > MAX_HEADER_BYTES:
            raise self.fail(
                what,
                offset,
                f"the header would exceed {MAX_HEADER_BYTES >> 20} MiB, far beyond any real model's metadata",
            )
        grow = int(have * getattr(self.src, "read_ahead_fraction", 1.0))  # remote sources grow by less
        want = min(max(end - have, grow, hint - have, _FIRST_READ_BYTES), self.size - have)
        readinto = getattr(self.src, "readinto", None)
        if readinto is None:
            self.buf += self.src.read(have, want)
        else:  # read straight into the grown buffer: one copy fewer on a 6 MiB vocabulary
            self.buf.extend(bytes(want))
            with memoryview(self.buf) as view:
                got = readinto(have, view[have:])
            del self.buf[have + got :]
        if len(self.buf) < end:
            raise self.fail(what, offset, f"could read only up to byte {len(self.buf)} of {self.size}")

    def take(self, n: int, what: str) -> bytes:
        start = self.pos
        self.fill(start + n, what, start)
        self.pos = start + n
        return bytes(self.buf[start : start + n])

    def unpack(self, st: struct.Struct, what: str) -> Any:
        start = self.pos
        if start + st.size > len(self.buf):
            self.fill(start + st.size, what, start)
        self.pos = start + st.size
        return st.unpack_from(self.buf, start)[0]

    def string(self, what: str, max_bytes: int = MAX_STRING_BYTES) -> str:
        start = self.pos
        n = self.unpack(_U64, f"{what} length")
        if n > max_bytes:
            raise self.fail(what, start, f"length {n} exceeds the maximum of {max_bytes} bytes")
        if n > self.size - self.pos:
            raise self.fail(what, start, f"length {n} exceeds the {self.size - self.pos} bytes left in the file")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(
                what, start, f"not valid UTF-8 ({exc.reason}: byte 0x{raw[exc.start]:02x} at position {exc.start})"
            ) from None

    def value_type(self, what: str) -> GGUFValueType:
        start = self.pos
        raw = self.unpack(_U32, what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(what, start, f"{raw} is not a GGUF value type (0..12)") from None

    def unique_name(self, what: str, max_bytes: int, seen: Container[str], kind: str) -> str:
        start = self.pos
        name = self.string(what, max_bytes)
        if not name:
            raise self.fail(what, start, f"empty {kind}")
        if name in seen:
            raise self.fail(what, start, f"duplicate {kind} {name!r}")
        return name

    def count(self, st: struct.Struct, what: str, min_item_bytes: int, limit: int) -> int:
        start = self.pos
        n = self.unpack(st, what)
        if n > limit:
            raise self.fail(what, start, f"{n} exceeds the maximum of {limit}")
        remaining = self.size - self.pos
        if n * min_item_bytes > remaining:
            raise self.fail(
                what,
                start,
                f"{n} items need at least {n * min_item_bytes} bytes but only {remaining} remain in the file",
            )
        return n

    # -- the file -------------------------------------------------------------------------------

    def parse(self) -> GGUFFile:
        magic = self.take(4, "magic") if self.size >= 4 else b""
        if magic != struct.pack("<I", GGUF_MAGIC):
            if self.size < 4:
                raise GGUFError(f"{self.src.name}: not a GGUF file: only {self.size} bytes long")
            raise self.fail("magic", 0, f"{magic!r} is not b'GGUF': not a GGUF file")
        version = self.unpack(_U32, "version")
        if version in (1 << 24, 2 << 24, 3 << 24):
            raise self.fail(
                "version",
                4,
                f"0x{version:08x} is a big-endian GGUF file; "
                "only little-endian files are supported (as on every llama.cpp host)",
            )
        if version == 1:
            raise self.fail("version", 4, "GGUF v1 is no longer supported by llama.cpp; reconvert the model")
        if version not in (2, 3):
            raise self.fail("version", 4, f"{version} is not a supported GGUF version (2 or 3)")
        n_tensors = self.count(_U64, "tensor count", _MIN_TENSOR_INFO_BYTES, INT64_MAX)
        n_kv = self.count(_U64, "key/value count", _MIN_KV_BYTES, INT64_MAX)

        metadata = self.key_values(n_kv)
        alignment = self.alignment(metadata)
        tensors, data_bytes = self.tensor_infos(n_tensors, alignment)
        header_bytes = self.pos
        data_offset = ggml_types.pad(header_bytes, alignment) if tensors else header_bytes
        return GGUFFile(
            self.src.name, version, self.size, header_bytes, alignment, data_offset, data_bytes, metadata, tensors
        )

    def key_values(self, n_kv: int) -> dict[str, KeyValue]:
        metadata: dict[str, KeyValue] = {}
        for i in range(n_kv):
            key = self.unique_name(f"key #{i}", MAX_KEY_BYTES, metadata, "key")
            value_type = self.value_type(f"type of key {key!r}")
            value_offset = self.pos
            value = self.value(value_type, key)
            metadata[key] = KeyValue(key, value_type, value_offset, value)
        return metadata

    def value(self, value_type: GGUFValueType, key: str) -> Any:
        what = f"value of key {key!r}"
        if value_type == GGUFValueType.STRING:
            return self.string(what)
        if value_type == GGUFValueType.ARRAY:
            return self.array(key)
        start = self.pos
        value = self.unpack(_SCALAR_STRUCTS[value_type], what)
        if value_type == GGUFValueType.BOOL:
            if value > 1:
                raise self.fail(what, start, f"bool is {value}, must be 0 or 1")
            return bool(value)
        return value

    def array(self, key: str) -> LazyArray:
        what = f"array {key!r}"
        element_type = self.value_type(f"{what} element type")
        count = self.array_count(element_type, what)
        start = self.pos
        self.skip_array(element_type, count, what)
        with memoryview(self.buf) as view:  # one copy, and the view is released before buf grows
            raw = bytes(view[start : self.pos])
        return LazyArray(element_type, count, start, self.src.name, raw)

    def array_count(self, element_type: GGUFValueType, what: str) -> int:
        min_bytes = (
            _SCALAR_STRUCTS[element_type].size
            if element_type in _SCALAR_STRUCTS
            else (8 if element_type == GGUFValueType.STRING else 12)
        )
        return self.count(_U64, f"{what} length", min_bytes, MAX_ARRAY_ELEMENTS)

    def skip_array(self, element_type: GGUFValueType, count: int, what: str) -> None:
        """Move past an array without decoding it; nested arrays use an explicit stack."""
        stack = [(element_type, count)]
        while stack:
            if len(stack) > MAX_ARRAY_DEPTH:
                raise self.fail(what, self.pos, f"arrays nested deeper than {MAX_ARRAY_DEPTH} levels")
            t, n = stack.pop()
            if t in _SCALAR_STRUCTS:
                item = _SCALAR_STRUCTS[t].size
                self.fill(self.pos + n * item, f"{what} ({n} x {t.name})", self.pos)
                if t == GGUFValueType.BOOL and n and max(self.buf[self.pos : self.pos + n]) > 1:
                    raise self.fail(
                        what, self.pos, f"bool element is {max(self.buf[self.pos : self.pos + n])}, must be 0 or 1"
                    )
                self.pos += n * item
            elif t == GGUFValueType.STRING:
                self.skip_strings(n, what)
            elif n:
                inner_type = self.value_type(f"{what} nested element type")
                inner_count = self.array_count(inner_type, f"{what} nested")
                stack.append((t, n - 1))
                stack.append((inner_type, inner_count))

    def skip_strings(self, count: int, what: str) -> None:
        """Walk ``count`` length-prefixed strings: the hot loop of the whole reader (the vocabulary).

        Lengths are read through eight u64 memoryviews of the buffer, one per byte offset modulo 8,
        eight strings per loop turn; any block that runs past what has been read (or into an absurd
        length) is redone by the exact walk, which reads more or reports the bad element."""
        start, pos, done = self.pos, self.pos, 0
        while done < count:
            if sys.byteorder == "little" and count - done >= 8:
                pos, done = self._walk_blocks(pos, done, count)
            n = min(8, count - done) if done < count else 0
            if n:
                pos = self._walk_exact(pos, n, start, count, what)
                done += n
        if pos > self.size:
            self.string_array_error(start, count, what)
        self.fill(pos, what, start)
        self.pos = pos

    def _walk_blocks(self, pos: int, done: int, count: int) -> tuple[int, int]:
        """Whole blocks of 8 strings while they lie inside the buffer; returns where it stopped."""
        with memoryview(self.buf) as mv:
            size = len(mv)
            views = [mv[k : k + (size - k) // 8 * 8].cast("Q") for k in range(8)]
            try:
                m = views
                for _ in range((count - done) >> 3):
                    p0 = pos
                    pos += 8 + m[pos & 7][pos >> 3]
                    pos += 8 + m[pos & 7][pos >> 3]
                    pos += 8 + m[pos & 7][pos >> 3]
                    pos += 8 + m[pos & 7][pos >> 3]
                    pos += 8 + m[pos & 7][pos >> 3]
                    pos += 8 + m[pos & 7][pos >> 3]
                    pos += 8 + m[pos & 7][pos >> 3]
                    pos += 8 + m[pos & 7][pos >> 3]
                    done += 8
                    p0 = pos
            except (IndexError, OverflowError):
                pos = p0  # this block is redone exactly
            finally:
                for v in views:
                    v.release()
        return pos, done

    def _walk_exact(self, pos: int, n: int, start: int, count: int, what: str) -> int:
        """``n`` strings from ``pos`` with struct, reading more as needed."""
        unpack = _U64.unpack_from
        i = 0
        while i < n:
            buf = self.buf
            try:
                for i in range(i, n):  # noqa: B007, B020 - i is where a retry resumes
                    pos += 8 + unpack(buf, pos)[0]
                i = n
            except (struct.error, OverflowError):
                # this length prefix lies past what has been read so far (or past 2^63)
                if pos + 8 > self.size:
                    self.string_array_error(start, count, what)
                self.fill(pos + 8, what, pos, hint=min(pos + 8 + (pos - start), self.size))
        return pos

    def string_array_error(self, start: int, count: int, what: str) -> None:
        """Slow path: find which element runs off the end of the file, and say so."""
        pos = start
        for i in range(count):
            if pos + 8 > self.size:
                raise self.fail(
                    f"{what} element {i}", pos, f"the file ends at byte {self.size} before this string's length"
                )
            self.fill(pos + 8, what, pos)
            (n,) = _U64.unpack_from(self.buf, pos)
            if n > MAX_STRING_BYTES or pos + 8 + n > self.size:
                raise self.fail(
                    f"{what} element {i}", pos, f"string length {n} runs past the end of the file ({self.size} bytes)"
                )
            pos += 8 + n
        raise AssertionError("string_array_error found no error")  # pragma: no cover

    def alignment(self, metadata: dict[str, KeyValue]) -> int:
        kv = metadata.get(Keys.General.ALIGNMENT)
        if kv is None:
            return GGUF_DEFAULT_ALIGNMENT
        if kv.value_type != GGUFValueType.UINT32:
            raise self.fail(f"value of key {kv.key!r}", kv.offset, f"has type {kv.value_type.name}, must be UINT32")
        if kv.value == 0 or kv.value & (kv.value - 1):
            raise self.fail(f"value of key {kv.key!r}", kv.offset, f"alignment {kv.value} is not a power of 2")
        return kv.value

    def tensor_infos(self, n_tensors: int, alignment: int) -> tuple[tuple[TensorInfo, ...], int]:
        """Tensor infos, checking as llama.cpp does that each offset is the running sum of the sizes
        before it, padded to the alignment. Returns the infos and the padded data extent."""
        tensors: list[TensorInfo] = []
        seen: set[str] = set()
        expected = 0
        for i in range(n_tensors):
            name = self.unique_name(f"tensor #{i} name", MAX_TENSOR_NAME_BYTES, seen, "tensor name")
            seen.add(name)
            what = f"tensor #{i} {name!r}"
            dims_offset = self.pos
            n_dims = self.unpack(_U32, f"{what} dimension count")
            if not 1 <= n_dims <= MAX_DIMS:
                raise self.fail(f"{what} dimension count", dims_offset, f"{n_dims} is not in 1..{MAX_DIMS}")
            shape: list[int] = []
            n_elements = 1
            for d in range(n_dims):
                dim_offset = self.pos
                dim = self.unpack(_U64, f"{what} dimension {d}")
                if not 1 <= dim <= INT64_MAX:
                    raise self.fail(f"{what} dimension {d}", dim_offset, f"{dim} is not a valid size (1..2^63-1)")
                n_elements *= dim
                if n_elements > INT64_MAX:
                    raise self.fail(f"{what} shape", dims_offset, f"{shape + [dim]} has more than 2^63-1 elements")
                shape.append(dim)
            type_offset = self.pos
            ggml_type = self.unpack(_I32, f"{what} type")
            if ggml_type not in ggml_types.QUANT_SIZES:
                raise self.fail(
                    f"{what} type", type_offset, f"{ggml_type} is not a ggml type with a known block layout"
                )
            block, _ = ggml_types.block_size(ggml_type)
            if shape[0] % block:
                raise self.fail(
                    f"{what} type",
                    type_offset,
                    f"{ggml_types.type_name(ggml_type)} stores blocks of {block} elements but rows have {shape[0]}",
                )
            n_bytes = ggml_types.tensor_nbytes(tuple(shape), ggml_type)
            offset_at = self.pos
            offset = self.unpack(_U64, f"{what} data offset")
            if offset != expected:
                raise self.fail(
                    f"{what} data offset",
                    offset_at,
                    f"{offset}, expected {expected}: each tensor must follow the previous one, "
                    f"padded to {alignment} bytes",
                )
            expected += ggml_types.pad(n_bytes, alignment)
            if expected > MAX_DATA_BYTES:
                raise self.fail(
                    f"{what} shape",
                    dims_offset,
                    f"{shape} ({ggml_types.type_name(ggml_type)}) takes the data section to {expected} "
                    "bytes, more than 1 PiB: the shapes are absurd",
                )
            tensors.append(TensorInfo(name, tuple(shape), ggml_type, offset, n_bytes))
        return tuple(tensors), expected
