"""What a CUDA device needs beyond the buffers a CPU-backed dry run reports, from ggml-cuda's source.

llama.cpp's dry run (harness.llama.dryrun) runs on RPC stand-ins whose buffers are the CPU backend's, so three
CUDA facts are added for a device whose buffer type is CUDA:

- weights and KV: ggml_types.CUDA_BUFFER sizes each tensor (128-byte alignment, quantized rows padded to
  MATRIX_ROW_PADDING): in placement, exact;
- compute: with flash attention and a quantized KV cache, the FLASH_ATTN_EXT node's allocation grows by f16
  copies of the K and V it reads (ggml_cuda_flash_attn_ext_get_alloc_size: the tile and MMA kernels a
  micro-batch uses need f16, ggml_cuda_flash_attn_ext_get_f16_extra_data), in the compute buffer ggml-alloc
  sizes: counted here on top of the stand-in's peak (an upper bound when another phase is the peak);
- the memory pool (ggml_cuda_pool, a VMM pool that maps 2 MiB granules as it grows and never shrinks): MMQ
  quantizes each matrix product's activations to q8_1 (ggml_cuda_mul_mat_q: n_tokens x ne10 padded to 512,
  144 bytes per 128 values); the largest product at the planned micro-batch sets its size.

What stays an assumption is the CUDA context itself (driver, kernels loaded, cuBLAS handles): the GPU profile's
reserve_bytes, which `make gpu-check` measures on a real card (nvidia-smi's used memory minus llama.cpp's buffers).
"""

from __future__ import annotations

from harness.gguf import ggml_types
from harness.gguf.header import ModelHeader
from harness.gguf.memory_layout import layer_memory
from harness.offload.memory import kv_cells
from harness.offload.placement import ContextParams

MATRIX_ROW_PADDING = 512  # ggml-cuda/common.cuh
Q8_1_MMQ_BYTES_PER_VALUE = 144 / 128  # sizeof(block_q8_1_mmq) / QK8_1_MMQ
VMM_GRANULARITY = 2 << 20  # cuMemGetAllocationGranularity on current NVIDIA GPUs: the pool grows by these


def fattn_f16_bytes(header: ModelHeader, cp: ContextParams) -> int:
    """The f16 copies of K and V one flash-attention node adds to the compute buffer on CUDA (the widest layer's),
    when the cache is quantized; 0 without flash attention or with an f16 cache."""
    if not cp.flash_attn:
        return 0
    tk, tv = ggml_types.type_by_name(cp.type_k), ggml_types.type_by_name(cp.type_v)
    k_f16, v_f16 = not ggml_types.is_quantized(tk), not ggml_types.is_quantized(tv)
    if k_f16 and v_f16:
        return 0
    cells = kv_cells(header, cp)
    widest = 0
    for m in layer_memory(header):
        if not m.has_kv:
            continue
        n = (cells.swa if m.swa else cells.base) * cells.n_stream
        k = 0 if k_f16 else 2 * m.k_width * n
        v = 0 if v_f16 or header.arch.is_mla else 2 * m.v_width * n  # MLA's V is a view of K: one copy
        widest = max(widest, _pad(k, 128) + _pad(v, 128))
    return widest


def pool_bytes(header: ModelHeader, cp: ContextParams) -> int:
    """The CUDA pool's size after a micro-batch: MMQ's q8_1 activations for the widest matrix product (routed
    experts gather n_tokens x expert_used_count rows), in VMM granules."""
    a = header.arch
    n_ub = min(cp.n_ubatch, cp.n_batch)
    widest = 0
    for t in header.tensors:
        if len(t.shape) < 2 or not ggml_types.is_quantized(t.ggml_type):
            continue
        rows = n_ub * (a.n_expert_used or 1) if len(t.shape) == 3 else n_ub
        widest = max(widest, rows * _pad(t.shape[0], MATRIX_ROW_PADDING))
    return _pad(int(widest * Q8_1_MMQ_BYTES_PER_VALUE), VMM_GRANULARITY) if widest else 0


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to
