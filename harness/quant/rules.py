"""llama.cpp's choice of ggml type for every tensor of a model quantized to a given file type.

A line-by-line port of ``src/llama-quant.cpp`` in the llama.cpp that llama-cpp-python 0.3.36
vendors: ``tensor_allows_quantization`` (which tensors are quantized at all),
``tensor_get_category``, ``llama_ftype_get_default_type``, ``llama_tensor_get_type_impl`` (the
mixture rules of Q4_K_M and friends) and ``tensor_type_fallback`` (rows that do not hold whole
blocks). Only the quantizer's defaults are modelled: no --tensor-type, --output-tensor-type,
--token-embedding-type, --pure, --prune-layers or --keep-split.

Two facts of the C++ that a reader would not guess:

- Tensors are visited in the order of ``llama_model_loader::weights_map``: by block index
  (tensors outside ``blk.N.`` first), then by name. Counters such as ``i_attention_wv`` and
  ``i_ffn_down`` advance in that order, and rules like "the first n/8 ffn_down" depend on them.
- A model without ``output.weight`` has tied embeddings: its ``token_embd`` gets the output rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

from harness.errors import QuantRuleError
from harness.gguf.format import GGMLQuantizationType as T
from harness.gguf.format import LlamaFileType as F
from harness.gguf.ggml_types import QUANT_SIZES, file_type_by_name, file_type_name
from harness.gguf.roles import has_tied_output


class _Tensor(Protocol):
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length (ne0)
    ggml_type: int


class _Arch(Protocol):
    name: str | None
    n_layer: int
    n_head: tuple[int, ...] | None
    n_head_kv: tuple[int, ...] | None
    n_expert: int


# -- file types ----------------------------------------------------------------------------------

# llama_ftype_get_default_type: the type a file type gives every quantizable tensor before the
# mixture rules. NVFP4 (39) has no entry there, so llama.cpp cannot produce it; Q2_0 (41) has one
# but the gguf package (0.19.0) knows neither the file type nor the ggml type.
DEFAULT_TYPE: dict[F, T] = {
    F.ALL_F32: T.F32,
    F.MOSTLY_F16: T.F16,
    F.MOSTLY_BF16: T.BF16,
    F.MOSTLY_Q8_0: T.Q8_0,
    F.MOSTLY_Q4_0: T.Q4_0,
    F.MOSTLY_Q4_1: T.Q4_1,
    F.MOSTLY_Q5_0: T.Q5_0,
    F.MOSTLY_Q5_1: T.Q5_1,
    F.MOSTLY_Q1_0: T.Q1_0,
    F.MOSTLY_MXFP4_MOE: T.MXFP4,
    F.MOSTLY_Q2_K_S: T.Q2_K,
    F.MOSTLY_Q2_K: T.Q2_K,
    F.MOSTLY_IQ3_XS: T.IQ3_S,
    F.MOSTLY_Q3_K_S: T.Q3_K,
    F.MOSTLY_Q3_K_M: T.Q3_K,
    F.MOSTLY_Q3_K_L: T.Q3_K,
    F.MOSTLY_Q4_K_S: T.Q4_K,
    F.MOSTLY_Q4_K_M: T.Q4_K,
    F.MOSTLY_Q5_K_S: T.Q5_K,
    F.MOSTLY_Q5_K_M: T.Q5_K,
    F.MOSTLY_Q6_K: T.Q6_K,
    F.MOSTLY_TQ1_0: T.TQ1_0,
    F.MOSTLY_TQ2_0: T.TQ2_0,
    F.MOSTLY_IQ2_XXS: T.IQ2_XXS,
    F.MOSTLY_IQ2_XS: T.IQ2_XS,
    F.MOSTLY_IQ2_S: T.IQ2_XS,  # sic: IQ2_S files are IQ2_XS at heart
    F.MOSTLY_IQ2_M: T.IQ2_S,
    F.MOSTLY_IQ3_XXS: T.IQ3_XXS,
    F.MOSTLY_IQ1_S: T.IQ1_S,
    F.MOSTLY_IQ1_M: T.IQ1_M,
    F.MOSTLY_IQ4_NL: T.IQ4_NL,
    F.MOSTLY_IQ4_XS: T.IQ4_XS,
    F.MOSTLY_IQ3_S: T.IQ3_S,
    F.MOSTLY_IQ3_M: T.IQ3_S,
}

FILE_TYPE_NAMES: tuple[str, ...] = tuple(file_type_name(ft) for ft in DEFAULT_TYPE)


def file_type(name: str) -> F:
    """A llama.cpp file type by its quantize name: 'Q4_K_M', 'IQ2_XXS', 'F16', 'F32'."""
    ft = file_type_by_name(name)
    if ft is None:
        raise QuantRuleError(f"unknown file type {name!r}; known file types: " + ", ".join(FILE_TYPE_NAMES))
    if ft not in DEFAULT_TYPE:
        raise QuantRuleError(
            f"llama.cpp cannot quantize to {name!r} (it has no default tensor type for it); "
            "known file types: " + ", ".join(FILE_TYPE_NAMES)
        )
    return ft


# The very-low-bit file types that share one block of rules in llama_tensor_get_type_impl.
_IQ2_GROUP = {F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M}
# Files whose output tensor (and tied token_embd) becomes Q5_K rather than Q6_K.
_OUTPUT_Q5_K = _IQ2_GROUP | {F.MOSTLY_IQ3_XXS}
# The token_embd rule (untied embeddings only): file type -> type.
_TOKEN_EMBD_TYPE: dict[F, T] = {
    F.MOSTLY_IQ2_XXS: T.Q2_K,
    F.MOSTLY_IQ2_XS: T.Q2_K,
    F.MOSTLY_IQ1_S: T.Q2_K,
    F.MOSTLY_IQ1_M: T.Q2_K,
    F.MOSTLY_IQ2_S: T.IQ3_S,
    F.MOSTLY_IQ2_M: T.IQ3_S,
    F.MOSTLY_IQ3_XXS: T.IQ3_S,
    F.MOSTLY_TQ1_0: T.Q4_K,
    F.MOSTLY_TQ2_0: T.Q4_K,
}
# attn_output of an 8-expert model becomes Q5_K in these files (non-Falcon).
_ATTN_OUTPUT_8_EXPERT_Q5_K = {
    F.MOSTLY_Q2_K,
    F.MOSTLY_IQ3_XS,
    F.MOSTLY_IQ3_XXS,
    F.MOSTLY_Q3_K_S,
    F.MOSTLY_Q3_K_M,
    F.MOSTLY_IQ4_NL,
    F.MOSTLY_Q4_K_S,
    F.MOSTLY_Q4_K_M,
    F.MOSTLY_IQ3_S,
    F.MOSTLY_IQ3_M,
    F.MOSTLY_IQ4_XS,
}
# attn_output of a dense non-Falcon model.
_ATTN_OUTPUT_TYPE: dict[F, T] = {
    F.MOSTLY_Q2_K: T.Q3_K,
    F.MOSTLY_IQ3_XXS: T.IQ3_S,
    F.MOSTLY_Q3_K_M: T.Q4_K,
    F.MOSTLY_Q3_K_L: T.Q5_K,
    F.MOSTLY_IQ3_M: T.Q4_K,
}

# tensor_type_fallback: a row that does not hold whole blocks of the chosen type demotes it.
_FALLBACK: dict[T, T] = {
    T.IQ1_S: T.IQ4_NL,
    T.IQ1_M: T.IQ4_NL,
    T.IQ2_XXS: T.IQ4_NL,
    T.IQ2_XS: T.IQ4_NL,
    T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL,
    T.IQ3_S: T.IQ4_NL,
    T.IQ4_XS: T.IQ4_NL,
    T.Q2_K: T.Q4_0,
    T.Q3_K: T.Q4_0,
    T.TQ1_0: T.Q4_0,
    T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
}

# tensor_requires_imatrix: these target types refuse to run without an importance matrix
# (Q2_K only inside a Q2_K_S file); token_embd and output.weight are exempt.
_NEEDS_IMATRIX = {T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S}


def _block(ggml_type: int) -> int:
    return QUANT_SIZES[ggml_type][0]


def _is_quantized(ggml_type: int) -> bool:
    """ggml_is_quantized: every block type; F32/F16/BF16 and the integer types are not."""
    return _block(ggml_type) > 1


# -- which tensors are quantized ----------------------------------------------------------------

# tensor_allows_quantization: a "...weight" tensor of 2 or 3 dims is quantized unless its name
# contains one of these (norms, MoE routers, tiny convolutions, RWKV's small mixes, T5 bias,
# multimodal position/patch tensors, audio codebooks) ...
_KEEP_SUBSTRINGS: tuple[str, ...] = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
# ... or is one of these (BERT's positional embeddings and token types) ...
_KEEP_NAMES = {"position_embd.weight", "token_types.weight"}
# ... or, in glm5-next, contains one of these.
_KEEP_SUBSTRINGS_GLM5_NEXT: tuple[str, ...] = (
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
)
# glm5-next keeps these at Q8_0 or better.
_Q8_0_FLOOR_GLM5_NEXT = ("attn_q_a", "attn_q_b", "nextn.eh_proj")


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of 1 do not count."""
    for i in range(len(shape) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1


def allows_quantization(name: str, shape: tuple[int, ...], arch_name: str | None) -> bool:
    if _n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if name in _KEEP_NAMES or any(s in name for s in _KEEP_SUBSTRINGS):
        return False
    if arch_name == "glm5-next" and any(s in name for s in _KEEP_SUBSTRINGS_GLM5_NEXT):
        return False
    return True


# -- categories ----------------------------------------------------------------------------------


class Category(Enum):
    TOKEN_EMBD = auto()
    ATTENTION_Q = auto()
    ATTENTION_V = auto()
    ATTENTION_K = auto()
    ATTENTION_QKV = auto()
    ATTENTION_KV_B = auto()
    ATTENTION_OUTPUT = auto()
    FFN_UP = auto()
    FFN_GATE = auto()
    FFN_DOWN = auto()
    OUTPUT = auto()
    OTHER = auto()


_CATEGORY_NAMES = {
    "output.weight": Category.OUTPUT,
    "token_embd.weight": Category.TOKEN_EMBD,
    "per_layer_token_embd.weight": Category.TOKEN_EMBD,
}
# tensor_get_category: the first substring found wins (so "ffn_gate_up_exps" is FFN_UP).
_CATEGORY_SUBSTRINGS: tuple[tuple[str, Category], ...] = (
    ("attn_qkv.weight", Category.ATTENTION_QKV),
    ("attn_kv_b.weight", Category.ATTENTION_KV_B),
    ("attn_v.weight", Category.ATTENTION_V),
    ("attn_k.weight", Category.ATTENTION_K),
    ("attn_q.weight", Category.ATTENTION_Q),
    ("attn_output.weight", Category.ATTENTION_OUTPUT),
    ("ffn_up", Category.FFN_UP),
    ("ffn_gate", Category.FFN_GATE),
    ("ffn_down", Category.FFN_DOWN),
)
# category_is_attn_v: fused qkv and MLA's kv_b follow the attn_v rules. (llama-quant.cpp also has
# an ATTENTION_QKV branch after the attn_v one; it can never run, so it is not ported.)
_ATTN_V_LIKE = {Category.ATTENTION_V, Category.ATTENTION_QKV, Category.ATTENTION_KV_B}


def category(name: str) -> Category:
    if name in _CATEGORY_NAMES:
        return _CATEGORY_NAMES[name]
    return next((c for s, c in _CATEGORY_SUBSTRINGS if s in name), Category.OTHER)


_BLOCK_PREFIX = re.compile(r"blk\.([+-]?\d+)")


def _block_index(name: str) -> int | None:
    """sscanf(name, "blk.%d.", ...) as llama.cpp does it."""
    m = _BLOCK_PREFIX.match(name)
    return int(m.group(1)) if m else None


def visit_order(names: Sequence[str]) -> list[int]:
    """Indices of ``names`` in llama_model_loader's weight_name_comparer order: block, then name.

    Names compare as byte strings (std::string's operator<)."""
    return sorted(
        range(len(names)), key=lambda i: (-1 if (b := _block_index(names[i])) is None else b, names[i].encode())
    )


# -- the rules ----------------------------------------------------------------------------------

# LLM_TYPE_70B, the one model size the rules care about (its attn_v gets more bits): the block
# count at which each architecture's loader (src/models/<arch>.cpp) names it; llama: below.
_TYPE_70B_LAYERS = {"qwen2": 80, "deci": 80, "olmo": 80, "jais2": 68}


def _is_70b(arch: _Arch) -> bool:
    if arch.name == "llama":
        # models/llama.cpp: 80 layers with GQA is 70B (without it, 65B); 8-expert models are not
        heads = arch.n_head[0] if arch.n_head else 0
        heads_kv = arch.n_head_kv[0] if arch.n_head_kv else heads
        return arch.n_expert != 8 and arch.n_layer == 80 and heads != heads_kv
    return _TYPE_70B_LAYERS.get(arch.name or "") == arch.n_layer


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    # the first and last eighth, and every third layer between (C integer division; the modulo
    # only runs when i_layer >= n_layers // 8, so Python's sign rules agree with C's)
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


@dataclass
class _State:
    """quantize_state_impl: the model facts and counters the rules read."""

    arch_name: str | None
    n_expert: int
    n_gqa: int
    is_70b: bool
    has_imatrix: bool
    has_tied_embeddings: bool
    n_attention_wv: int
    n_layer: int  # n_ffn_down = n_ffn_gate = n_ffn_up = hparams.n_layer_all
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0

    def layer_info(self, counter: int, name: str) -> int:
        """Layer of an ffn tensor: the counter, except in MoE models where experts are not
        consecutive and the block index is read from the name."""
        if max(1, self.n_expert) > 1:
            i_layer = _block_index(name)
            if i_layer is None:
                raise QuantRuleError(f"llama.cpp fails: cannot determine the layer of tensor {name}")
            if not 0 <= i_layer < self.n_layer:
                raise QuantRuleError(
                    f"llama.cpp fails: bad layer {i_layer} for tensor {name}, must be in [0, {self.n_layer})"
                )
            return i_layer
        return counter


def _mixture_type(qs: _State, new_type: T, name: str, shape: tuple[int, ...], ft: F, cat: Category) -> T:
    """llama_tensor_get_type_impl, branch for branch."""
    n_layer = qs.n_layer
    if qs.arch_name == "glm5-next" and any(s in name for s in _Q8_0_FLOOR_GLM5_NEXT):
        if new_type not in (T.F32, T.BF16, T.F16):
            return T.Q8_0

    if cat is Category.OUTPUT or (qs.has_tied_embeddings and cat is Category.TOKEN_EMBD):
        if ft is F.MOSTLY_MXFP4_MOE:
            return T.Q8_0
        if qs.arch_name == "falcon" or shape[0] % _block(new_type):
            return T.Q8_0
        if ft in _OUTPUT_Q5_K:
            return T.Q5_K
        return new_type if new_type is T.Q8_0 else T.Q6_K

    if ft is F.MOSTLY_MXFP4_MOE:
        # expert tensors (3-d) -> MXFP4, everything else -> Q8_0
        n_expert_dim = shape[2] if len(shape) > 2 else 1
        expert_role = cat in (Category.FFN_UP, Category.FFN_GATE, Category.FFN_DOWN)
        if n_expert_dim > 1 and (qs.arch_name != "bailingmoe3" or expert_role):
            return T.MXFP4
        return T.Q8_0

    if cat is Category.TOKEN_EMBD:
        return _TOKEN_EMBD_TYPE.get(ft, new_type)

    if ft in _IQ2_GROUP:
        low = T.IQ3_S if ft in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M) else T.Q2_K
        if cat in _ATTN_V_LIKE:
            new_type = T.Q4_K if qs.n_gqa >= 4 or qs.n_expert >= 4 else low
            qs.i_attention_wv += 1
        elif qs.n_expert == 8 and cat is Category.ATTENTION_K:
            new_type = T.Q4_K
        elif cat is Category.FFN_DOWN:
            if qs.i_ffn_down < n_layer // 8:  # the counter, even in MoE models
                new_type = low
            qs.i_ffn_down += 1
        elif cat is Category.ATTENTION_OUTPUT:
            if qs.n_expert == 8:
                new_type = T.Q5_K
            elif ft in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                new_type = T.IQ2_XXS
            elif ft in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M):
                new_type = T.IQ3_S
        return new_type

    if cat in _ATTN_V_LIKE:
        gqa4 = qs.n_gqa >= 4
        if ft is F.MOSTLY_Q2_K:
            new_type = T.Q4_K if gqa4 else T.Q3_K
        elif ft is F.MOSTLY_Q2_K_S and gqa4:
            new_type = T.Q4_K
        elif ft is F.MOSTLY_IQ3_XXS:
            new_type = T.Q4_K if gqa4 else T.IQ3_XXS if qs.has_imatrix else T.IQ3_S
        elif ft in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and gqa4 or ft is F.MOSTLY_IQ3_M:
            new_type = T.Q4_K
        elif ft is F.MOSTLY_Q3_K_M:
            new_type = T.Q5_K if qs.i_attention_wv < 2 else T.Q4_K
        elif ft is F.MOSTLY_Q3_K_L or ft in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and gqa4:
            new_type = T.Q5_K
        elif ft in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and _use_more_bits(qs.i_attention_wv, qs.n_attention_wv):
            new_type = T.Q6_K
        elif ft is F.MOSTLY_Q4_K_S and qs.i_attention_wv < 4:
            new_type = T.Q5_K
        if qs.is_70b and new_type in (T.Q3_K, T.Q4_K):
            # 8 heads share each attn_v: more bits cost little
            new_type = T.Q5_K
        if qs.n_expert == 8:
            new_type = T.Q8_0
        qs.i_attention_wv += 1
        return new_type

    if cat is Category.ATTENTION_K:
        if qs.n_expert == 8:
            return T.Q8_0
        return {F.MOSTLY_IQ3_XS: T.IQ3_XXS, F.MOSTLY_IQ3_XXS: T.IQ2_S}.get(ft, new_type)

    if cat is Category.ATTENTION_Q:
        return {F.MOSTLY_IQ3_XS: T.IQ3_XXS, F.MOSTLY_IQ3_XXS: T.IQ2_S}.get(ft, new_type)

    falcon = qs.arch_name == "falcon"
    if cat is Category.FFN_DOWN:
        i_layer = qs.layer_info(qs.i_ffn_down, name)
        first_eighth = i_layer < n_layer // 8
        if ft is F.MOSTLY_Q2_K:
            new_type = T.Q3_K
        elif ft is F.MOSTLY_Q2_K_S:
            if first_eighth:
                new_type = T.Q4_K
        elif ft is F.MOSTLY_IQ3_XXS and not qs.has_imatrix:
            new_type = T.Q4_K if first_eighth else T.Q3_K
        elif ft is F.MOSTLY_Q3_K_M:
            # sic: "arch != FALCON || use_more_bits" makes every non-Falcon layer Q4_K
            new_type = (
                T.Q5_K
                if i_layer < n_layer // 16
                else T.Q4_K
                if not falcon or _use_more_bits(i_layer, n_layer)
                else T.Q3_K
            )
        elif ft is F.MOSTLY_IQ3_M and (first_eighth or (qs.n_expert == 8 and _use_more_bits(i_layer, n_layer))):
            new_type = T.Q4_K
        elif ft is F.MOSTLY_Q3_K_L:
            new_type = T.Q4_K if falcon else T.Q5_K
        elif ft is F.MOSTLY_Q4_K_M:
            if falcon:
                new_type = T.Q6_K if i_layer < n_layer // 16 else T.Q5_K if _use_more_bits(i_layer, n_layer) else T.Q4_K
            elif _use_more_bits(i_layer, n_layer):
                new_type = T.Q6_K
        elif first_eighth and ft in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and not qs.has_imatrix:
            new_type = T.Q5_K
        elif ft is F.MOSTLY_Q5_K_M and _use_more_bits(i_layer, n_layer):
            new_type = T.Q6_K
        elif ft is F.MOSTLY_Q4_K_S and not falcon and first_eighth:
            new_type = T.Q5_K
        elif ft in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and qs.has_imatrix and first_eighth:
            # guard against the first ffn_down layers going astray, only with an imatrix
            new_type = T.Q4_1 if ft is F.MOSTLY_Q4_0 else T.Q5_1
        qs.i_ffn_down += 1
        return new_type

    if cat is Category.ATTENTION_OUTPUT:
        if falcon:
            return T.Q4_K if ft is F.MOSTLY_Q3_K_L else new_type
        if qs.n_expert == 8:
            return T.Q5_K if ft in _ATTN_OUTPUT_8_EXPERT_Q5_K else new_type
        return _ATTN_OUTPUT_TYPE.get(ft, new_type)

    if cat in (Category.FFN_GATE, Category.FFN_UP):
        counter = qs.i_ffn_gate if cat is Category.FFN_GATE else qs.i_ffn_up
        i_layer = qs.layer_info(counter, name)
        if ft is F.MOSTLY_IQ3_XS and n_layer // 8 <= i_layer < 7 * n_layer // 8:
            new_type = T.IQ3_XXS
        if cat is Category.FFN_GATE:
            qs.i_ffn_gate += 1
        else:
            qs.i_ffn_up += 1
        return new_type

    return new_type


def _fallback(name: str, ncols: int, target: T) -> tuple[T, bool]:
    """tensor_type_fallback: (type, whether it had to fall back)."""
    if ncols % _block(target) == 0:
        return target, False
    if target in _FALLBACK:
        result = _FALLBACK[target]
    elif _block(target) <= 32:
        result = target  # already a 32-block type: only F16 is left, below
    else:
        raise QuantRuleError(
            f"llama.cpp fails on tensor {name}: its rows of {ncols} are not a multiple of "
            f"{_block(target)} (required for {target.name}) and {target.name} has no fallback"
        )
    if ncols % _block(result):
        result = T.F16  # "must use F16 due to unusual shape"
    return result, True


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypePlan:
    """Per tensor, in the order given: the type llama.cpp writes and whether it fell back."""

    types: tuple[int, ...]
    fallback: tuple[bool, ...]  # the row length forced a demotion (llama.cpp's n_fallback)
    needs_imatrix: tuple[bool, ...]  # llama.cpp refuses this tensor without an importance matrix

    @property
    def n_fallback(self) -> int:
        return sum(self.fallback)


def plan(
    tensors: Sequence[_Tensor], arch: _Arch, ftype_name: str, has_imatrix: bool, check_imatrix: bool = True
) -> TypePlan:
    """The type llama.cpp's quantizer gives each tensor of a model quantized to ``ftype_name``.

    Tensors that llama.cpp does not quantize (1-d, norms, routers, ...) keep their ``ggml_type``;
    every other tensor's type depends only on names, shapes and the architecture, so the source
    may be F32, F16, BF16 or already quantized. Raises QuantRuleError where llama.cpp fails: a row
    no type fits, or (with ``check_imatrix``) a type that needs an importance matrix without one.
    """
    ft = file_type(ftype_name)
    default = DEFAULT_TYPE[ft]
    names = [t.name for t in tensors]
    cats = [category(n) for n in names]
    n_head = arch.n_head[0] if arch.n_head else 0
    n_head_kv = arch.n_head_kv[0] if arch.n_head_kv else n_head
    qs = _State(
        arch_name=arch.name,
        n_expert=arch.n_expert,
        n_gqa=n_head // n_head_kv if n_head_kv else 0,
        is_70b=_is_70b(arch),
        has_imatrix=has_imatrix,
        has_tied_embeddings=has_tied_output(names),
        n_attention_wv=sum(c in _ATTN_V_LIKE for c in cats),
        n_layer=arch.n_layer,
    )
    types: list[int] = [0] * len(tensors)
    fallback = [False] * len(tensors)
    needs = [False] * len(tensors)
    for i in visit_order(names):
        t = tensors[i]
        shape = tuple(t.shape)
        if not allows_quantization(t.name, shape, arch.name):
            types[i] = t.ggml_type
            continue
        new_type = default
        if _is_quantized(default):
            new_type = _mixture_type(qs, default, t.name, shape, ft, cats[i])
            new_type, fallback[i] = _fallback(t.name, shape[0], new_type)
        types[i] = int(new_type)
        exempt = cats[i] is Category.OUTPUT or t.name in ("token_embd.weight", "per_layer_token_embd.weight")
        needs[i] = not exempt and (new_type in _NEEDS_IMATRIX or (new_type is T.Q2_K and ft is F.MOSTLY_Q2_K_S))
        if needs[i] and check_imatrix and not has_imatrix:
            raise QuantRuleError(
                f"llama.cpp refuses {ftype_name} without an importance matrix: tensor "
                f"{t.name} would be {new_type.name}; compute one with llama-imatrix "
                "or predict with an imatrix"
            )
    return TypePlan(tuple(types), tuple(fallback), tuple(needs))


def plan_types(tensors: Sequence[_Tensor], arch: _Arch, ftype_name: str, has_imatrix: bool) -> list[int]:
    """The ggml type llama.cpp writes for each tensor, in the order given (see ``plan``)."""
    return list(plan(tensors, arch, ftype_name, has_imatrix).types)
