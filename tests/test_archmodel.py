"""Architecture-only models: the converter's tensor list, checked against a real file and against
published parameter counts."""

from __future__ import annotations

import pytest

from harness import read_header
from harness.gguf.architecture import ArchSpec, build_header
from harness.models.registry import load_registry


@pytest.mark.real_model
def test_smollm2_rebuilt_from_its_config_equals_the_real_file(smollm_path) -> None:
    # SmolLM2-135M's config.json: hidden 576, 30 layers, 9 heads, 3 KV heads, head 64, ffn 1536, vocab 49152, tied
    spec = ArchSpec("smollm2", "llama", 576, 30, 9, 3, 64, 1536, 49152, 8192, tied_output=True, source_type="F16")
    built, real = build_header(spec), read_header(smollm_path)
    assert sorted((t.name, t.shape) for t in built.tensors) == sorted((t.name, t.shape) for t in real.tensors)
    assert built.n_params == real.n_params == 134515008
    assert built.arch == real.arch


@pytest.mark.parametrize(
    "arch,published",
    [("llama-3.1-8b", 8_030_261_248), ("llama-3.1-70b", 70_553_706_496), ("llama-3.1-405b", 405_853_388_800)],
)
def test_llama_31_parameter_counts_are_the_published_ones(arch, published) -> None:
    h = build_header(load_registry().architectures[arch])
    rope = h.tensor("rope_freqs.weight")
    assert h.n_params - rope.n_elements == published  # the converter adds 64 rope scaling factors
    assert h.arch.n_head_kv[0] == 8 and h.arch.key_length == 128
    assert len(h.tensors) == 2 + 9 * h.arch.n_layer + 2


def test_405b_at_source_precision() -> None:
    h = build_header(load_registry().architectures["llama-3.1-405b"])
    assert h.arch.n_layer == 126 and h.tensor("output.weight") is not None  # untied
    assert h.file_type == "BF16"
    # every matrix in BF16 (2 bytes per weight), norms and rope factors in F32
    n_norm = (2 * 126 + 1) * 16384
    assert h.tensor_bytes == 2 * (405_853_388_800 - n_norm) + 4 * (n_norm + 64)
