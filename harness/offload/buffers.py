"""Compute and output buffers: the part of llama.cpp's memory that is modelled, not read off a header.

llama.cpp sizes a device's compute buffer by reserving its worst-case graph (n_ubatch tokens, every
output requested) and taking ggml-alloc's peak. The peak is one of three phases, plus graph inputs
that live throughout (the attention mask):

- output: logits and the normed hidden state, n_ubatch x (n_vocab + n_embd) f32, on the device of
  the output layer (exact on both real models, to llama.cpp's printed 0.01 MiB);
- attention: without flash attention the K*Q scores, n_kv x n_ubatch x n_head f32 (plus the f32
  mask); with it only the mask (f16) grows with the context;
- feed-forward: gate, up and the activations, about n_ubatch x (3 n_ff + 4 n_embd) f32.

The constants were fitted to llama.cpp's own reports (simulated allocation, `no_alloc`) for SmolLM2
and Gemma 3 on the CPU and RPC backends; tests/test_planner.py holds them to it.
"""

from __future__ import annotations

from harness.gguf.header import ModelHeader
from harness.offload.memory import kv_cells
from harness.offload.placement import ContextParams


def compute_bytes(
    header: ModelHeader, cp: ContextParams, holds_layers: bool, holds_output: bool, is_host: bool = False
) -> int:
    """Peak compute buffer of one device. The host also keeps the graph inputs (token embeddings
    gathered, positions, the mask) even when every layer is offloaded."""
    a = header.arch
    cells = kv_cells(header, cp)
    n_ub = min(cp.n_ubatch, cp.n_batch, cells.base)
    n_embd = a.n_embd or 0
    n_ff = max(a.n_ff or (0,), default=0)
    n_head = max(a.n_head or (0,), default=0)
    n_q = n_head * (a.key_length or 0)
    n_kv, n_kv_swa = cells.base, cells.swa
    mask = n_kv * n_ub * (2 if cp.flash_attn else 4)
    if is_host or (holds_output and holds_layers):
        # the device that also runs the graph's start or end (fitted on single-device loads)
        phases = [mask + n_ub * 2 * n_embd * 4 if is_host else 0]
        if holds_output:  # on the host the inputs and mask are still alive when the logits are computed
            extra = n_ub * 3 * n_embd * 4 + mask if is_host else 0
            phases.append(n_ub * ((a.n_vocab or 0) + n_embd) * 4 + extra)
        if holds_layers:
            ffn = n_ub * (3 * n_ff + 4 * n_embd) * 4
            attn = 0 if cp.flash_attn else n_kv * n_ub * n_head * 4 + n_ub * 6 * n_embd * 4
            phases.append(mask + max(ffn, attn))
        return max(phases)
    phases = [0]
    if holds_output:
        phases.append(n_ub * ((a.n_vocab or 0) + n_embd) * 4)
    if holds_layers:
        # a device in the middle of a split: it also holds copies of the graph inputs it needs; fitted on
        # SmolLM2 and Gemma 3 (two RPC devices, 1k-8k context, with and without flash attention)
        ffn = n_ub * ((3 * n_ff + 7 * n_embd) * 4 + (8 if cp.flash_attn else 16) * (n_kv + n_kv_swa))
        attn = (
            0 if cp.flash_attn else n_ub * (n_kv * (4 * n_head + 16) + 16 * n_kv_swa + int(10.7 * max(n_q, n_embd)) * 4)
        )
        phases.append(max(ffn, attn))
    return max(phases)


def output_bytes(header: ModelHeader, cp: ContextParams) -> int:
    """The host's logits buffer: one row of n_vocab f32 per sequence."""
    return (header.arch.n_vocab or 0) * 4 * max(1, cp.n_seq_max)


# ggml-backend.cpp: GGML_SCHED_MAX_COPIES (4 unless the build says otherwise), the copies of each split's inputs
# a pipelined scheduler keeps so that one micro-batch's inputs can be written while the previous one computes
SCHED_MAX_COPIES = 4


def pipeline_copies(n_devices: int, n_gpu_layers: int, n_layers_total: int, has_overrides: bool) -> int:
    """llama-context.cpp: pipeline parallelism (n_copies = GGML_SCHED_MAX_COPIES) when the model spans more than
    one device with every layer offloaded (n_gpu_layers > n_layer), layer split, KV offloaded and no tensor
    overrides, and every non-CPU device supports async compute and events (CUDA and, in this llama.cpp, RPC)."""
    parallel = n_devices > 1 and n_gpu_layers >= n_layers_total and not has_overrides
    return SCHED_MAX_COPIES if parallel else 1


def pipeline_extra_bytes(header: ModelHeader, cp: ContextParams, n_copies: int) -> int:
    """The formula's estimate of what n_copies adds to a device's compute buffer: the further copies of its
    splits' inputs (the hidden state arriving from the previous device, the attention masks), each pinned for
    the whole graph (ggml_set_output on the copies). llama.cpp's dry run counts the real graph's inputs."""
    if n_copies <= 1:
        return 0
    a = header.arch
    cells = kv_cells(header, cp)
    n_ub = min(cp.n_ubatch, cp.n_batch, cells.base)
    masks = (cells.base + cells.swa) * n_ub * (2 if cp.flash_attn else 4)
    return (n_copies - 1) * (n_ub * (a.n_embd or 0) * 4 + masks)
