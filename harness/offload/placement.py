"""Where llama.cpp puts each byte for a given n_gpu_layers and tensor split: weights and KV cache.

Exact, not estimated: the layer-to-device assignment replays llama_model::load_tensors (float32
split points, blocks offloaded from the last one backwards, the output layer counted as one more,
token embeddings on the host), and the KV cache replays llama_kv_cache (cells padded to 256, one
stream per sequence, sliding-window layers sized n_swa + n_ubatch, K/V rows in their ggml types).
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from harness.gguf import ggml_types
from harness.gguf.header import ModelHeader
from harness.gguf.roles import layer_weights_bytes, offload_layer, tied_embedding

HOST = "CPU"

# Architectures whose sliding-window layers follow a period when the file has no pattern key
# (llama.cpp's load_swa_pattern defaults); value: (period, dense_first).
SWA_DEFAULT_PATTERN = {"gemma3": (6, False), "gemma2": (2, False), "cohere2": (4, False)}

# llama.cpp's --cache-type-k/-v choices (common/arg.cpp kv_cache_types), as ggml type names: the engine
# passes each as its ggml type id (ggml_types.type_by_name)
KV_TYPES = ("f16", "q8_0", "q4_0", "f32", "bf16", "q4_1", "q5_0", "q5_1", "iq4_nl")
_FLOAT_KV_TYPES = ("f16", "f32", "bf16")


def kv_type_needs_flash_attn(type_v: str) -> bool:
    """A quantized V cache needs flash attention: llama.cpp refuses the context without it."""
    return type_v not in _FLOAT_KV_TYPES


@dataclass(frozen=True)
class ContextParams:
    """The llama_context_params that decide memory (llama.cpp's defaults, but swa_full off)."""

    n_ctx: int = 4096
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True
    offload_kqv: bool = True
    swa_full: bool = False  # llama.cpp's C default is true; the harness runs with a window-sized cache
    kv_unified: bool = False

    def __post_init__(self) -> None:
        for t in (self.type_k, self.type_v):
            if t not in KV_TYPES:
                raise ValueError(f"KV cache type {t!r} is not one of {', '.join(KV_TYPES)}")
        if kv_type_needs_flash_attn(self.type_v) and not self.flash_attn:
            raise ValueError(f"a quantized V cache ({self.type_v}) needs flash attention")


def _f32(x: float) -> float:
    """``x`` rounded to the nearest float32, as llama.cpp's float arithmetic does (one rounding of the
    exact double result is exact float32 arithmetic for +, / of float32 operands)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def layer_devices(n_layer: int, n_gpu_layers: int, split: list[float]) -> list[int]:
    """Device index per layer 0..n_layer (the last entry is the output layer); -1 is the host.

    ``split`` holds one weight per offload device (llama_model_params.tensor_split). Replays
    llama_model::load_tensors in float32: cumulative split points, normalised, then each offloaded
    layer's fraction looked up with std::upper_bound."""
    if not split:
        return [-1] * (n_layer + 1)
    sums, total = [], 0.0
    for w in split:
        total = _f32(total + _f32(w))
        sums.append(total)
    points = [_f32(x / total) for x in sums]
    start = max(n_layer + 1 - n_gpu_layers, 0)
    act = min(n_gpu_layers, n_layer + 1)
    out = []
    for il in range(n_layer + 1):
        if il < start or il - start >= act:
            out.append(-1)
        else:
            frac = _f32(_f32(il - start) / _f32(act))
            out.append(min(bisect.bisect_right(points, frac), len(split) - 1))
    return out


def swa_layers(header: ModelHeader) -> list[bool]:
    a = header.arch
    if not a.sliding_window:
        return [False] * a.n_layer
    pattern = a.sliding_window_pattern
    if isinstance(pattern, tuple):
        return list(pattern)
    period, dense_first = SWA_DEFAULT_PATTERN.get(a.name or "", (0, False))
    if pattern is not None:
        period = pattern
    if period == 0 and a.name not in SWA_DEFAULT_PATTERN and pattern is None:
        return [False] * a.n_layer  # a window key, but no known layout: treat as full attention
    if dense_first:
        return [period == 0 or il % period != 0 for il in range(a.n_layer)]
    return [period == 0 or il % period < period - 1 for il in range(a.n_layer)]


@dataclass(frozen=True)
class KVCells:
    base: int  # cells of full-attention layers, per stream
    swa: int  # cells of sliding-window layers, per stream
    n_stream: int


def kv_cells(header: ModelHeader, cp: ContextParams) -> KVCells:
    n_ctx = ggml_types.pad(cp.n_ctx, 256)
    if cp.kv_unified:
        size, streams = n_ctx, 1
    else:
        size, streams = ggml_types.pad(n_ctx // cp.n_seq_max, 256), cp.n_seq_max
    n_swa = header.arch.sliding_window or 0
    swa = (
        size
        if cp.swa_full
        else ggml_types.pad(min(size, n_swa * (cp.n_seq_max if cp.kv_unified else 1) + cp.n_ubatch), 256)
    )
    return KVCells(size, swa, streams)


def kv_bytes_per_layer(header: ModelHeader, cp: ContextParams) -> list[int]:
    """K + V bytes of each layer's cache (0 for layers without attention)."""
    a = header.arch
    cells = kv_cells(header, cp)
    swa = swa_layers(header)
    tk, tv = ggml_types.type_by_name(cp.type_k), ggml_types.type_by_name(cp.type_v)
    heads_kv = a.n_head_kv or (0,) * a.n_layer
    k_len, v_len = a.key_length or 0, a.value_length or 0
    v_width_max = max(heads_kv, default=0) * v_len
    out = []
    for il in range(a.n_layer):
        n = cells.swa if swa[il] else cells.base
        k_width = heads_kv[il] * k_len
        # without flash attention V is stored transposed at the widest layer's width
        v_width = heads_kv[il] * v_len if cp.flash_attn else v_width_max
        if k_width == 0:
            out.append(0)
            continue
        row_k = ggml_types.tensor_nbytes((k_width,), tk)
        row_v = ggml_types.tensor_nbytes((v_width,), tv)
        out.append((row_k + row_v) * n * cells.n_stream)
    return out


def offloaded_layer_bytes(header: ModelHeader, cp: ContextParams, alignment: int = 32) -> list[int]:
    """What each of the n_layer + 1 offloadable layers brings to the device it is offloaded to (the
    output layer last): its weights as roles.layer_weights_bytes counts them and, with offload_kqv, its
    KV cache. place() puts exactly these bytes on a device of that alignment."""
    out = layer_weights_bytes(header, alignment)
    if cp.offload_kqv:
        for il, b in enumerate(kv_bytes_per_layer(header, cp)):
            out[il] += b
    return out


@dataclass(frozen=True)
class Placement:
    """Bytes per device index (-1: host) for one n_gpu_layers and split."""

    n_gpu_layers: int
    layer_device: tuple[int, ...]  # per layer, then the output layer
    weights_bytes: dict[int, int]
    kv_bytes: dict[int, int]
    tensor_device: dict[str, int]
    duplicated_bytes: int  # tied token_embd copied to the output layer's device


def place(
    header: ModelHeader,
    n_gpu_layers: int,
    split: list[float],
    cp: ContextParams,
    alignment: dict[int, int] | None = None,
) -> Placement:
    """Weights and KV cache per device. ``alignment`` (device -> bytes) pads each tensor as the
    device's buffer type does (32 for CPU and RPC)."""
    a = header.arch
    devs = layer_devices(a.n_layer, n_gpu_layers, split)
    out_dev = devs[a.n_layer]
    weights: dict[int, int] = {}
    where: dict[str, int] = {}
    align = alignment or {}
    for t in header.tensors:
        il = offload_layer(t, a.n_layer)
        d = -1 if il is None else devs[il]
        where[t.name] = d
        weights[d] = weights.get(d, 0) + ggml_types.pad(t.n_bytes, align.get(d, 32))
    duplicated = 0
    embd = tied_embedding(header)
    if embd is not None and out_dev != -1:
        duplicated = ggml_types.pad(embd.n_bytes, align.get(out_dev, 32))
        weights[out_dev] = weights.get(out_dev, 0) + duplicated
    kv: dict[int, int] = {}
    for il, b in enumerate(kv_bytes_per_layer(header, cp)):
        d = devs[il] if cp.offload_kqv else -1
        kv[d] = kv.get(d, 0) + b
    return Placement(n_gpu_layers, tuple(devs), weights, kv, where, duplicated)
