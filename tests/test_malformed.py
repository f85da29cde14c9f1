"""Every malformed input: one error type, a message naming the file, field, offset and value,
and llama.cpp's own parser agreeing that the file is bad (except where we are knowingly stricter)."""

from __future__ import annotations

import pytest

from harness import GGUFError, read_header
from harness.gguf.source import BytesSource
from tests.support.engine import engine_accepts
from tests.support.malformed_cases import CASES, ENGINE_ACCEPTS, LAZY_CASES

# Messages that cannot carry a byte offset: the file is too short to have one, or the problem is a
# relation between a tensor name and a key rather than one field.
_NO_OFFSET = {"empty-file", "three-bytes", "layer-beyond-block-count"}


def test_enough_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case_id,data,fragments", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_gives_one_clear_error(tmp_path, case_id, data, fragments) -> None:
    path = tmp_path / f"{case_id}.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError) as info:
        read_header(path)
    message = str(info.value)
    assert message.startswith(str(path) + ":")
    for fragment in fragments:
        assert fragment in message
    if case_id not in _NO_OFFSET:
        assert " at byte " in message
    assert "\n" not in message


@pytest.mark.parametrize("case_id,data,fragments", CASES, ids=[c[0] for c in CASES])
def test_in_memory_source_gives_the_same_error(case_id, data, fragments) -> None:
    with pytest.raises(GGUFError) as info:
        read_header(BytesSource(data, name="mem"))
    assert all(f in str(info.value) for f in fragments)


@pytest.mark.engine
def test_llama_cpp_rejects_what_we_reject(tmp_path) -> None:
    paths = {}
    for case_id, data, _ in CASES:
        paths[case_id] = tmp_path / f"{case_id}.gguf"
        paths[case_id].write_bytes(data)
    verdicts = engine_accepts(list(paths.values()))
    accepted = {case_id for case_id, p in paths.items() if verdicts[str(p)]}
    assert accepted == ENGINE_ACCEPTS


@pytest.mark.parametrize("case_id,data,key,fragments", LAZY_CASES, ids=[c[0] for c in LAZY_CASES])
def test_lazy_array_errors_surface_on_decode(case_id, data, key, fragments) -> None:
    header = read_header(BytesSource(data, name="mem"))
    with pytest.raises(GGUFError) as info:
        header.metadata[key].value.decode()
    assert all(f in str(info.value) for f in fragments)
