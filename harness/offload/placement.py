"""Where llama.cpp puts each byte for a given n_gpu_layers and tensor split: weights and KV cache.

Exact, not estimated: the layer-to-device assignment replays llama_model::load_tensors (float32
split points, blocks offloaded from the last one backwards, the output layer counted as one more,
token embeddings on the host), and the KV cache replays llama_kv_cache (cells padded to 256, one
stream per sequence, sliding-window layers sized n_swa + n_ubatch, K/V rows in their ggml types,
recurrent state in F32: memory.py).
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from harness.gguf import ggml_types
from harness.gguf.header import ModelHeader
from harness.gguf.roles import layer_weights_bytes, offload_layer, tied_embedding
from harness.offload.memory import memory_bytes_per_layer

HOST = "CPU"

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


def offloaded_layer_bytes(header: ModelHeader, cp: ContextParams, alignment: int = 32) -> list[int]:
    """What each of the n_layer + 1 offloadable layers brings to the device it is offloaded to (the
    output layer last): its weights as roles.layer_weights_bytes counts them and, with offload_kqv, its
    KV cache. place() puts exactly these bytes on a device of that alignment."""
    out = layer_weights_bytes(header, alignment)
    if cp.offload_kqv:
        for il, b in enumerate(memory_bytes_per_layer(header, cp)):
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
    mem_devs = [devs[il] if cp.offload_kqv else -1 for il in range(a.n_layer)]
    for il, b in enumerate(memory_bytes_per_layer(header, cp, [align.get(d, 32) for d in mem_devs])):
        kv[mem_devs[il]] = kv.get(mem_devs[il], 0) + b
    return Placement(n_gpu_layers, tuple(devs), weights, kv, where, duplicated)
