"""Valid files: every value type, lazy arrays, v2 and v3, header-only prefixes, against gguf-py."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter
from gguf import GGUFValueType as V

from harness import GGUFError, read_header
from harness.gguf.source import BytesSource, FileSource
from tests.support.ggufbytes import base_model
from tests.support.writer import add_raw_tensor, write_llama


def test_every_value_type_matches_gguf_py(tmp_path) -> None:
    path = tmp_path / "types.gguf"
    w = GGUFWriter(path, "llama")
    values = {
        "t.u8": (255, V.UINT8),
        "t.i8": (-128, V.INT8),
        "t.u16": (65535, V.UINT16),
        "t.i16": (-32768, V.INT16),
        "t.u32": (2**32 - 1, V.UINT32),
        "t.i32": (-(2**31), V.INT32),
        "t.f32": (1.5, V.FLOAT32),
        "t.bool": (True, V.BOOL),
        "t.str": ("héllo ✓", V.STRING),
        "t.u64": (2**64 - 1, V.UINT64),
        "t.i64": (-(2**63), V.INT64),
        "t.f64": (-2.25, V.FLOAT64),
    }
    for key, (v, vt) in values.items():
        w.add_key_value(key, v, vt)
    w.add_array("t.arr_u8", [1, 2, 3])
    w.add_array("t.arr_str", ["a", "", "ünï"])
    w.add_array("t.arr_f32", [0.5, -1.0])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    add_raw_tensor(w, "output_norm.weight", (64,), T.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours = read_header(path)
    ref = GGUFReader(path)
    for key, (v, vt) in values.items():
        kv = ours.metadata[key]
        assert kv.value_type == vt
        assert kv.value == ref.fields[key].contents()
        assert kv.value == (pytest.approx(v) if isinstance(v, float) else v)
    for key in ("t.arr_u8", "t.arr_str", "t.arr_f32", "t.arr_bool"):
        assert ours.metadata[key].value.decode() == pytest.approx(ref.fields[key].contents())
    nested = ours.metadata["t.arr_nested"].value.decode()
    assert [inner.decode() for inner in nested] == [[1, 2], [3]]
    assert ours.data_offset == ref.data_offset
    assert ours.tensors[0].offset_bytes == ref.tensors[0].data_offset - ref.data_offset


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q8_0, T.IQ2_XXS, T.Q5_0, T.BF16])
@pytest.mark.parametrize("n_embd", [256, 512])
def test_sizes_match_gguf_reader(tmp_path, qtype, n_embd) -> None:
    [path] = write_llama(tmp_path / "m.gguf", n_embd=n_embd, qtype=qtype)
    ours = read_header(path)
    ref = GGUFReader(path)
    assert [(t.name, int(t.tensor_type), int(t.n_bytes), int(t.n_elements)) for t in ref.tensors] == [
        (t.name, t.ggml_type, t.n_bytes, t.n_elements) for t in ours.tensors
    ]
    assert ours.data_offset == ref.data_offset
    assert ours.arch.n_layer == 3 and ours.arch.n_embd == n_embd
    assert ours.arch.n_head_kv == (2, 2, 2) and ours.arch.key_length == n_embd // 8
    assert ours.arch.n_vocab == 64
    assert not ours.truncated and ours.file_type == "Q4_K_M"


def test_totals_are_consistent(tmp_path) -> None:
    [path] = write_llama(tmp_path / "m.gguf")
    h = read_header(path)
    assert sum(t.n_bytes for t in h.type_totals()) == h.tensor_bytes
    per_layer = sum(lt.n_bytes for lt in h.layer_totals())
    assert per_layer + sum(t.n_bytes for t in h.non_layer_tensors()) == h.tensor_bytes
    assert [lt.index for lt in h.layer_totals()] == [0, 1, 2]
    assert h.bits_per_weight == pytest.approx(h.tensor_bytes * 8 / h.n_params)


def test_gguf_v2_reads_like_v3() -> None:
    v3 = read_header(BytesSource(base_model(version=3).build()))
    v2 = read_header(BytesSource(base_model(version=2).build()))
    assert v2.version == 2 and v3.version == 3
    assert [t.n_bytes for t in v2.tensors] == [t.n_bytes for t in v3.tensors]


@pytest.mark.real_model
def test_header_only_prefix_knows_every_size(tmp_path, smollm_path) -> None:
    full = read_header(smollm_path)
    prefix = tmp_path / "prefix.gguf"
    with open(smollm_path, "rb") as f:
        prefix.write_bytes(f.read(full.data_offset))
    h = read_header(prefix)
    assert h.truncated and not full.truncated
    assert h.tensor_bytes == full.tensor_bytes and h.n_params == full.n_params
    assert [t.n_bytes for t in h.tensors] == [t.n_bytes for t in full.tensors]
    assert any("tensor data is missing" in w for w in h.warnings)


@pytest.mark.real_model
def test_reader_reads_only_the_header(gemma_path) -> None:
    from harness.gguf.reader import parse_gguf

    with FileSource(gemma_path) as src:
        f = parse_gguf(src)
        # the header plus at most one read-ahead doubling: never tensor data wholesale
        assert src.bytes_read <= 2 * f.header_bytes + 256 * 1024
        assert src.bytes_read < src.size_bytes / 10


@pytest.mark.real_model
def test_vocabulary_is_not_decoded(gemma_path) -> None:
    h = read_header(gemma_path)
    tokens = h.metadata["tokenizer.ggml.tokens"].value
    assert tokens.count == 262144 and h.arch.n_vocab == 262144
    decoded = tokens.decode()
    assert len(decoded) == 262144 and all(isinstance(t, str) for t in decoded[:100])


def test_directory_and_missing_file_errors(tmp_path) -> None:
    with pytest.raises(GGUFError, match="no such file"):
        read_header(tmp_path / "nope.gguf")
    with pytest.raises(GGUFError, match="is a directory"):
        read_header(tmp_path)


def test_float_arrays_decode_exactly() -> None:
    data = base_model().build()
    h = read_header(BytesSource(data))
    assert h.metadata["tokenizer.ggml.scores"].value.decode() == [0.0, -1.0, -2.0, -3.0, -4.0]
    assert h.metadata["tokenizer.ggml.tokens"].value.decode() == ["<s>", "a", "b", "ab", "é"]
    assert np.float32(h.get("tokenizer.ggml.scores").decode()[1]) == np.float32(-1.0)
