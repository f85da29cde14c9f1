"""The published CUDA load logs (../shared/data/cuda-logs-published.json) replayed by the planner.

Each log the registry or a published config.json can describe becomes a Case: the logged model's header (a
registry architecture, or one synthesized here from the model's config.json for the dense families
harness.gguf.architecture does not describe), quantized by llama.cpp's rules (quant.sizes.at_quant), and the
load exactly as logged: n_gpu_layers, tensor split, n_ctx, n_batch, n_ubatch, n_seq_max, flash attention, KV
types. reproduce() plans it on CUDA devices (a GPU profile's Device with a budget nothing reaches) with compute
buffers from llama.cpp's own dry run (plan.compute_oracle on loopback RPC stand-ins) and returns one Row per
figure the log printed: predicted against logged.

Where a figure cannot match, the case says why (``Case.why``): the cause is a fact about the logged runtime or
build, found in llama.cpp's source or the log itself, never a tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from harness.gguf import ggml_types
from harness.gguf.architecture import ArchSpec, build_header
from harness.gguf.format import GGMLQuantizationType as T
from harness.gguf.format import GGUFValueType as V
from harness.gguf.format import Keys
from harness.gguf.header import ModelHeader, model_header
from harness.gguf.memory_layout import attention_window
from harness.gguf.reader import GGUFFile, KeyValue, TensorInfo
from harness.llama.engine import MIB, MIB_PRINT_TOLERANCE_BYTES
from harness.models.registry import load_registry
from harness.models.resolve import ResolvedModel
from harness.offload.buffers import pipeline_copies
from harness.offload.hardware import load_profiles
from harness.offload.memory import kv_cells
from harness.offload.placement import NO_REPACK, ContextParams, place
from harness.offload.solver import Device, Host, evaluate
from harness.plan import DRY_RUN_SOURCE, PlanRequest, compute_oracle
from harness.quant.sizes import at_quant, predict

ROOT = Path(__file__).resolve().parents[2]
LOGS_FILE = ROOT.parent / "shared" / "data" / "cuda-logs-published.json"
BUDGET_BYTES = 1 << 40  # per device: nothing a log holds comes near it
HOST = Host(1 << 40, 50e9, 1e12)

MAINLINE, OLLAMA, FORK = "mainline", "ollama", "ik_llama.cpp"
WEIGHTS, KV, COMPUTE = "weights", "KV", "compute"


# --- headers of the logged models --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseConfig:
    """A dense transformer's published config.json, for a family harness.gguf.architecture does not describe
    (it has llama and the mixtures of experts). Tensors and keys as llama.cpp's converter writes them
    (conversion/*.py) and the family's load_arch_tensors / load_arch_hparams (src/models/<family>.cpp) read."""

    family: str  # llama.cpp's architecture name
    n_embd: int  # hidden_size
    n_layer: int  # num_hidden_layers
    n_head: int  # num_attention_heads
    n_head_kv: int  # num_key_value_heads
    head_dim: int  # head_dim, else hidden_size / num_attention_heads
    n_ff: int  # intermediate_size
    n_vocab: int  # vocab_size
    context_length: int  # max_position_embeddings
    tied_output: bool = False  # tie_word_embeddings
    rope_freq_base: float = 10000.0  # rope_theta
    rms_norm_eps: float = 1e-6
    sliding_window: int = 0  # the window a family's sliding layers use (gemma2, gemma3); 0: none written
    rope_dim: int = 0  # rotated dimensions (glm4: head_dim x partial_rotary_factor); 0: not written
    attention_bias: bool = False  # q/k/v projections with biases (Qwen2's always; config's attention_bias)


# per family: fused qkv, fused gate+up (ffn_up of 2 n_ff), post-attention and post-FFN norms, q/k norms, softcaps
_FAMILY: dict[str, dict[str, bool]] = {
    "qwen2": {},  # src/models/qwen2.cpp: separate q/k/v and gate/up
    "phi3": dict(fused_qkv=True, fused_up=True),  # Phi3MiniModel: qkv_proj as attn_qkv, gate_up_proj as ffn_up
    "glm4": dict(fused_up=True, post_norms=True),  # Glm4Model: gate_up_proj kept fused as ffn_up
    "gemma2": dict(post_norms=True, softcap=True),
    "gemma3": dict(post_norms=True, qk_norm=True),
}


def dense_header(c: DenseConfig) -> ModelHeader:
    """The BF16 header the converter writes for ``c`` (token_embd first, the blocks, output_norm, output)."""
    f = _FAMILY[c.family]
    # general.name without the family's: llama-vocab.cpp sets Phi-3's token attributes by the model's name, looking
    # up "<|endoftext|>", which the stand-in's synthesized vocabulary does not hold
    name = f"{c.n_layer}x{c.n_embd}"
    bf16, f32 = int(T.BF16), int(T.F32)
    q, kv = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
    tensors: list[tuple[str, tuple[int, ...], int]] = [("token_embd.weight", (c.n_embd, c.n_vocab), bf16)]
    for i in range(c.n_layer):
        b = f"blk.{i}."
        tensors.append((b + "attn_norm.weight", (c.n_embd,), f32))
        if f.get("fused_qkv"):
            tensors.append((b + "attn_qkv.weight", (c.n_embd, q + 2 * kv), bf16))
        else:
            tensors += [
                (b + "attn_q.weight", (c.n_embd, q), bf16),
                (b + "attn_k.weight", (c.n_embd, kv), bf16),
                (b + "attn_v.weight", (c.n_embd, kv), bf16),
            ]
        if c.attention_bias:
            tensors += [
                (b + "attn_q.bias", (q,), f32),
                (b + "attn_k.bias", (kv,), f32),
                (b + "attn_v.bias", (kv,), f32),
            ]
        if f.get("qk_norm"):
            tensors += [(b + "attn_q_norm.weight", (c.head_dim,), f32), (b + "attn_k_norm.weight", (c.head_dim,), f32)]
        tensors.append((b + "attn_output.weight", (q, c.n_embd), bf16))
        if f.get("post_norms"):
            tensors.append((b + "post_attention_norm.weight", (c.n_embd,), f32))
        tensors.append((b + "ffn_norm.weight", (c.n_embd,), f32))
        if f.get("fused_up"):
            tensors.append((b + "ffn_up.weight", (c.n_embd, 2 * c.n_ff), bf16))
        else:
            tensors += [
                (b + "ffn_gate.weight", (c.n_embd, c.n_ff), bf16),
                (b + "ffn_up.weight", (c.n_embd, c.n_ff), bf16),
            ]
        tensors.append((b + "ffn_down.weight", (c.n_ff, c.n_embd), bf16))
        if f.get("post_norms"):
            tensors.append((b + "post_ffw_norm.weight", (c.n_embd,), f32))
    tensors.append(("output_norm.weight", (c.n_embd,), f32))
    if not c.tied_output:
        tensors.append(("output.weight", (c.n_embd, c.n_vocab), bf16))

    arch = c.family
    kvs: list[tuple[str, V, Any]] = [
        (Keys.General.ARCHITECTURE, V.STRING, arch),
        (Keys.General.NAME, V.STRING, name),
        (Keys.LLM.BLOCK_COUNT.format(arch=arch), V.UINT32, c.n_layer),
        (Keys.LLM.CONTEXT_LENGTH.format(arch=arch), V.UINT32, c.context_length),
        (Keys.LLM.EMBEDDING_LENGTH.format(arch=arch), V.UINT32, c.n_embd),
        (Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch), V.UINT32, c.n_ff),
        (Keys.Attention.HEAD_COUNT.format(arch=arch), V.UINT32, c.n_head),
        (Keys.Attention.HEAD_COUNT_KV.format(arch=arch), V.UINT32, c.n_head_kv),
        (Keys.Attention.KEY_LENGTH.format(arch=arch), V.UINT32, c.head_dim),
        (Keys.Attention.VALUE_LENGTH.format(arch=arch), V.UINT32, c.head_dim),
        (Keys.Rope.FREQ_BASE.format(arch=arch), V.FLOAT32, c.rope_freq_base),
        (Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch), V.FLOAT32, c.rms_norm_eps),
        (Keys.General.FILE_TYPE, V.UINT32, int(ggml_types.file_type_by_name("BF16"))),
    ]
    if c.rope_dim:
        kvs.append((Keys.Rope.DIMENSION_COUNT.format(arch=arch), V.UINT32, c.rope_dim))
    if c.sliding_window:
        kvs.append((Keys.Attention.SLIDING_WINDOW.format(arch=arch), V.UINT32, c.sliding_window))
    if f.get("softcap"):  # Gemma 2's config.json: attn_logit_softcapping 50.0, final_logit_softcapping 30.0
        kvs += [
            (Keys.LLM.ATTN_LOGIT_SOFTCAPPING.format(arch=arch), V.FLOAT32, 50.0),
            (Keys.LLM.FINAL_LOGIT_SOFTCAPPING.format(arch=arch), V.FLOAT32, 30.0),
        ]
    infos, offset = [], 0
    for tname, shape, ttype in tensors:
        n_bytes = ggml_types.tensor_nbytes(shape, ttype)
        infos.append(TensorInfo(tname, shape, ttype, offset, n_bytes))
        offset += ggml_types.pad(n_bytes, 32)
    virtual = GGUFFile(
        name=f"config:{name}",
        version=3,
        file_bytes=offset,
        header_bytes=0,
        alignment=32,
        data_offset=0,
        data_bytes=offset,
        metadata={k: KeyValue(k, t, 0, v) for k, t, v in kvs},
        tensors=tuple(infos),
    )
    return model_header([virtual])


# The published configurations (the values of each model's config.json on the Hugging Face Hub).
# Qwen/Qwen2.5-7B-Instruct and Qwen/Qwen2.5-Coder-7B-Instruct (same shapes): hidden_size 3584, intermediate_size
# 18944, 28 layers, 28 heads, 4 KV heads, vocab_size 152064, max_position_embeddings 32768, rope_theta 1e6,
# rms_norm_eps 1e-6, tie_word_embeddings false; Qwen2 attention has q/k/v biases.
QWEN25_7B = DenseConfig("qwen2", 3584, 28, 28, 4, 128, 18944, 152064, 32768, rope_freq_base=1e6, attention_bias=True)
# Qwen/Qwen2.5-14B(-Instruct): hidden_size 5120, intermediate_size 13824, 48 layers, 40 heads, 8 KV heads, vocab
# 152064, rope_theta 1e6, untied.
QWEN25_14B = DenseConfig("qwen2", 5120, 48, 40, 8, 128, 13824, 152064, 32768, rope_freq_base=1e6, attention_bias=True)
# Qwen/Qwen2.5-32B and its derivatives (deepseek-ai/DeepSeek-R1-Distill-Qwen-32B, Qwen/QwQ-32B,
# Qwen/Qwen2.5-Coder-32B-Instruct): hidden_size 5120, intermediate_size 27648, 64 layers, 40 heads, 8 KV heads,
# vocab 152064, rope_theta 1e6, untied (max_position_embeddings 131072 / 40960 / 32768: no size depends on it).
QWEN25_32B = DenseConfig("qwen2", 5120, 64, 40, 8, 128, 27648, 152064, 131072, rope_freq_base=1e6, attention_bias=True)
# microsoft/Phi-3-mini-4k-instruct: hidden_size 3072, intermediate_size 8192, 32 layers, 32 heads, 32 KV heads,
# vocab 32064, max_position_embeddings 4096, rope_theta 10000, rms_norm_eps 1e-5, untied (sliding_window 2047,
# which llama.cpp's phi3 ignores: "Phi SWA is currently disabled", src/models/phi3.cpp).
PHI3_MINI_4K = DenseConfig("phi3", 3072, 32, 32, 32, 96, 8192, 32064, 4096, rms_norm_eps=1e-5, rope_dim=96)
# THUDM/GLM-Z1-32B-0414 (GLM-4-32B-0414's shapes): hidden_size 6144, intermediate_size 23040, 61 layers, 48 heads,
# 2 KV heads, head_dim 128, partial_rotary_factor 0.5 (64 rotated), vocab 151552, max_position_embeddings 32768,
# rope_theta 10000, rms_norm_eps 1e-5, untied; no q/k/v biases (attention_bias false: the 32B-0414 conversion log in
# ik_llama.cpp PR 333 lists none, and the logged buffer of case R is exact only without them).
GLM4_32B = DenseConfig("glm4", 6144, 61, 48, 2, 128, 23040, 151552, 32768, rms_norm_eps=1e-5, rope_dim=64)
# google/gemma-3-27b-it (text_config): hidden_size 5376, intermediate_size 21504, 62 layers, 32 heads, 16 KV heads,
# head_dim 128, vocab 262208, sliding_window 1024 (5 sliding layers of every 6), rope_theta 1e6,
# max_position_embeddings 131072, tied embeddings.
GEMMA3_27B = DenseConfig(
    "gemma3", 5376, 62, 32, 16, 128, 21504, 262208, 131072, tied_output=True, rope_freq_base=1e6, sliding_window=1024
)
# google/gemma-2-9b-it: hidden_size 3584, intermediate_size 14336, 42 layers, 16 heads, 8 KV heads, head_dim 256,
# vocab 256000, sliding_window 4096 (every other layer), max_position_embeddings 8192, tied embeddings.
GEMMA2_9B = DenseConfig("gemma2", 3584, 42, 16, 8, 256, 14336, 256000, 8192, tied_output=True, sliding_window=4096)
# mistralai/Mistral-7B-Instruct-v0.2: hidden_size 4096, intermediate_size 14336, 32 layers, 32 heads, 8 KV heads,
# vocab 32000, max_position_embeddings 32768, rope_theta 1e6, untied: a llama-family model (LlamaForCausalLM's
# tensors, MistralForCausalLM in the converter).
MISTRAL_7B = ArchSpec("mistral-7b-v0.2", "llama", 4096, 32, 32, 8, 128, 14336, 32000, 32768, rope_freq_base=1e6)


@cache
def registry_header(architecture: str, quant: str) -> ModelHeader:
    """A registry architecture (models.toml: llama-3.1-8b, llama-3.1-70b) at ``quant``."""
    return at_quant(build_header(load_registry().architectures[architecture]), quant)


@cache
def config_header(config: DenseConfig | ArchSpec, quant: str) -> ModelHeader:
    """A published configuration at ``quant``, by llama.cpp's rules (no importance matrix unless the type needs one)."""
    return at_quant(build_header(config) if isinstance(config, ArchSpec) else dense_header(config), quant)


@cache
def imatrix_header(config: DenseConfig, quant: str) -> ModelHeader:
    """``config`` at ``quant`` quantized with an importance matrix, as published imatrix quants are (bartowski's):
    llama.cpp's rules then differ for a few types even where none is required (IQ4_XS gives the first n_layer / 8
    ffn_down Q5_K only without one: llama-quant.cpp, ``!qs.has_imatrix``)."""
    source = dense_header(config)
    chosen = predict(source, quant, has_imatrix=True)
    return with_types(at_quant(source, quant), {t.name: t.ggml_type for t in chosen.tensors})


def with_types(header: ModelHeader, types: dict[str, int]) -> ModelHeader:
    """``header`` with the tensors named in ``types`` retyped, bytes and offsets recomputed as at_quant lays a file
    out: a file whose quantizer chose other types than this llama.cpp's rules."""
    tensors, offset = [], 0
    for t in header.tensors:
        ttype = types.get(t.name, t.ggml_type)
        n_bytes = ggml_types.tensor_nbytes(t.shape, ttype)
        tensors.append(TensorInfo(t.name, t.shape, ttype, offset, n_bytes))
        offset += ggml_types.pad(n_bytes, 32)
    return model_header([replace(header.shards[0], file_bytes=offset, data_bytes=offset, tensors=tuple(tensors))])


def _by_role(header: ModelHeader, roles: dict[str, T]) -> dict[str, int]:
    """Every block tensor whose name ends in one of ``roles`` ("attn_qkv.weight"), with that role's type."""
    return {t.name: int(roles[r]) for t in header.tensors for r in roles if t.layer is not None and t.name.endswith(r)}


def q2_k_before_2024(header: ModelHeader) -> ModelHeader:
    """Q2_K as llama.cpp wrote it before January 2024 (PR 5060: the old Q2_K "was basically a 3-bit quantization
    with just the attn_k and attn_q tensors quantized with 2 bit"): every other block matrix Q3_K."""
    roles = ("attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")
    return with_types(header, _by_role(header, dict.fromkeys(roles, T.Q3_K)))


def phi3_qkv_q5_k(header: ModelHeader) -> ModelHeader:
    """Microsoft's Phi-3-mini-4k-instruct-q4.gguf (April 2024): every attn_qkv Q5_K, the Q4_K_M rule for a fused QKV
    then. This llama.cpp counts attn_qkv among the attn_v-like tensors (llama-quant.cpp category_is_attn_v), whose
    Q4_K_M rule gives Q6_K to half of them (use_more_bits) and Q4_K to the rest."""
    return with_types(header, _by_role(header, {"attn_qkv.weight": T.Q5_K}))


# --- the cases ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One log, as the planner is asked to replay it."""

    log_id: str
    runtime: str  # MAINLINE, OLLAMA or FORK: whose llama.cpp printed the log
    model: str  # the logged model, and what its header is built from
    header: Callable[[], ModelHeader]
    n_gpu_layers: int
    tensor_split: tuple[float, ...]  # one weight per logged device (layer counts where the log gives them)
    context: ContextParams
    devices: tuple[str, ...] = ("CUDA0",)  # the log's names for the devices, in order
    profile: str = "rtx-3090"  # any GPU profile: only its CUDA buffer type matters here
    compute: bool = True  # the log printed compute buffers: llama.cpp's dry run is asked for them
    host_patterns: tuple[str, ...] = ()  # tensors the logged runtime kept on the host whatever their layer
    # the header as the logged file was written, where its quantizer chose other types than this llama.cpp's rules
    as_written: Callable[[ModelHeader], ModelHeader] | None = None
    # (quantity, buffer) -> why the logged figure is not ours; buffer "*" covers every buffer of that quantity
    why: dict[tuple[str, str], str] = field(default_factory=dict)
    # the logged build's graph, as far as the compute buffers go: one embedding input and f32 KQ masks (llama.cpp
    # before PRs 18550 and 23764, see pre_2026_host_compute_bytes); False for a build that has both PRs
    old_graph_inputs: bool = True

    def reason(self, quantity: str, buffer: str) -> str | None:
        return self.why.get((quantity, buffer)) or self.why.get((quantity, "*"))


# Causes shared by several logs.
_OLD_INPUTS = (
    "the logged build predates llama.cpp PRs 18550 (an f32 n_embd x n_ubatch embedding input beside the token lookup) "
    "and 23764 (May 2026: the KQ mask reserved in f16 under flash attention, where it was an f32 input cast on the "
    "device): its CUDA_Host buffer is exactly one f32 embedding and n_copies f32 masks"
)
# with pipeline parallelism the embedding input of PR 18550 is a split input like the masks: one copy per n_copies
_PER_COPY = "; this llama.cpp also keeps its embedding input once per pipeline copy (4 x n_ubatch x n_embd x 4 bytes)"
_OLD_PEAK = (
    "the logged build's graph (before llama.cpp PR 23764) keeps the f32 KQ mask (64 MiB at 32k) and its f16 cast on "
    "the device, so its peak is not the logits phase that is ours; not derived to the byte"
)
_OLD_PIPELINE = (
    "the logged build's pipeline-parallel graph against this llama.cpp's: the differences are mostly whole hidden "
    "states of a micro-batch (n_ubatch x n_embd x 4 bytes, 16 MiB for the 70B), not traced to a change"
)
_FORK = "ik_llama.cpp builds its own graph"
_NO_FA_INPUT = "and this llama.cpp's graph without flash attention holds a further n_ctx-independent input"

CASES: dict[str, Case] = {
    c.log_id: c
    for c in (
        Case(
            "D",
            OLLAMA,
            "Hermes 3 Llama 3.1 8B Q4_0 (Ollama blob, run by llama-server): llama-3.1-8b",
            lambda: registry_header("llama-3.1-8b", "Q4_0"),
            15,
            (1.0,),
            ContextParams(n_ctx=32768, n_batch=512, n_ubatch=512),
            old_graph_inputs=False,
            why={
                (WEIGHTS, "CPU_Mapped"): (
                    "the mapped range also spans 288.06 MiB of offloaded tensors lying between host ones in the "
                    "Ollama blob's tensor order (not llama-quantize's block order); the host's own tensors are ours: "
                    "llama.cpp's --fit projection in this log says 2388 MiB"
                ),
                (COMPUTE, "CUDA0"): (
                    "llama-server reserves the graph for n_outputs_max = n_parallel x (1 + draft) = 1 output "
                    "(tools/server server_output_limits), the C API's context for n_batch (512 rows of logits, "
                    "250.5 MiB): with n_outputs_max 1 the dry run gives 140.01 MiB at full offload, this log's own "
                    "--fit projection (140). And CUDA runs the host layers' ops on the GPU for batches of 32 or more "
                    "(op offload, their weights copied into its compute buffer); an RPC stand-in has no offload_op"
                ),
                (COMPUTE, "CUDA_Host"): (
                    "CUDA's op offload moves the 18 host layers' activations to the GPU; on the RPC stand-ins they "
                    "stay on the host (+100.00 MiB). At full offload the dry run's host buffer is the log's 48.01"
                ),
            },
        ),
        Case(
            "E",
            OLLAMA,
            "Qwen2.5 Coder 7B Instruct Q4_K_M (Ollama blob)",
            lambda: config_header(QWEN25_7B, "Q4_K_M"),
            29,
            (1.0,),
            ContextParams(n_ctx=32768, n_batch=512, n_ubatch=512),
            why={
                (COMPUTE, "CUDA0"): _OLD_PEAK,
                (COMPUTE, "CUDA_Host"): _OLD_INPUTS,
            },
        ),
        Case(
            "F",
            MAINLINE,
            "DeepSeek-R1-Distill-Qwen-32B Q4_K_M",
            lambda: config_header(QWEN25_32B, "Q4_K_M"),
            # no tensor_split: llama.cpp split by each device's free memory, which the log prints (MiB)
            65,
            (23982.0, 23982.0, 23982.0, 23923.0),
            ContextParams(n_ctx=8192),
            devices=("CUDA0", "CUDA1", "CUDA2", "CUDA3"),
            compute=False,
        ),
        Case(
            "G",
            OLLAMA,
            "QwQ 32B Q4_K_M (Ollama blob)",
            lambda: config_header(QWEN25_32B, "Q4_K_M"),
            # Ollama put blocks 35..63 on the GPU and kept the output layer on the host, without mmap: in llama.cpp's
            # terms n_gpu_layers 30 with output.weight and output_norm overridden to the CPU
            30,
            (1.0,),
            ContextParams(n_ctx=8192, n_batch=512, n_ubatch=512, type_k="q8_0", type_v="q8_0"),
            host_patterns=(r"^output",),
            why={
                (COMPUTE, "*"): (
                    "Ollama's layout (the output layer on the host behind 29 offloaded blocks) is no n_gpu_layers of "
                    "llama.cpp, and a dry run takes no tensor overrides but --n-cpu-moe's"
                ),
            },
        ),
        Case(
            "H",
            OLLAMA,
            "Qwen2.5 Coder 7B Instruct Q4_K_M (Ollama blob)",
            lambda: config_header(QWEN25_7B, "Q4_K_M"),
            29,
            (1.0,),
            ContextParams(n_ctx=4096, n_batch=512, n_ubatch=512),
            why={(COMPUTE, "CUDA_Host"): _OLD_INPUTS},
        ),
        Case(
            "I",
            MAINLINE,
            "Phi-3-mini-4k-instruct Q4_K_M (Microsoft's file)",
            lambda: config_header(PHI3_MINI_4K, "Q4_K_M"),
            33,
            (1.0,),
            ContextParams(n_ctx=4096, n_batch=256, n_ubatch=256, flash_attn=False),
            as_written=phi3_qkv_q5_k,
            why={
                (WEIGHTS, "CUDA0"): (
                    "the file (April 2024) has every attn_qkv at Q5_K; this llama.cpp's Q4_K_M gives half of them Q6_K "
                    "and half Q4_K (attn_qkv counts as attn_v-like now): +3.375 MiB. With the file's types: exact"
                ),
                (COMPUTE, "CUDA0"): (
                    "the logged build's phi3 graph copied Q, K and V out of the fused QKV (ggml_cont, 3 MiB each at "
                    "n_ubatch 256); this llama.cpp takes views (llama-graph.cpp build_qkv)"
                ),
                (COMPUTE, "CUDA_Host"): _OLD_INPUTS + ", " + _NO_FA_INPUT,
            },
        ),
        Case(
            "K",
            MAINLINE,
            "Mistral 7B Instruct v0.2 Q2_K (TheBloke's file)",
            lambda: config_header(MISTRAL_7B, "Q2_K"),
            33,
            (1.0,),
            ContextParams(n_ctx=32000, n_batch=1024, n_ubatch=512, flash_attn=False),
            as_written=q2_k_before_2024,
            why={
                (WEIGHTS, "CUDA0"): (
                    "the file (December 2023) is the old Q2_K, every block matrix Q3_K but attn_q and attn_k "
                    "(llama.cpp PR 5060); this llama.cpp's Q2_K is a 2-bit mix. With the file's types: exact"
                ),
                (COMPUTE, "CUDA_Host"): _OLD_INPUTS + ", " + _NO_FA_INPUT + " (4 MiB at n_ubatch 512)",
            },
        ),
        Case(
            "L",
            MAINLINE,
            "Qwen2.5 Coder 32B Instruct Q8_0",
            lambda: config_header(QWEN25_32B, "Q8_0"),
            65,
            (10.0, 6.0),
            ContextParams(n_ctx=32768, n_batch=512, n_ubatch=256, type_k="q8_0", type_v="q8_0"),
            devices=("CUDA0", "CUDA1"),
            why={
                (COMPUTE, "CUDA0"): (
                    "the logged build (4462, January 2025) took flash attention's f16 copies of the q8_0 cache from "
                    "the CUDA pool; since llama.cpp PR 23907 (June 2026) they are reserved in the compute buffer "
                    "(cuda.fattn_f16_bytes: 128 MiB of ours). And " + _OLD_PIPELINE
                ),
                (COMPUTE, "CUDA1"): "as CUDA0, 128 MiB of f16 K/V copies kept in the pool then; " + _OLD_PIPELINE,
                (COMPUTE, "CUDA_Host"): _OLD_INPUTS + _PER_COPY,
            },
        ),
        Case(
            "M",
            OLLAMA,
            "Llama 3.3 70B Instruct Q3_K_M (Ollama blob): llama-3.1-70b",
            lambda: registry_header("llama-3.1-70b", "Q3_K_M"),
            # KV 784/496 MiB at 16 MiB a layer: blocks 0..48 on CUDA0, 49..79 and the output on CUDA1. Flash attention
            # is not printed: on, since without it one layer's K*Q scores (4096 x 512 x 64 heads, f32: 512 MiB) alone
            # would exceed CUDA0's 260.01 MiB
            81,
            (49.0, 32.0),
            ContextParams(n_ctx=4096, n_batch=512, n_ubatch=512),
            devices=("CUDA0", "CUDA1"),
            why={
                (COMPUTE, "CUDA_Host"): _OLD_INPUTS + _PER_COPY,
                (COMPUTE, "*"): _OLD_PIPELINE,
            },
        ),
        Case(
            "N",
            OLLAMA,
            "Llama 3.x 70B Q8_0 (inferred): llama-3.1-70b",
            lambda: registry_header("llama-3.1-70b", "Q8_0"),
            # the model buffers are 28 and 52 blocks (+ the output) of 866.97 MiB
            81,
            (28.0, 53.0),
            ContextParams(),
            devices=("CUDA0", "CUDA2"),
            compute=False,
        ),
        Case(
            "P",
            FORK,
            "Llama 3.1 8B Q5_K_S (a custom mix): llama-3.1-8b",
            lambda: registry_header("llama-3.1-8b", "Q5_K_S"),
            33,
            (1.0,),
            ContextParams(n_ctx=1024, n_batch=1024, n_ubatch=512, type_k="iq4_nl", flash_attn=False),
            why={
                (WEIGHTS, "CUDA0"): 'the file is a custom mix ("Q5_K_S_q4_v6"), not llama.cpp\'s Q5_K_S',
                (COMPUTE, "*"): _FORK,
            },
        ),
        Case(
            "R",
            MAINLINE,
            "GLM-Z1-32B-0414 IQ4_XS (bartowski, imatrix)",
            lambda: imatrix_header(GLM4_32B, "IQ4_XS"),
            62,
            (1.0,),
            ContextParams(n_ctx=32768, n_batch=2048, n_ubatch=512),
            why={
                (COMPUTE, "CUDA0"): _OLD_PEAK,
                (COMPUTE, "CUDA_Host"): _OLD_INPUTS,
            },
        ),
        Case(
            "S",
            FORK,
            "Gemma 3 27B it QAT Q4_K_M (bartowski)",
            lambda: config_header(GEMMA3_27B, "Q4_K_M"),
            63,
            (1.0,),
            ContextParams(n_ctx=32768, n_batch=2048, n_ubatch=512),
            why={
                (KV, "CUDA0"): (
                    "the fork gives all 62 layers a full-length cache; llama.cpp keeps the 52 sliding-window layers' "
                    "cache at the window plus a micro-batch (iSWA). With swa_full: exact"
                ),
                (COMPUTE, "*"): _FORK + " (two full-length f32 masks on the host)",
            },
        ),
        Case(
            "T",
            MAINLINE,
            "Qwen2.5-7B-Instruct Q4_K_M (inferred)",
            lambda: config_header(QWEN25_7B, "Q4_K_M"),
            24,
            (1.0,),
            ContextParams(n_ctx=32768),
            compute=False,
        ),
        Case(
            "U",
            MAINLINE,
            "Mistral 7B Q4_K_M (inferred)",
            lambda: config_header(MISTRAL_7B, "Q4_K_M"),
            33,
            (1.0,),
            ContextParams(),
            compute=False,
        ),
        Case(
            "V",
            OLLAMA,
            "Gemma 2 9B Q4_0 (Ollama blob, inferred)",
            lambda: config_header(GEMMA2_9B, "Q4_0"),
            43,
            (1.0,),
            ContextParams(n_ctx=8192, n_seq_max=4),
            compute=False,
        ),
        Case(
            "W",
            OLLAMA,
            "Llama 3.x 70B Q4_K_M (Ollama blob, inferred): llama-3.1-70b",
            lambda: registry_header("llama-3.1-70b", "Q4_K_M"),
            # --parallel 4 on a build with one unified cache of n_ctx cells for all sequences: the cache and graph of
            # one sequence of 8192 (n_seq_max 1), which this llama.cpp builds alike. Flash attention is not printed:
            # Ollama's default then was off
            81,
            (27.0, 27.0, 27.0),
            ContextParams(n_ctx=8192, n_batch=512, n_ubatch=512, flash_attn=False),
            devices=("CUDA0", "CUDA1", "CUDA2"),
            why={
                (COMPUTE, "CUDA_Host"): _OLD_INPUTS + _PER_COPY + ", " + _NO_FA_INPUT + " (4 MiB a copy)",
                (COMPUTE, "*"): _OLD_PIPELINE,
            },
        ),
        Case(
            "X",
            OLLAMA,
            "Qwen2.5(-Coder) 14B Q4_K_M (Ollama blob, inferred)",
            lambda: config_header(QWEN25_14B, "Q4_K_M"),
            49,
            (1.0,),
            ContextParams(n_ctx=8192, n_seq_max=4),
            compute=False,
        ),
    )
}

# The logs no case expresses, and why.
NOT_EXPRESSED = {
    "Q": (
        "Llama-3.1-Nemotron-Ultra-253B (deci): each of its 162 blocks has its own attention (128 heads, none, or a "
        "linear replacement) and FFN width (config.json block_configs); no family here describes per-block "
        "configurations, and the data keeps neither the per-block head counts nor the FFN widths"
    ),
}


def pre_2026_host_compute_bytes(case: Case, header: ModelHeader | None = None) -> int:
    """The host (CUDA_Host) compute buffer of a build before llama.cpp PRs 18550 and 23764, from its graph inputs:
    the token embeddings looked up for a micro-batch (n_ubatch x n_embd f32) and, per pipeline copy, the f32 KQ mask
    of n_kv x n_ubatch (two where sliding-window layers have their own: a full-length one each in ik_llama.cpp).
    Positions and output ids add a few KiB (llama.cpp prints +0.01 or +0.02 MiB)."""
    header = header or case.header()
    cp = case.context
    n_ub = min(cp.n_ubatch, cp.n_batch)
    n_copies = pipeline_copies(len(case.devices), case.n_gpu_layers, header.arch.n_layer + 1, False)
    n_masks = 2 if any(attention_window(header).layers) else 1
    return n_ub * header.arch.n_embd * 4 + n_copies * n_masks * kv_cells(header, cp).base * n_ub * 4


# --- replaying a case --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One figure a log printed: a buffer's size as planned and as logged."""

    log_id: str
    runtime: str
    buffer: str  # the log's name: CUDA0, CUDA_Host, CPU_Mapped, CPU...
    quantity: str  # WEIGHTS, KV or COMPUTE
    predicted_bytes: int | None  # None: not predicted (a layout llama.cpp's dry run cannot be asked for)
    logged_mib: float
    n_printed: int = 1  # the log lines summed into logged_mib (each exact to 0.01 MiB)
    why: str | None = None  # why they differ, where they do

    @property
    def logged_bytes(self) -> int:
        return round(self.logged_mib * MIB)

    @property
    def predicted_mib(self) -> float | None:
        return None if self.predicted_bytes is None else self.predicted_bytes / MIB

    @property
    def diff_mib(self) -> float | None:
        return None if self.predicted_bytes is None else (self.predicted_bytes - self.logged_bytes) / MIB

    @property
    def diff_pct(self) -> float | None:
        if self.predicted_bytes is None or not self.logged_bytes:
            return None
        return (self.predicted_bytes - self.logged_bytes) / self.logged_bytes * 100

    @property
    def exact(self) -> bool:
        """Equal to what llama.cpp printed, to its 0.01 MiB per printed line."""
        return self.predicted_bytes is not None and abs(self.predicted_bytes - self.logged_bytes) <= (
            self.n_printed * MIB_PRINT_TOLERANCE_BYTES
        )


def load_logs(path: Path = LOGS_FILE) -> dict[str, dict[str, Any]]:
    """The published logs by id."""
    return {log["id"]: log for log in json.loads(path.read_text(encoding="utf-8"))}


def logged_buffers(log: dict[str, Any]) -> dict[tuple[str, str], tuple[float, int]]:
    """(quantity, buffer) -> (MiB as printed, lines summed): a device's buffers by its name; the host's model buffers
    under their first name (a log may print two CPU model buffers: token_embd, and the host's layers)."""
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for quantity, key in ((WEIGHTS, "model_buffers_mib"), (KV, "kv_buffers_mib"), (COMPUTE, "compute_buffers_mib")):
        host_name = None
        for name, mib in (log.get(key) or {}).items():
            if _is_device(name):
                out[(quantity, name)] = (mib, 1)
                continue
            host_name = host_name or name.split(" ")[0]
            total, n = out.get((quantity, host_name), (0.0, 0))
            out[(quantity, host_name)] = (total + mib, n + 1)
    return out


def _is_device(buffer: str) -> bool:
    return buffer.startswith("CUDA") and buffer[4:].isdigit()


def predicted_buffers(
    case: Case, with_compute: bool = True, header: ModelHeader | None = None, context: ContextParams | None = None
) -> dict[tuple[str, str], int | None]:
    """(quantity, buffer) -> bytes as planned for ``case`` on CUDA devices (a device by the log's name, the host as
    "host"); compute from llama.cpp's dry run where the log printed it and ``with_compute``, else None.
    ``header`` / ``context`` replace the case's (the file as written, another cache layout)."""
    header = header or case.header()
    cp = context or case.context
    gpu = load_profiles().gpu(case.profile)
    devices = [Device.from_profile(gpu, i, budget_bytes=BUDGET_BYTES) for i in range(len(case.devices))]
    split = list(case.tensor_split)
    names = [*case.devices, "host"]
    if case.host_patterns:
        # a layout llama.cpp loads with tensor overrides: weights and KV where placement puts them (host weights
        # allocated, as a runtime without mmap has them); the dry run cannot be asked for its compute buffers
        p = place(
            header, case.n_gpu_layers, split, cp, {i: d.buffer_type for i, d in enumerate(devices)},
            cpu=NO_REPACK, mmap=False, host_patterns=case.host_patterns,
        )  # fmt: skip
        index = {name: (-1 if name == "host" else i) for i, name in enumerate(names)}
        return {
            **{(WEIGHTS, n): p.weights_bytes.get(d, 0) for n, d in index.items()},
            **{(KV, n): p.kv_bytes.get(d, 0) for n, d in index.items()},
            **{(COMPUTE, n): None for n in names},
        }
    measured = None
    if with_compute and case.compute:
        resolved = ResolvedModel(case.model, header, None, True, None, "architecture")
        oracle, _ = compute_oracle(PlanRequest(case.model, compute="llama"), resolved, len(devices), cp)
        [measured] = oracle([(case.n_gpu_layers, tuple(split), 0)])
    source = DRY_RUN_SOURCE if measured else "formula"
    plan = evaluate(header, devices, HOST, cp, case.n_gpu_layers, split, measured=measured, compute_source=source)
    out: dict[tuple[str, str], int | None] = {}
    for name, d in zip(case.devices, plan.devices):
        out |= {(WEIGHTS, name): d.weights_bytes, (KV, name): d.kv_bytes, (COMPUTE, name): d.compute_bytes}
    h = plan.host
    out |= {(WEIGHTS, "host"): h.weights_bytes, (KV, "host"): h.kv_bytes, (COMPUTE, "host"): h.compute_bytes}
    if measured is None:  # the formula's figures are no prediction these rows compare
        out |= {(COMPUTE, name): None for name in names}
    return out


def reproduce(
    case: Case, log: dict[str, Any], with_compute: bool = True, header: ModelHeader | None = None
) -> list[Row]:
    """One Row per buffer the log printed (compute rows only ``with_compute``), predicted against logged.
    ``header``: another header than the case's (the file as written)."""
    predicted = predicted_buffers(case, with_compute, header)
    rows = []
    for (quantity, buffer), (mib, n_printed) in logged_buffers(log).items():
        if quantity == COMPUTE and not with_compute:
            continue
        ours = buffer if _is_device(buffer) else "host"
        row = Row(case.log_id, case.runtime, buffer, quantity, predicted[(quantity, ours)], mib, n_printed)
        rows.append(replace(row, why=None if row.exact else case.reason(quantity, buffer)))
    return rows
