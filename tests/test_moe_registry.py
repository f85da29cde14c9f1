"""The mixture-of-experts registry entries (issue 13): each architecture built from its published config
holds the published parameter total, and a stand-in of it loads in llama.cpp (which proves the tensor list
and the metadata are what llama.cpp's loader for that architecture expects)."""

from __future__ import annotations

import pytest

from harness.errors import RegistryError
from harness.gguf.architecture import ArchSpec, build_header
from harness.gguf.standin import write_standin
from harness.models.registry import load_registry
from harness.models.resolve import resolve_model

# Published totals and the rounding their source uses (see the comment in models.toml):
#   gpt-oss-120b: the Hub's safetensors count, 116.83B (to 0.01B); OpenAI's card says 117B
#   qwen3-235b-a22b: Qwen's card, 235B (to 1B)
#   deepseek-v3: DeepSeek's README_WEIGHTS, 671B main model (to 1B); the converter drops the 14B MTP block
#   glm-4.5-air: Z.ai's card, 106B without the MTP block (to 1B, rounded down as the card does); the Hub's
#     110B with it (to 1B)
#   llama-4-scout: the text model only; Meta's 109B adds the vision encoder (a separate mmproj file), so the
#     text stack is checked against 17B active (to 1B) and a total just under 109B
PUBLISHED = {
    "gpt-oss-120b": (116.83e9, 0.005e9),
    "qwen3-235b-a22b": (235e9, 0.5e9),
    "deepseek-v3": (671e9, 0.5e9),
}
ARCHS = ("gpt-oss-120b", "qwen3-235b-a22b", "deepseek-v3", "glm-4.5-air", "llama-4-scout")


def _header(arch: str):
    return build_header(load_registry().architectures[arch])


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_parameter_total_is_the_published_one(arch) -> None:
    total, within = PUBLISHED[arch]
    assert abs(_header(arch).n_params - total) <= within


def test_deepseek_v3_is_exactly_its_671b_main_model() -> None:
    h = _header("deepseek-v3")
    assert h.n_params == 671_026_419_200
    assert h.arch.n_layer == 61 and h.arch.n_layer_nextn == 0  # the converter skips the MTP block
    assert h.arch.is_mla and h.arch.n_head_kv[0] == 1 and h.arch.kv_lora_rank == 512
    assert h.tensor("blk.2.ffn_up.weight").shape == (7168, 18432)  # 3 leading dense blocks
    assert h.tensor("blk.3.ffn_up_exps.weight").shape == (7168, 2048, 256)
    assert h.tensor("blk.3.exp_probs_b.bias").shape == (256,)
    assert h.tensor("blk.3.attn_k_b.weight").shape == (128, 512, 128)


def test_glm_45_air_with_and_without_its_mtp_block() -> None:
    h = _header("glm-4.5-air")
    mtp = sum(t.n_elements for t in h.tensors if t.layer == 46)
    assert h.arch.n_layer == 47 and h.arch.n_layer_nextn == 1
    assert round((h.n_params - mtp) / 1e9, 2) == 106.85  # Z.ai: "106B total"
    assert round(h.n_params / 1e9) == 110  # the Hub's count of the checkpoint, MTP included
    assert len(h.tensors) == 803  # a real GLM-4.5-Air GGUF (BF16, ik_llama.cpp issue log): 803 tensors


def test_llama4_scout_text_model() -> None:
    h = _header("llama-4-scout")
    assert 107e9 < h.n_params < 109e9  # 109B with the vision encoder, which the text GGUF does not hold
    active = h.n_params - sum(t.n_elements for t in h.tensors if "_exps" in t.name) * 15 // 16
    assert round(active / 1e9) == 17  # "17B active": one routed expert of 16, the shared one, attention
    assert all(h.tensor(f"blk.{i}.ffn_gate_exps.weight") for i in range(48))  # every block MoE in Scout


def test_gpt_oss_experts_are_mxfp4_in_the_source() -> None:
    h = _header("gpt-oss-120b")
    assert h.tensor("blk.0.ffn_down_exps.weight").ggml_type == 39  # MXFP4, repacked from the checkpoint
    assert h.tensor("blk.0.attn_q.weight").ggml_type == 30  # BF16
    assert h.arch.sliding_window == 128 and h.arch.n_expert == 128 and h.arch.n_expert_used == 4


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"family": "llama", "n_expert": 8}, "does not use n_expert"),
        ({"n_expert_used": 0}, "n_expert_used"),
        ({"n_layer_dense_lead": 3}, "does not use n_layer_dense_lead"),  # Qwen3-MoE has no dense blocks
        ({"expert_gating": "relu"}, "expert_gating"),
        ({"expert_source_type": "Q4_K"}, "expert_source_type"),
    ],
)
def test_specs_no_converter_writes_are_refused(changes, message) -> None:
    base = dict(load_registry().architectures["qwen3-235b-a22b"].__dict__) | changes
    with pytest.raises(RegistryError, match=message):
        ArchSpec(**base)


def test_deepseek_dense_blocks_must_leave_moe_blocks() -> None:
    base = dict(load_registry().architectures["deepseek-v3"].__dict__) | {"n_layer_dense_lead": 61}
    with pytest.raises(RegistryError, match="leaves no MoE block"):
        ArchSpec(**base)


ENTRIES = [
    name
    for name, e in load_registry().entries.items()
    if e.architecture is not None and load_registry().architectures[e.architecture].n_expert
]


def test_every_moe_family_has_entries_at_the_quants_people_download() -> None:
    quants = {(load_registry().entries[n].architecture, load_registry().entries[n].quant) for n in ENTRIES}
    for arch in ARCHS:
        wanted = {"MXFP4_MOE"} if arch == "gpt-oss-120b" else {"Q4_K_M", "Q2_K", "IQ2_XXS"}
        assert wanted <= {q for a, q in quants if a == arch}, arch


@pytest.mark.parametrize("name", ENTRIES)
def test_every_moe_entry_sizes(name) -> None:
    h = resolve_model(name).header
    assert h.n_params == _header(load_registry().entries[name].architecture).n_params
    assert 1.5 < h.bits_per_weight < 5.5


@pytest.mark.engine
@pytest.mark.parametrize("arch", ARCHS)
def test_a_standin_loads_in_llama_cpp(tmp_path, arch) -> None:
    from harness.llama.engine import load_and_report

    path = write_standin(_header(arch), tmp_path)
    r = load_and_report(path, 0, 4096, [], no_alloc=True, decode=False, isolated=True)
    assert any(b.compute_bytes for b in r.buffers)
