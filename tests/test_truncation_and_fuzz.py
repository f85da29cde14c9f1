"""Every cut of a header gives a clean error or a `truncated` result; random mutations never let
anything but GGUFError escape."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import GGUFError, ModelHeader, read_header
from harness.gguf.source import BytesSource
from tests.support.ggufbytes import base_model
from tests.support.models import SMOLLM, real_model


def _check_cut(data: bytes, cut: int, header_bytes: int, ref: ModelHeader) -> None:
    src = BytesSource(data[:cut], name=f"cut@{cut}")
    if cut < header_bytes:
        with pytest.raises(GGUFError):
            read_header(src)
        return
    h = read_header(src)
    assert h.truncated == (cut < len(data))
    assert [t.n_bytes for t in h.tensors] == [t.n_bytes for t in ref.tensors]


def test_every_cut_of_a_synthetic_file() -> None:
    data = base_model().build()
    ref = read_header(BytesSource(data))
    header_bytes = ref.shards[0].header_bytes
    for cut in range(len(data) + 1):
        _check_cut(data, cut, header_bytes, ref)


@pytest.mark.real_model
def test_cuts_of_a_real_header(smollm_path) -> None:
    ref = read_header(smollm_path)
    header_bytes = ref.shards[0].header_bytes
    with open(smollm_path, "rb") as f:
        data = f.read(ref.data_offset + 4096)
    rng = random.Random(1234)
    # the start and end of the header byte by byte; the vocabulary in between sampled
    cuts = list(range(0, 2048)) + list(range(header_bytes - 300, ref.data_offset + 64))
    cuts += rng.sample(range(2048, header_bytes - 2048), 300)
    for cut in cuts:
        src = BytesSource(data[:cut], name=f"cut@{cut}", size_bytes=cut)
        if cut < header_bytes:
            with pytest.raises(GGUFError):
                read_header(src)
        else:
            h = read_header(src)
            assert h.truncated and h.tensor_bytes == ref.tensor_bytes


_INTERESTING = [0, 1, 2, 0x7F, 0xFF, 0xFFFF, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


@st.composite
def _mutations(draw, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "word", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":
            word = struct.pack("<Q", draw(st.sampled_from(_INTERESTING)))[: draw(st.sampled_from([1, 2, 4, 8]))]
            buf[pos : pos + len(word)] = word
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        else:
            del buf[pos:]
    return bytes(buf)


_SMALL = base_model().build()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(_SMALL))
def test_mutated_synthetic_files_only_raise_gguf_error(data) -> None:
    try:
        h = read_header(BytesSource(data, name="fuzz"))
    except GGUFError:
        return
    # whatever parses must be self-consistent
    assert h.tensor_bytes == sum(t.n_bytes for t in h.tensors)
    for kv in h.metadata.values():
        if hasattr(kv.value, "decode") and not isinstance(kv.value, str):
            with contextlib.suppress(GGUFError):
                kv.value.decode()


_REAL: dict[str, bytes] = {}


def _real_header() -> bytes:
    if not _REAL:
        path = real_model(SMOLLM)
        with open(path, "rb") as f:
            _REAL["smollm"] = f.read(read_header(path).data_offset)
    return _REAL["smollm"]


@pytest.mark.real_model
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4))
def test_mutated_real_header_only_raises_gguf_error(seed, n) -> None:
    """Mutations drawn from a seed (not as data, so a failure prints a seed, not a 2 MB repr)."""
    rng = random.Random(seed)
    buf = bytearray(_real_header())
    for _ in range(n):
        pos = rng.randrange(len(buf))
        kind = rng.choice(["flip", "word", "delete", "truncate"])
        if kind == "flip":
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == "word":
            word = struct.pack("<Q", rng.choice(_INTERESTING))[: rng.choice([1, 2, 4, 8])]
            buf[pos : pos + len(word)] = word
        elif kind == "delete":
            del buf[pos : pos + rng.randrange(1, 17)]
        else:
            del buf[pos:]
    with contextlib.suppress(GGUFError):
        read_header(BytesSource(bytes(buf), name="fuzz"))
