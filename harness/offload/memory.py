"""KV cache and recurrent state bytes per layer, as llama.cpp's memory types allocate them (which layers
hold what, and how wide their rows are: gguf/memory_layout.py).

Ported from the llama.cpp vendored in llama-cpp-python 0.3.36 (src/llama-model.cpp create_memory,
llama-kv-cache.cpp, llama-kv-cache-iswa.cpp, llama-memory-recurrent.cpp, llama-memory-hybrid.cpp,
llama-hparams.cpp and the per-architecture load_arch_hparams in src/models/*.cpp):

- attention layers get a K tensor [n_embd_head_k(il) x n_head_kv(il), cells, streams] and a V tensor
  alike; without flash attention V is stored transposed at the widest layer's width
  (n_embd_v_gqa_max, [TAG_V_CACHE_VARIABLE]); with MLA (both `key_length_mla` and `value_length_mla`
  set) there is no V tensor at all, the K row being the latent (kv_lora_rank + rope dims);
- sliding-window (and llama4's chunked) layers live in a second cache of
  pad(min(n_ctx_seq, n_swa + n_ubatch), 256) cells; which layers slide and how wide the window is are
  per-architecture defaults that the file may override (memory_layout.SWA_RULES);
- recurrent layers (Mamba, Mamba-2, RWKV, LFM2's short convolution, the recurrent half of hybrids) hold
  an r (conv/shift) and an s (SSM/wkv) tensor of max(1, n_seq_max) rows in F32 whatever --kv-type says;
  llama.cpp reports them as "RS buffer size";
- every tensor is sized as its buffer type sizes it (ggml_types.BufferType: 32-byte alignment on CPU and RPC;
  128 and quantized rows padded to 512 elements on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.gguf import ggml_types
from harness.gguf.ggml_types import CPU_BUFFER, BufferType
from harness.gguf.header import ModelHeader
from harness.gguf.memory_layout import attention_window, layer_memory, v_head_length


@dataclass(frozen=True)
class KVCells:
    base: int  # cells of full-attention layers, per stream
    swa: int  # cells of sliding-window layers, per stream (0 when no layer slides)
    n_stream: int


def kv_cells(header: ModelHeader, cp) -> KVCells:
    """Cells per stream (llama_context pads n_ctx to 256; the SWA cache holds the window plus a ubatch,
    padded to 256, llama_kv_cache_iswa)."""
    n_ctx = ggml_types.pad(cp.n_ctx, 256)
    if cp.kv_unified:
        size, streams = n_ctx, 1
    else:
        size, streams = ggml_types.pad(n_ctx // cp.n_seq_max, 256), cp.n_seq_max
    window = attention_window(header)
    if not any(window.layers):
        swa = 0
    elif cp.swa_full:
        swa = size
    else:
        swa = ggml_types.pad(min(size, window.size * (cp.n_seq_max if cp.kv_unified else 1) + cp.n_ubatch), 256)
    return KVCells(size, swa, streams)


@dataclass(frozen=True)
class LayerBytes:
    """One layer's memory in bytes, by the buffer llama.cpp reports it in."""

    kv_bytes: int = 0  # the full-attention KV cache ("KV buffer", the non-SWA cache of an iSWA model)
    swa_kv_bytes: int = 0  # the sliding-window KV cache (the second "KV buffer" of an iSWA model)
    rs_bytes: int = 0  # recurrent state ("RS buffer")

    @property
    def total_bytes(self) -> int:
        return self.kv_bytes + self.swa_kv_bytes + self.rs_bytes


def layer_memory_bytes(
    header: ModelHeader, cp, buft: BufferType | Sequence[BufferType] = CPU_BUFFER
) -> list[LayerBytes]:
    """KV cache and recurrent state of each layer. ``buft``: the buffer type of the device each layer's
    memory lives on (one for all, or one per layer); it sizes each cache tensor (shape: row width x cells)."""
    a = header.arch
    layers = layer_memory(header)
    cells = kv_cells(header, cp)
    tk, tv = ggml_types.type_by_name(cp.type_k), ggml_types.type_by_name(cp.type_v)
    # without flash attention V is stored transposed, every layer's as wide as the widest one
    # (n_embd_v_gqa_max runs over all layers, whatever memory they have)
    heads_kv = a.n_head_kv or (0,) * len(layers)
    v_width_max = max((v_head_length(header, m.swa) * heads_kv[il] for il, m in enumerate(layers)), default=0)
    rows_rs = max(1, cp.n_seq_max)  # mem_size x (1 + n_rs_seq); n_rs_seq is 0 unless a context asks
    out = []
    for il, m in enumerate(layers):
        b = buft if isinstance(buft, BufferType) else buft[il]
        kv = rs = 0
        if m.has_kv:
            n = (cells.swa if m.swa else cells.base) * cells.n_stream
            kv = b.alloc_bytes(ggml_types.tensor_nbytes((m.k_width,), tk) * n, tk, m.k_width)
            if not a.is_mla:  # MLA keeps no V tensor
                v_width = m.v_width if cp.flash_attn else v_width_max
                kv += b.alloc_bytes(ggml_types.tensor_nbytes((v_width,), tv) * n, tv, v_width)
        if m.has_rs:  # f32 states
            rs = b.alloc_bytes(m.r_width * 4 * rows_rs, ggml_types.F32, m.r_width) + b.alloc_bytes(
                m.s_width * 4 * rows_rs, ggml_types.F32, m.s_width
            )
        out.append(LayerBytes(0 if m.swa else kv, kv if m.swa else 0, rs))
    return out


def memory_bytes_per_layer(header: ModelHeader, cp, buft: BufferType | Sequence[BufferType] = CPU_BUFFER) -> list[int]:
    """KV cache plus recurrent state bytes of each layer (0 for a layer with neither)."""
    return [b.total_bytes for b in layer_memory_bytes(header, cp, buft)]
