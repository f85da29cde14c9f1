"""Models described by their published architecture alone (no file): the tensor list llama.cpp's
converter would write, as a ModelHeader, so that inspect, sizes and plan work without a download.

The tensors come out in the converter's source precision (BF16/F16 matrices, F32 norms, biases and
routers; gpt-oss's experts in the MXFP4 its checkpoint ships); the sizes module turns them into any quant.
Families described: llama, and the mixtures of experts qwen3moe, gpt-oss, deepseek2 (DeepSeek-V3/R1:
multi-head latent attention), glm4moe (GLM-4.5) and llama4. Each builder follows the converter
(vendor/llama.cpp/conversion/*.py) for names and ggml shapes, and the model's load_arch_tensors
(src/models/*.cpp) for what llama.cpp requires; a stand-in of every registry entry loads in llama.cpp
(tests/test_moe_registry.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields

from harness.errors import RegistryError
from harness.gguf import ggml_types
from harness.gguf.format import GGMLQuantizationType as T
from harness.gguf.format import GGUFValueType as V
from harness.gguf.format import Keys
from harness.gguf.header import ModelHeader, model_header
from harness.gguf.reader import GGUFFile, KeyValue, TensorInfo


@dataclass(frozen=True)
class ArchSpec:
    """A published configuration (config.json), in the registry's words.

    Fields after ``rms_norm_eps`` describe mixtures of experts and their attention variants; 0, "" and
    False mean "not in this model". A family refuses fields it does not read (``_USES``)."""

    name: str
    family: str
    n_embd: int
    n_layer: int  # the main stack (config's num_hidden_layers), without multi-token-prediction blocks
    n_head: int
    n_head_kv: int
    head_dim: int  # query/key head size (deepseek2: qk_nope_head_dim + qk_rope_head_dim)
    n_ff: int  # dense FFN width (config's intermediate_size; llama4: intermediate_size_mlp)
    n_vocab: int
    context_length: int
    tied_output: bool = False
    rope_freqs: bool = False  # llama 3.1's rope scaling factors, a [head_dim/2] F32 tensor
    source_type: str = "BF16"
    # config.json's rope_theta and rms_norm_eps; the defaults are Llama 3/3.1's (every entry of models.toml).
    # Neither changes a size: llama.cpp only refuses to load a llama model without the epsilon.
    rope_freq_base: float = 500000.0
    rms_norm_eps: float = 1e-5
    # -- mixtures of experts
    n_expert: int = 0  # routed experts (num_experts, num_local_experts, n_routed_experts)
    n_expert_used: int = 0  # num_experts_per_tok
    n_ff_expert: int = 0  # one expert's FFN width (moe_intermediate_size)
    n_expert_shared: int = 0  # shared experts, each n_ff_expert wide (deepseek2, glm4moe; llama4 has one)
    n_layer_dense_lead: int = 0  # first_k_dense_replace: leading blocks with a dense FFN
    moe_layer_step: int = 1  # llama4's interleave_moe_layer_step: block i is MoE when (i + 1) % step == 0
    n_layer_nextn: int = 0  # num_nextn_predict_layers the converter keeps (glm4moe), appended as blocks
    n_expert_groups: int = 0  # n_group (DeepSeek-V3's grouped routing)
    n_expert_groups_used: int = 0  # topk_group
    expert_gating: str = ""  # scoring_func: "softmax" or "sigmoid"; "" writes no key
    expert_weights_scale: float = 0.0  # routed_scaling_factor; 0 writes no key
    expert_weights_norm: bool = False  # norm_topk_prob
    expert_source_type: str = ""  # what the checkpoint ships the routed experts in ("": source_type)
    # -- attention variants
    rope_dim: int = 0  # rotated dimensions per head (0: head_dim); partial rotary, MLA's qk_rope_head_dim
    v_head_dim: int = 0  # value head size when it differs from head_dim (deepseek2)
    q_lora_rank: int = 0  # multi-head latent attention (deepseek2)
    kv_lora_rank: int = 0
    sliding_window: int = 0  # gpt-oss: every other layer attends to this many tokens
    attention_bias: bool = False  # q/k/v (and gpt-oss's output) projections carry biases
    qk_norm: bool = False  # per-head RMS norms of Q and K with weights (attn_q_norm, attn_k_norm)

    def __post_init__(self) -> None:
        """Refuse what no converter writes, before anything is built: a spec is data from models.toml."""

        def bad(why: str) -> RegistryError:
            return RegistryError(f"architecture {self.name!r}: {why}")

        if self.family not in _BUILDERS:
            raise bad(f"family {self.family!r} is not described; known: {', '.join(_BUILDERS)}")
        for key in ("source_type", "expert_source_type"):
            value = getattr(self, key)
            if value and value not in SOURCE_TYPES:
                raise bad(f"{key} {value!r} is not one of {', '.join(SOURCE_TYPES)}")
        for key, (most, why) in _MOST.items():
            value = getattr(self, key)
            least = 0 if key in _OPTIONAL_INTS else 1
            if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
                raise bad(f"{key} must be an integer in {least}..{most:,} ({why}), not {value!r}")
        for key in ("rope_freq_base", "rms_norm_eps", "expert_weights_scale"):
            value = getattr(self, key)
            unset = key == "expert_weights_scale" and value == 0  # 0: no key written
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not (unset or 0 < value <= _FLOAT32_MAX):
                raise bad(f"{key} must be a positive number (a GGUF FLOAT32 key), not {value!r}")
        if self.expert_gating not in _GATING:
            raise bad(f"expert_gating {self.expert_gating!r} is not one of {', '.join(g for g in _GATING if g)}")
        unused = [
            f.name
            for f in fields(self)
            if f.name in _FAMILY_FIELDS and f.name not in _USES[self.family] and getattr(self, f.name) != f.default
        ]
        if unused:
            raise bad(f"family {self.family!r} does not use {', '.join(unused)}")
        if self.n_head % self.n_head_kv:
            raise bad(
                f"n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv}: every KV head serves "
                "a whole group of query heads (ggml's matrix product broadcasts only whole groups)"
            )
        if self.family in _MOE_FAMILIES:
            if not self.n_expert or not self.n_ff_expert or not 1 <= self.n_expert_used <= self.n_expert:
                raise bad("a mixture of experts needs n_expert, n_ff_expert and 1 <= n_expert_used <= n_expert")
            if self.n_layer_dense_lead >= self.n_layer:
                raise bad(f"n_layer_dense_lead {self.n_layer_dense_lead} leaves no MoE block of {self.n_layer}")
            if self.n_expert_groups and (
                self.n_expert % self.n_expert_groups or not 0 < self.n_expert_groups_used < self.n_expert_groups
            ):
                raise bad("n_expert_groups must divide n_expert, with 0 < n_expert_groups_used < n_expert_groups")
        if self.n_layer + self.n_layer_nextn > LLAMA_MAX_LAYERS:
            raise bad(f"n_layer + n_layer_nextn must be at most {LLAMA_MAX_LAYERS} (llama.cpp's LLAMA_MAX_LAYERS)")
        if self.rope_dim > self.head_dim or self.rope_dim % 2:
            raise bad(f"rope_dim {self.rope_dim} must be even and at most head_dim {self.head_dim}")
        if self.family == "deepseek2" and (not self.kv_lora_rank or not self.rope_dim or not self.v_head_dim):
            raise bad("multi-head latent attention needs kv_lora_rank, rope_dim and v_head_dim")

    @property
    def rot(self) -> int:
        """Rotated dimensions per head (the converter's rope.dimension_count)."""
        return self.rope_dim or self.head_dim

    @property
    def expert_type(self) -> str:
        return self.expert_source_type or self.source_type


# What the converter writes matrices in (convert_hf_to_gguf.py --outtype): the sizes module quantizes from there.
# MXFP4 only as expert_source_type: gpt-oss's checkpoint ships its experts so and the converter repacks them.
SOURCE_TYPES = ("BF16", "F16", "F32", "MXFP4")
_UINT32 = 2**32 - 1
_FLOAT32_MAX = 3.4028234663852886e38
LLAMA_MAX_LAYERS = 512  # llama.cpp's src/llama-hparams.h: per-layer arrays hold this many
LLAMA_MAX_EXPERTS = 512  # src/llama-hparams.h: load_hparams asserts n_expert <= this
# every integer a spec holds, its largest value and why: each is written as a UINT32 key of the header
_UINT32_KEY = (_UINT32, "a GGUF UINT32 key")
_LAYERS = (LLAMA_MAX_LAYERS, "llama.cpp's LLAMA_MAX_LAYERS")
_EXPERTS = (LLAMA_MAX_EXPERTS, "llama.cpp's LLAMA_MAX_EXPERTS")
_MOST = {
    "n_embd": _UINT32_KEY,
    "n_layer": _LAYERS,
    "n_head": _UINT32_KEY,
    "n_head_kv": _UINT32_KEY,
    "head_dim": _UINT32_KEY,
    "n_ff": _UINT32_KEY,
    "n_vocab": _UINT32_KEY,
    "context_length": _UINT32_KEY,
    "n_expert": _EXPERTS,
    "n_expert_used": _EXPERTS,
    "n_ff_expert": _UINT32_KEY,
    "n_expert_shared": _UINT32_KEY,
    "n_layer_dense_lead": _LAYERS,
    "moe_layer_step": _LAYERS,
    "n_layer_nextn": _LAYERS,
    "n_expert_groups": _EXPERTS,
    "n_expert_groups_used": _EXPERTS,
    "rope_dim": _UINT32_KEY,
    "v_head_dim": _UINT32_KEY,
    "q_lora_rank": _UINT32_KEY,
    "kv_lora_rank": _UINT32_KEY,
    "sliding_window": _UINT32_KEY,
}
_OPTIONAL_INTS = frozenset(_MOST) - {
    "n_embd",
    "n_layer",
    "n_head",
    "n_head_kv",
    "head_dim",
    "n_ff",
    "n_vocab",
    "context_length",
    "moe_layer_step",
}
# llama_expert_gating_func_type (src/llama-hparams.h), as the converter writes it from scoring_func
_GATING = {"": None, "softmax": 1, "sigmoid": 2}
_MOE = frozenset(
    {"n_expert", "n_expert_used", "n_ff_expert", "expert_gating", "expert_weights_scale", "expert_weights_norm"}
    | {"expert_source_type"}
)
# the optional fields each family reads; any other one set in a spec is refused (it would be silently ignored)
_USES: dict[str, frozenset[str]] = {
    "llama": frozenset({"rope_freqs", "tied_output"}),
    "qwen3moe": _MOE | {"qk_norm", "tied_output"},
    "gpt-oss": _MOE | {"sliding_window", "attention_bias"},
    "deepseek2": _MOE
    | {"n_expert_shared", "n_layer_dense_lead", "n_expert_groups", "n_expert_groups_used"}
    | {"rope_dim", "v_head_dim", "q_lora_rank", "kv_lora_rank"},
    "glm4moe": _MOE
    | {"n_expert_shared", "n_layer_dense_lead", "n_layer_nextn", "rope_dim", "attention_bias", "qk_norm"},
    "llama4": _MOE | {"moe_layer_step", "rope_freqs", "tied_output"},
}
_FAMILY_FIELDS = frozenset().union(*_USES.values()) | {
    "n_expert_shared",
    "n_layer_dense_lead",
    "moe_layer_step",
    "n_layer_nextn",
    "n_expert_groups",
    "n_expert_groups_used",
    "rope_dim",
    "v_head_dim",
    "q_lora_rank",
    "kv_lora_rank",
    "sliding_window",
    "attention_bias",
    "qk_norm",
}
_MOE_FAMILIES = frozenset(f for f, uses in _USES.items() if "n_expert" in uses)

_Tensors = list[tuple[str, tuple[int, ...], int]]
_F32 = int(T.F32)


def _ends(s: ArchSpec, wtype: int) -> tuple[_Tensors, _Tensors]:
    """token_embd first; output_norm and (untied) output last, as every converter here writes them."""
    head = [("token_embd.weight", (s.n_embd, s.n_vocab), wtype)]
    if s.rope_freqs:
        head.append(("rope_freqs.weight", (s.head_dim // 2,), _F32))
    tail = [("output_norm.weight", (s.n_embd,), _F32)]
    if not s.tied_output:
        tail.append(("output.weight", (s.n_embd, s.n_vocab), wtype))
    return head, tail


def _attention(s: ArchSpec, b: str, wtype: int) -> _Tensors:
    """Grouped-query attention: q, k, v, output (biases on q/k/v where the config says attention_bias)."""
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out = [
        (b + "attn_q.weight", (s.n_embd, q), wtype),
        (b + "attn_k.weight", (s.n_embd, kv), wtype),
        (b + "attn_v.weight", (s.n_embd, kv), wtype),
        (b + "attn_output.weight", (q, s.n_embd), wtype),
    ]
    if s.attention_bias:  # the converter writes every bias in F32 (names not ending in .weight)
        out += [(b + "attn_q.bias", (q,), _F32), (b + "attn_k.bias", (kv,), _F32), (b + "attn_v.bias", (kv,), _F32)]
    if s.qk_norm:
        out += [(b + "attn_q_norm.weight", (s.head_dim,), _F32), (b + "attn_k_norm.weight", (s.head_dim,), _F32)]
    return out


def _dense_ffn(s: ArchSpec, b: str, wtype: int) -> _Tensors:
    return [
        (b + "ffn_gate.weight", (s.n_embd, s.n_ff), wtype),
        (b + "ffn_down.weight", (s.n_ff, s.n_embd), wtype),
        (b + "ffn_up.weight", (s.n_embd, s.n_ff), wtype),
    ]


def _experts(s: ArchSpec, b: str) -> _Tensors:
    """The router (always F32 in the converter: FFN_GATE_INP) and the experts stacked as 3-d tensors."""
    etype = ggml_types.type_by_name(s.expert_type)
    return [
        (b + "ffn_gate_inp.weight", (s.n_embd, s.n_expert), _F32),
        (b + "ffn_gate_exps.weight", (s.n_embd, s.n_ff_expert, s.n_expert), etype),
        (b + "ffn_down_exps.weight", (s.n_ff_expert, s.n_embd, s.n_expert), etype),
        (b + "ffn_up_exps.weight", (s.n_embd, s.n_ff_expert, s.n_expert), etype),
    ]


def _shared_expert(s: ArchSpec, b: str, wtype: int, n_ff: int) -> _Tensors:
    return [
        (b + "ffn_gate_shexp.weight", (s.n_embd, n_ff), wtype),
        (b + "ffn_down_shexp.weight", (n_ff, s.n_embd), wtype),
        (b + "ffn_up_shexp.weight", (s.n_embd, n_ff), wtype),
    ]


def _llama_tensors(s: ArchSpec, wtype: int) -> _Tensors:
    """Names and ggml-order shapes as convert_hf_to_gguf.py writes a LlamaForCausalLM."""
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    head, out = _ends(s, wtype)
    for i in range(s.n_layer):
        b = f"blk.{i}."
        head += [
            (b + "attn_norm.weight", (s.n_embd,), _F32),
            (b + "ffn_down.weight", (s.n_ff, s.n_embd), wtype),
            (b + "ffn_gate.weight", (s.n_embd, s.n_ff), wtype),
            (b + "ffn_up.weight", (s.n_embd, s.n_ff), wtype),
            (b + "ffn_norm.weight", (s.n_embd,), _F32),
            (b + "attn_k.weight", (s.n_embd, kv), wtype),
            (b + "attn_output.weight", (q, s.n_embd), wtype),
            (b + "attn_q.weight", (s.n_embd, q), wtype),
            (b + "attn_v.weight", (s.n_embd, kv), wtype),
        ]
    return head + out


def _qwen3moe_tensors(s: ArchSpec, wtype: int) -> _Tensors:
    """Qwen3MoeForCausalLM (conversion/qwen.py Qwen3MoeModel; src/models/qwen3moe.cpp): every block MoE,
    per-head Q/K norms, no shared expert."""
    head, tail = _ends(s, wtype)
    for i in range(s.n_layer):
        b = f"blk.{i}."
        head += [(b + "attn_norm.weight", (s.n_embd,), _F32), *_attention(s, b, wtype)]
        head += [(b + "ffn_norm.weight", (s.n_embd,), _F32), *_experts(s, b)]
    return head + tail


def _gpt_oss_tensors(s: ArchSpec, wtype: int) -> _Tensors:
    """GptOssForCausalLM (conversion/gpt_oss.py; src/models/openai-moe.cpp): biases everywhere, attention
    sinks, a post-attention norm in place of ffn_norm, experts repacked from the checkpoint's MXFP4 blocks
    (gate_up split into gate and up), their biases [n_ff_expert or n_embd, n_expert] in F32."""
    head, tail = _ends(s, wtype)
    for i in range(s.n_layer):
        b = f"blk.{i}."
        head += [
            (b + "attn_norm.weight", (s.n_embd,), _F32),
            (b + "post_attention_norm.weight", (s.n_embd,), _F32),
            *_attention(s, b, wtype),
            (b + "attn_output.bias", (s.n_embd,), _F32),
            (b + "attn_sinks.weight", (s.n_head,), _F32),
            *_experts(s, b),
            (b + "ffn_gate_inp.bias", (s.n_expert,), _F32),
            (b + "ffn_gate_exps.bias", (s.n_ff_expert, s.n_expert), _F32),
            (b + "ffn_down_exps.bias", (s.n_embd, s.n_expert), _F32),
            (b + "ffn_up_exps.bias", (s.n_ff_expert, s.n_expert), _F32),
        ]
    return head + tail


def _deepseek2_tensors(s: ArchSpec, wtype: int) -> _Tensors:
    """DeepseekV3ForCausalLM (conversion/deepseek.py DeepseekV2Model; src/models/deepseek2.cpp): multi-head
    latent attention with kv_b_proj split into attn_k_b (transposed) and attn_v_b for the absorbed form,
    n_layer_dense_lead dense blocks, then routed experts with a score-correction bias (exp_probs_b) and
    shared experts. The converter drops the checkpoint's MTP block (skip_mtp): 61 blocks for V3/R1."""
    head, tail = _ends(s, wtype)
    nope = s.head_dim - s.rot
    for i in range(s.n_layer):
        b = f"blk.{i}."
        head.append((b + "attn_norm.weight", (s.n_embd,), _F32))
        if s.q_lora_rank:
            head += [
                (b + "attn_q_a_norm.weight", (s.q_lora_rank,), _F32),
                (b + "attn_q_a.weight", (s.n_embd, s.q_lora_rank), wtype),
                (b + "attn_q_b.weight", (s.q_lora_rank, s.n_head * s.head_dim), wtype),
            ]
        else:
            head.append((b + "attn_q.weight", (s.n_embd, s.n_head * s.head_dim), wtype))
        head += [
            (b + "attn_kv_a_norm.weight", (s.kv_lora_rank,), _F32),
            (b + "attn_kv_a_mqa.weight", (s.n_embd, s.kv_lora_rank + s.rot), wtype),
            (b + "attn_k_b.weight", (nope, s.kv_lora_rank, s.n_head), wtype),
            (b + "attn_v_b.weight", (s.kv_lora_rank, s.v_head_dim, s.n_head), wtype),
            (b + "attn_output.weight", (s.n_head * s.v_head_dim, s.n_embd), wtype),
            (b + "ffn_norm.weight", (s.n_embd,), _F32),
        ]
        if i < s.n_layer_dense_lead:
            head += _dense_ffn(s, b, wtype)
        else:
            head += [*_experts(s, b), (b + "exp_probs_b.bias", (s.n_expert,), _F32)]
            head += _shared_expert(s, b, wtype, s.n_ff_expert * s.n_expert_shared)
    return head + tail


def _glm4moe_tensors(s: ArchSpec, wtype: int) -> _Tensors:
    """Glm4MoeForCausalLM (conversion/glm.py Glm4MoeModel; src/models/glm4-moe.cpp): biased q/k/v, a
    post-attention norm before the FFN, leading dense blocks, routed experts with exp_probs_b and shared
    experts. The converter keeps the MTP block(s) unless --no-mtp: appended after the main stack, each a
    whole MoE block plus its nextn tensors (a real GLM-4.5-Air GGUF: 47 blocks, 803 tensors)."""
    head, tail = _ends(s, wtype)
    for i in range(s.n_layer + s.n_layer_nextn):
        b = f"blk.{i}."
        head += [
            (b + "attn_norm.weight", (s.n_embd,), _F32),
            *_attention(s, b, wtype),
            (b + "post_attention_norm.weight", (s.n_embd,), _F32),
        ]
        if i < s.n_layer_dense_lead:
            head += _dense_ffn(s, b, wtype)
        else:
            head += [*_experts(s, b), (b + "exp_probs_b.bias", (s.n_expert,), _F32)]
            if s.n_expert_shared:
                head += _shared_expert(s, b, wtype, s.n_ff_expert * s.n_expert_shared)
        if i >= s.n_layer:
            head += [
                (b + "nextn.eh_proj.weight", (2 * s.n_embd, s.n_embd), wtype),
                (b + "nextn.embed_tokens.weight", (s.n_embd, s.n_vocab), wtype),
                (b + "nextn.enorm.weight", (s.n_embd,), _F32),
                (b + "nextn.hnorm.weight", (s.n_embd,), _F32),
                (b + "nextn.shared_head_head.weight", (s.n_embd, s.n_vocab), wtype),
                (b + "nextn.shared_head_norm.weight", (s.n_embd,), _F32),
            ]
    return head + tail


def _llama4_tensors(s: ArchSpec, wtype: int) -> _Tensors:
    """Llama4ForConditionalGeneration's text model (conversion/llama.py Llama4Model; src/models/llama4.cpp):
    llama attention (its QK norm has no weights), MoE every moe_layer_step blocks with one shared expert as
    wide as a routed one, dense FFN (intermediate_size_mlp) elsewhere, llama3 rope factors. The vision tower
    goes to a separate mmproj file."""
    head, tail = _ends(s, wtype)
    for i in range(s.n_layer):
        b = f"blk.{i}."
        head += [(b + "attn_norm.weight", (s.n_embd,), _F32), *_attention(s, b, wtype)]
        head.append((b + "ffn_norm.weight", (s.n_embd,), _F32))
        if (i + 1) % s.moe_layer_step == 0:
            head += [*_experts(s, b), *_shared_expert(s, b, wtype, s.n_ff_expert)]
        else:
            head += _dense_ffn(s, b, wtype)
    return head + tail


_BUILDERS: dict[str, Callable[[ArchSpec, int], _Tensors]] = {
    "llama": _llama_tensors,
    "qwen3moe": _qwen3moe_tensors,
    "gpt-oss": _gpt_oss_tensors,
    "deepseek2": _deepseek2_tensors,
    "glm4moe": _glm4moe_tensors,
    "llama4": _llama4_tensors,
}
_F32_STRUCT = struct.Struct("<f")


def _float32(value: float) -> float:
    """``value`` as a FLOAT32 key holds it (1e-5 reads back as 9.99999974738e-06 from any file)."""
    return _F32_STRUCT.unpack(_F32_STRUCT.pack(value))[0]


def _metadata(spec: ArchSpec) -> list[tuple[str, V, object]]:
    """The key/values the converter writes for ``spec`` that llama.cpp's load_hparams reads, in the
    converter's order: TextModel.set_gguf_parameters (conversion/base.py), then the family's additions.
    llama.cpp requires block_count, context_length, embedding_length, the RMS epsilon and, per family,
    the expert width (all MoE families here), the sliding window (gpt-oss), interleave_moe_layer_step
    (llama4), expert_shared_count and the LoRA ranks (deepseek2), expert_shared_count (glm4moe)."""
    s, arch = spec, spec.family
    kvs: list[tuple[str, V, object]] = [
        (Keys.General.ARCHITECTURE, V.STRING, arch),
        (Keys.General.NAME, V.STRING, s.name),
        (Keys.LLM.BLOCK_COUNT.format(arch=arch), V.UINT32, s.n_layer + s.n_layer_nextn),
        (Keys.LLM.CONTEXT_LENGTH.format(arch=arch), V.UINT32, s.context_length),
        (Keys.LLM.EMBEDDING_LENGTH.format(arch=arch), V.UINT32, s.n_embd),
        (Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch), V.UINT32, s.n_ff),
        (Keys.Attention.HEAD_COUNT.format(arch=arch), V.UINT32, s.n_head),
        # deepseek2: MLA is written as MQA, one KV head of kv_lora_rank + rope dims (DeepseekV2Model)
        (Keys.Attention.HEAD_COUNT_KV.format(arch=arch), V.UINT32, 1 if arch == "deepseek2" else s.n_head_kv),
        (Keys.Rope.FREQ_BASE.format(arch=arch), V.FLOAT32, _float32(s.rope_freq_base)),
        (Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch), V.FLOAT32, _float32(s.rms_norm_eps)),
    ]
    if s.n_expert:
        kvs += [
            (Keys.LLM.EXPERT_COUNT.format(arch=arch), V.UINT32, s.n_expert),
            (Keys.LLM.EXPERT_USED_COUNT.format(arch=arch), V.UINT32, s.n_expert_used),
        ]
    if s.n_expert_groups:
        kvs += [
            (Keys.LLM.EXPERT_GROUP_COUNT.format(arch=arch), V.UINT32, s.n_expert_groups),
            (Keys.LLM.EXPERT_GROUP_USED_COUNT.format(arch=arch), V.UINT32, s.n_expert_groups_used),
        ]
    if s.expert_gating and arch != "glm4moe":  # glm4moe writes its own, later
        kvs.append((Keys.LLM.EXPERT_GATING_FUNC.format(arch=arch), V.UINT32, _GATING[s.expert_gating]))
    if arch == "deepseek2":
        kv_len, v_len = s.kv_lora_rank + s.rot, s.kv_lora_rank  # the latent K row and V, as MQA
    elif s.head_dim * s.n_head != s.n_embd or arch != "llama":
        kv_len = v_len = s.head_dim  # written when config.json has head_dim (Llama 3.1's has none)
    else:
        kv_len = v_len = 0  # llama.cpp's default, n_embd / n_head, is right
    if kv_len:
        kvs += [
            (Keys.Attention.KEY_LENGTH.format(arch=arch), V.UINT32, kv_len),
            (Keys.Attention.VALUE_LENGTH.format(arch=arch), V.UINT32, v_len),
        ]
    kvs.append((Keys.General.FILE_TYPE, V.UINT32, int(ggml_types.file_type_by_name(s.source_type))))
    if arch in ("llama", "llama4"):
        kvs.append((Keys.LLM.VOCAB_SIZE.format(arch=arch), V.UINT32, s.n_vocab))
        # llama.cpp checks n_rot == head size for llama; the converter writes it from head_dim or n_embd / n_head
        kvs.append((Keys.Rope.DIMENSION_COUNT.format(arch=arch), V.UINT32, s.rot))
    if arch == "llama4":
        kvs.append((Keys.LLM.INTERLEAVE_MOE_LAYER_STEP.format(arch=arch), V.UINT32, s.moe_layer_step))
    if arch in ("qwen3moe", "gpt-oss", "llama4"):
        kvs.append((Keys.LLM.EXPERT_FEED_FORWARD_LENGTH.format(arch=arch), V.UINT32, s.n_ff_expert))
    if arch == "gpt-oss":
        kvs.insert(-1, (Keys.Attention.SLIDING_WINDOW.format(arch=arch), V.UINT32, s.sliding_window))
    if arch == "deepseek2":
        kvs += [
            (Keys.LLM.LEADING_DENSE_BLOCK_COUNT.format(arch=arch), V.UINT32, s.n_layer_dense_lead),
            (Keys.LLM.VOCAB_SIZE.format(arch=arch), V.UINT32, s.n_vocab),
        ]
        if s.q_lora_rank:
            kvs.append((Keys.Attention.Q_LORA_RANK.format(arch=arch), V.UINT32, s.q_lora_rank))
        kvs += [
            (Keys.Attention.KV_LORA_RANK.format(arch=arch), V.UINT32, s.kv_lora_rank),
            (Keys.Attention.KEY_LENGTH_MLA.format(arch=arch), V.UINT32, s.head_dim),
            (Keys.Attention.VALUE_LENGTH_MLA.format(arch=arch), V.UINT32, s.v_head_dim),
            (Keys.LLM.EXPERT_FEED_FORWARD_LENGTH.format(arch=arch), V.UINT32, s.n_ff_expert),
            (Keys.LLM.EXPERT_SHARED_COUNT.format(arch=arch), V.UINT32, s.n_expert_shared),
        ]
    if arch == "glm4moe":
        kvs += [
            (Keys.Rope.DIMENSION_COUNT.format(arch=arch), V.UINT32, s.rot),
            (Keys.LLM.EXPERT_FEED_FORWARD_LENGTH.format(arch=arch), V.UINT32, s.n_ff_expert),
            (Keys.LLM.EXPERT_SHARED_COUNT.format(arch=arch), V.UINT32, s.n_expert_shared),
            (Keys.LLM.LEADING_DENSE_BLOCK_COUNT.format(arch=arch), V.UINT32, s.n_layer_dense_lead),
            (Keys.LLM.EXPERT_GATING_FUNC.format(arch=arch), V.UINT32, _GATING["sigmoid"]),
        ]
    if arch in ("deepseek2", "glm4moe"):
        if s.expert_weights_scale:
            kvs.append((Keys.LLM.EXPERT_WEIGHTS_SCALE.format(arch=arch), V.FLOAT32, _float32(s.expert_weights_scale)))
        if s.expert_weights_norm:
            kvs.append((Keys.LLM.EXPERT_WEIGHTS_NORM.format(arch=arch), V.BOOL, True))
    if s.n_layer_nextn:
        kvs.append((Keys.LLM.NEXTN_PREDICT_LAYERS.format(arch=arch), V.UINT32, s.n_layer_nextn))
    if arch == "deepseek2":
        kvs.append((Keys.Rope.DIMENSION_COUNT.format(arch=arch), V.UINT32, s.rot))
    return kvs


def build_header(spec: ArchSpec) -> ModelHeader:
    """The header of the model the converter would produce from ``spec``, at its source precision."""
    builder = _BUILDERS[spec.family]  # ArchSpec checked both on creation
    wtype = ggml_types.type_by_name(spec.source_type)
    tensors = []
    offset = 0
    for name, shape, ttype in builder(spec, wtype):
        n_bytes = ggml_types.tensor_nbytes(shape, ttype)
        tensors.append(TensorInfo(name, shape, ttype, offset, n_bytes))
        offset += ggml_types.pad(n_bytes, 32)
    metadata = {k: KeyValue(k, t, 0, v) for k, t, v in _metadata(spec)}
    virtual = GGUFFile(
        name=f"architecture:{spec.name}",
        version=3,
        file_bytes=offset,
        header_bytes=0,
        alignment=32,
        data_offset=0,
        data_bytes=offset,
        metadata=metadata,
        tensors=tuple(tensors),
    )
    return model_header([virtual])
