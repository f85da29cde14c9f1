"""Both real models from PyPI, against llama.cpp's own C parser (gguf_init_from_file, no_alloc)."""

from __future__ import annotations

import pytest

from harness import read_header
from harness.llama import reference_parser


@pytest.mark.engine
@pytest.mark.parametrize("fixture", ["gemma_path", "smollm_path"])
def test_every_tensor_agrees_with_llama_cpp(request, fixture) -> None:
    path = request.getfixturevalue(fixture)
    ours = read_header(path)
    ref = reference_parser.parse_header(path)
    assert len(ours.tensors) == len(ref.tensors)
    assert [(t.name, t.ggml_type, t.n_bytes, t.offset_bytes) for t in ours.tensors] == [
        (t.name, t.ggml_type, t.n_bytes, t.offset_bytes) for t in ref.tensors
    ]
    assert ours.tensor_bytes == sum(t.n_bytes for t in ref.tensors)
    assert ours.data_offset == ref.data_offset
    assert ours.version == ref.version
    assert len(ours.metadata) == ref.n_kv
    assert not ours.truncated


def test_gemma_facts(gemma_path) -> None:
    h = read_header(gemma_path)
    a = h.arch
    assert (a.name, a.n_layer, a.n_embd, a.n_vocab) == ("gemma3", 18, 640, 262144)
    assert len(h.tensors) == 236
    assert h.file_type == "Q4_K_M"
    assert a.sliding_window == 512
    assert a.n_head == (4,) * 18 and a.n_head_kv == (1,) * 18 and a.key_length == 256
    # the file's size is the data section's end: header, padding and every tensor accounted for
    last = h.tensors[-1]
    assert h.file_bytes == h.data_offset + last.offset_bytes + last.n_bytes
    # K-quant rows need multiples of 256; n_embd 640 is not, so most tensors fell back
    types = {t.type_name: t.n_tensors for t in h.type_totals()}
    assert types == {"Q8_0": 10, "Q5_0": 81, "Q4_K": 27, "Q6_K": 9, "F32": 109}


def test_smollm2_facts(smollm_path) -> None:
    h = read_header(smollm_path)
    a = h.arch
    assert (a.name, a.n_layer, a.n_embd, a.n_vocab) == ("llama", 30, 576, 49152)
    assert a.n_head == (9,) * 30 and a.n_head_kv == (3,) * 30
    assert h.file_type == "Q4_1"
    assert h.n_params == 134515008
