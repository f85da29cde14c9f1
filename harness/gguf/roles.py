"""Which of llama.cpp's offloadable layers each tensor is loaded with, which op uses it, and when the output
is tied.

llama.cpp gives every tensor kind a layer and an op (llama-arch.cpp LLM_TENSOR_INFOS) and loads it into
that layer's device context (llama-model.cpp load_tensors, llama-model-loader.cpp create_tensor).
n_gpu_layers counts n_layer + 1 layers: the repeating blocks ``blk.N`` and the output layer, the "+1"
(``output.weight``, ``output_norm``, a classifier's ``cls*``, LFM2's ``token_embd_norm``…). Input tensors
(``token_embd``, position and token-type embeddings) stay on the host. Repeating tensors without a block
number in their name are loaded with block 0 (``token_embd_norm`` of BERT-likes, Gemma 3n's
``per_layer_model_proj``), except the per-layer ones below. MoE tensors (``ffn_*_exps``, ``ffn_*_shexp``,
``ffn_gate_inp``, ``exp_probs_b``) are ``blk.N`` tensors like any other.

Per-layer tensors: ``rope_freqs`` (llama 3.1) and ``rope_factors_long/short`` (Phi-3 longrope) are
created for every block, with TENSOR_DUPLICATED after block 0. The loader reuses a tensor that its
buffer type's context already holds, so the device holding block 0 has the file's tensor and every
further device holding blocks gets a copy of its own (measured: 8 KiB more on RPC0 holding block 1 of 2,
head size 4096, tests/test_zoo.py); the host mmap adds none. So each device holding any block holds one
instance: a cost per device, not per layer (per_layer_bytes).

A model without ``output.weight`` has its output tied to the token embeddings: the loader copies
``token_embd`` to the output layer's device (SmolLM2: token_embd's 28.69 MiB on RPC0 at 1 layer), and the
quantizer gives it the output rules.

Routed experts (``ffn_{up,down,gate,gate_up}_exps`` and the ``_chexps`` of chunked experts, weights and
biases) are what llama.cpp users move to the host with ``--n-cpu-moe N`` / ``--cpu-moe``: common/common.h's
LLM_FFN_EXPS_REGEX, ROUTED_EXPERTS_PATTERN here. Shared experts (``_shexp``), the router (``ffn_gate_inp``)
and ``exp_probs_b`` are not routed experts and stay with their layer.

Placement, the solver's layer costs, the speed model and the bench's bytes per token all read these
rules from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from harness.gguf.ggml_types import CPU_BUFFER, BufferType
from harness.gguf.header import ModelHeader
from harness.gguf.reader import TensorInfo

TOKEN_EMBD = "token_embd.weight"
OUTPUT_WEIGHT = "output.weight"


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# llama-arch.cpp LLM_TENSOR_NAMES / LLM_TENSOR_INFOS, by base name (the name without .weight/.bias)
_INPUT_LAYER = _names(
    "token_embd position_embd token_types per_layer_token_embd masked_embd_centroids masked_embd_ordering"
)
_OUTPUT_LAYER_PREFIXES = ("output", "cls")  # output.weight, output_norm, output_hc_*, cls.*, cls.output.*
_OUTPUT_LAYER = _names(
    """
    enc.output_norm dec.output_norm dense_2 dense_3 altup_proj altup_unembd_proj nextn.post_projection fc d2t
    markov_w1 markov_w2 conf_proj selector_predecessor selector_successor selector_hidden
    """
)
# LLM_TENSOR_OUTPUT_NORM_LFM2 is named "token_embd_norm" (llama-arch.cpp: "fix for wrong tensor name"); in
# every other architecture token_embd_norm is LLM_TENSOR_TOKEN_EMBD_NORM, a repeating tensor of block 0
_OUTPUT_TOKEN_EMBD_NORM_ARCHS = frozenset({"lfm2", "lfm2moe"})
PER_LAYER_TENSORS = frozenset({"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"})
_BLOCK = re.compile(r"^(enc\.|dec\.)?blk\.(\d+)\.")
_INDEXED = re.compile(r"^(convnext|posnet)\.\d+\.")  # WavTokenizer's numbered parts

# The ops that llama-arch.cpp declares for weights that are not matrix products (GET_ROWS, norms' MUL,
# SSM_CONV, SSM_SCAN, ROPE, IM2COL…), by base name without "blk.N.": every other ``.weight`` is used by
# GGML_OP_MUL_MAT, and the expert tensors below by GGML_OP_MUL_MAT_ID. The CPU's repacked layouts exist
# for those two ops only.
_NOT_MATMUL = _names(
    """
    altup_correct_scale altup_router_norm attn_compressor_ape attn_compressor_norm attn_conv_base attn_k_norm
    attn_kv_a_norm attn_norm attn_norm_2 attn_output_norm attn_q_a_norm attn_q_norm attn_res_score attn_sinks
    attn_sub_norm channel_mix_lerp_k channel_mix_lerp_r cls.norm conv1d convnext.dw convnext.gamma convnext.norm
    d2t dec.attn_norm dec.attn_rel_b dec.cross_attn_norm dec.cross_attn_rel_b dec.ffn_norm dec.output_norm
    enc.attn_norm enc.attn_rel_b enc.ffn_norm enc.output_norm exp_probs_b exp_probs_b_vl ffn.act ffn_conv_base
    ffn_gate_tid2eid ffn_norm ffn_norm_exps ffn_res_score ffn_routed_norm ffn_sub_norm hc_attn_base hc_attn_norm
    hc_attn_scale hc_ffn_base hc_ffn_norm hc_ffn_scale hrm.z_l_init indexer.k_norm indexer.q_norm
    indexer_compressor_ape indexer_compressor_norm laurel_post_norm layer_output_norm layer_output_scale markov_w1
    masked_embd_centroids masked_embd_ordering nextn.embed_tokens nextn.enorm nextn.hnorm nextn.shared_head_norm
    output_hc_base output_hc_norm output_hc_scale output_norm output_res_score per_layer_proj_norm
    per_layer_token_embd ple_conv1d ple_norm_conv ple_norm_key ple_norm_query position_embd posnet.attn_norm
    posnet.conv1 posnet.conv2 posnet.norm posnet.norm1 posnet.norm2 post_attention_norm post_ffw_norm
    post_ffw_norm_1 post_ffw_norm_2 post_norm pre_ffw_norm_2 rope_factors_long rope_factors_short rope_freqs
    selector_predecessor selector_successor shortconv.conv ssm_a ssm_b_norm ssm_c_norm ssm_conv1d ssm_conv1d_k
    ssm_conv1d_q ssm_conv1d_v ssm_d ssm_dt_norm ssm_norm time_mix_a0 time_mix_decay time_mix_first time_mix_k_a
    time_mix_k_k time_mix_lerp_fused time_mix_lerp_g time_mix_lerp_k time_mix_lerp_r time_mix_lerp_v
    time_mix_lerp_w time_mix_lerp_x time_mix_ln time_mix_r_k time_mix_v0 time_mix_w0 token_embd token_embd_norm
    token_types
    """
)
_MUL_MAT_ID = _names(
    "ffn_gate_exps ffn_down_exps ffn_up_exps ffn_gate_up_exps ffn_gate_chexps ffn_down_chexps ffn_up_chexps"
)
_SUFFIXES = (".weight", ".bias")

# common/common.h LLM_FFN_EXPS_REGEX: the routed experts' tensors, as --cpu-moe matches them (std::regex_search,
# ECMAScript grammar: for this pattern Python's re.search finds the same matches); --n-cpu-moe N prefixes it
# with ``blk\.i`` for each block i < N (llm_ffn_block_regex)
ROUTED_EXPERTS_PATTERN = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


def _base_name(name: str) -> tuple[str, str]:
    """(kind, suffix): ``blk.3.attn_q.weight`` -> ("attn_q", ".weight"); a block or posnet/convnext index
    is dropped (``convnext.2.dw.weight`` -> "convnext.dw")."""
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), "")
    base = name[: len(name) - len(suffix)]
    return _INDEXED.sub(r"\1.", _BLOCK.sub(r"\1", base)), suffix


def block_of(name: str) -> int | None:
    """The block index of ``blk.N.*`` (and an encoder-decoder's ``enc.blk.N.*`` / ``dec.blk.N.*``)."""
    m = _BLOCK.match(name)
    return int(m.group(2)) if m else None


def offload_layer(tensor: TensorInfo, n_layer: int, arch: str = "") -> int | None:
    """The layer a tensor is loaded with, counted as n_gpu_layers counts them: N for a tensor of block
    ``blk.N``, ``n_layer`` for the output layer's, 0 for a repeating tensor named without a block (the
    per-layer tensors' own copy, BERT's token_embd_norm); None for input tensors, which stay on the
    host. ``arch``: general.architecture (LFM2 names its output norm ``token_embd_norm``)."""
    block = block_of(tensor.name)
    if block is not None:
        return block
    base, _ = _base_name(tensor.name)
    if base in _INPUT_LAYER:
        return None
    if base.startswith(_OUTPUT_LAYER_PREFIXES) or base in _OUTPUT_LAYER:
        return n_layer
    if base == "token_embd_norm" and arch in _OUTPUT_TOKEN_EMBD_NORM_ARCHS:
        return n_layer
    return 0


def is_skipped(tensor: TensorInfo, n_layer: int, n_layer_nextn: int) -> bool:
    """True for a tensor llama.cpp does not load by default: the trailing multi-token-prediction blocks
    (n_layer_nextn of them; llama_model_params.load_mtp is false, so each architecture's loader flags them
    TENSOR_SKIP and llama-model-loader.cpp logs "model has unused tensor … -- ignoring"). They are in the
    file, and still counted as layers by n_gpu_layers, but on no device and not in host memory."""
    block = block_of(tensor.name)
    return n_layer_nextn > 0 and block is not None and n_layer - n_layer_nextn <= block < n_layer


def is_per_layer(tensor: TensorInfo) -> bool:
    """True for the tensors llama.cpp creates with every block (rope_freqs, rope_factors_long/short): each
    further buffer holding blocks gets a copy."""
    return tensor.name in PER_LAYER_TENSORS


def matmul_op(tensor: TensorInfo) -> str | None:
    """The matrix product llama.cpp uses the tensor's weights in, "mul_mat" or "mul_mat_id" (the op its
    buffer type is chosen for); None for every other use (lookups, norms, biases, convolutions)."""
    base, suffix = _base_name(tensor.name)
    if suffix != ".weight" or base in _NOT_MATMUL:
        return None
    return "mul_mat_id" if base in _MUL_MAT_ID else "mul_mat"


def is_routed_expert(name: str) -> bool:
    """True for a routed expert tensor (weights or bias), the ones --cpu-moe moves to the host."""
    return re.search(ROUTED_EXPERTS_PATTERN, name) is not None


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    r"""True when a tensor buffer override pattern applies to ``name``: llama-model-loader.cpp create_tensor
    tries each llama_model_tensor_buft_override in order with std::regex_search (a match anywhere in the
    name, not the whole name). The patterns are ECMAScript regexes; the ones llama.cpp's options build
    (``blk\.N\.ffn_…``) mean the same in Python's re."""
    return any(re.search(p, name) for p in patterns)


def has_tied_output(tensor_names: Iterable[str]) -> bool:
    """True when there is no ``output.weight``: the output layer multiplies by the token embeddings."""
    return OUTPUT_WEIGHT not in tensor_names


def tied_embedding(header: ModelHeader) -> TensorInfo | None:
    """The ``token_embd`` tensor that the output layer reuses (llama.cpp loads a copy of it on the output
    layer's device), or None when the model has its own output weight (or no embeddings)."""
    if not has_tied_output(t.name for t in header.tensors):
        return None
    return header.tensor(TOKEN_EMBD)


def layer_weights_bytes(header: ModelHeader, buft: BufferType = CPU_BUFFER) -> list[int]:
    """Weight bytes each of the n_layer + 1 offloadable layers brings to an offload device (the output
    layer last, with the tied embedding copy), each tensor as the device's buffer type ``buft`` sizes it.
    Per-layer tensors are in no layer's count: a device holding any block holds one instance of each,
    whichever blocks it holds (per_layer_bytes)."""
    n_layer = header.arch.n_layer
    arch = header.arch.name or ""
    out = [0] * (n_layer + 1)
    for t in header.tensors:
        il = offload_layer(t, n_layer, arch)
        if il is not None and not is_per_layer(t) and not is_skipped(t, n_layer, header.arch.n_layer_nextn):
            out[il] += alloc_bytes(t, buft)
    embd = tied_embedding(header)
    if embd is not None:
        out[n_layer] += alloc_bytes(embd, buft)
    return out


def unread_expert_share(header: ModelHeader) -> float:
    """Of each routed expert tensor's bytes, the share a token does not read: a token goes through
    expert_used_count of the expert_count experts (0 for a dense model)."""
    a = header.arch
    return 1 - a.n_expert_used / a.n_expert if a.n_expert else 0.0


def routed_expert_bytes(header: ModelHeader, buft: BufferType = CPU_BUFFER) -> list[int]:
    """Routed expert bytes (weights and biases) of each block, as ``buft`` sizes them: what --n-cpu-moe moves
    off a device per layer it names (the rest of the layer, its KV cache included, stays)."""
    out = [0] * header.arch.n_layer
    for t in header.tensors:
        block = block_of(t.name)
        skipped = is_skipped(t, len(out), header.arch.n_layer_nextn)
        if block is not None and block < len(out) and is_routed_expert(t.name) and not skipped:
            out[block] += alloc_bytes(t, buft)
    return out


def per_layer_bytes(header: ModelHeader, buft: BufferType = CPU_BUFFER) -> int:
    """Bytes of the per-layer tensors (rope_freqs, rope_factors_*), as ``buft`` sizes them: what every
    offload device holding at least one block adds once (the file's tensor with block 0, a copy elsewhere)."""
    return sum(alloc_bytes(t, buft) for t in header.tensors if is_per_layer(t))


def alloc_bytes(t: TensorInfo, buft: BufferType = CPU_BUFFER) -> int:
    """``t``'s bytes in a buffer of type ``buft`` (padded as that backend pads it)."""
    return buft.alloc_bytes(t.n_bytes, t.ggml_type, t.shape[0] if t.shape else 1)


def embedding_bytes_not_read(header: ModelHeader, output_on_host: bool) -> int:
    """Bytes of ``token_embd`` that generation does not read per token: all of it (a row lookup), unless
    it is also the tied output weight on the host, which reads it whole."""
    embd = header.tensor(TOKEN_EMBD)
    if embd is None or (output_on_host and tied_embedding(header) is not None):
        return 0
    return embd.n_bytes
