"""Where llama.cpp puts each byte for a given n_gpu_layers and tensor split: weights and KV cache.

Exact, not estimated: the layer-to-device assignment replays llama_model::load_tensors (float32
split points, blocks offloaded from the last one backwards, the output layer counted as one more,
token embeddings on the host), and the KV cache replays llama_kv_cache (cells padded to 256, one
stream per sequence, sliding-window layers sized n_swa + n_ubatch, K/V rows in their ggml types,
recurrent state in F32: memory.py).

Weights per buffer, as llama.cpp's loader makes them (llama-model-loader.cpp create_tensor and
get_mapping_range, llama-model.cpp load_tensors and make_cpu_buft_list):

- an offload device holds its layers' tensors, each sized as its buffer type sizes it, plus the copies the
  loader makes there: the tied ``token_embd`` on the output layer's device, and its own copy of each
  per-layer tensor (rope_freqs, rope_factors_*) when it holds blocks but not block 0 (roles.py);
- the host keeps its tensors in the mmapped file (``CPU_Mapped``: one buffer per file spanning its first
  to its last host tensor, so offloaded tensors lying between them count too) or, without mmap, in an
  allocated ``CPU`` buffer; except the matrix weights that ggml's CPU backend repacks for its SIMD kernels,
  which get an anonymous ``CPU_REPACK`` buffer instead (and a tied output weight on the host that qualifies
  gets a repacked copy there, beside the mapped embeddings). Which tensors qualify depends on the CPU:
  ``CpuFeatures`` below.

Tensor overrides (llama_model_params.tensor_buft_overrides, ``-ot PATTERN=CPU``, ``--n-cpu-moe N``) move
tensors whose names match a pattern to the host whatever their layer's device: ``host_patterns`` of place(),
n_cpu_moe_patterns for llama.cpp's own. Such a tensor is a host tensor like any other (mapped, or repacked
when it qualifies); its layer's other tensors and KV cache stay where the layer is.
"""

from __future__ import annotations

import bisect
import platform
import re
import struct
import subprocess
from dataclasses import dataclass
from functools import cache

from harness.errors import UsageError
from harness.gguf import ggml_types
from harness.gguf.ggml_types import CPU_BUFFER, BufferType
from harness.gguf.header import ModelHeader
from harness.gguf.reader import TensorInfo
from harness.gguf.roles import (
    ROUTED_EXPERTS_PATTERN,
    alloc_bytes,
    is_per_layer,
    is_skipped,
    layer_weights_bytes,
    matches_any,
    matmul_op,
    offload_layer,
    tied_embedding,
)
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


def offloaded_layer_bytes(header: ModelHeader, cp: ContextParams, buft: BufferType = CPU_BUFFER) -> list[int]:
    """What each of the n_layer + 1 offloadable layers brings to the device it is offloaded to (the
    output layer last): its weights as roles.layer_weights_bytes counts them and, with offload_kqv, its
    KV cache. place() puts exactly these bytes on a device of that buffer type, plus roles.per_layer_bytes
    once on a device holding any block (its instance of rope_freqs and the like)."""
    out = layer_weights_bytes(header, buft)
    if cp.offload_kqv:
        for il, b in enumerate(memory_bytes_per_layer(header, cp, buft)):
            out[il] += b
    return out


# --- the CPU's repacked weights -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU features of a ggml build, by ggml's own names (what llama_print_system_info lists after
    "CPU :", e.g. AVX2, AVX512, NEON, DOTPROD, MATMUL_INT8, SVE, with "SVE_CNT=32" for the SVE width and
    REPACK when the CPU_REPACK buffer type is built in, as it is by default).

    ggml-cpu's repack.cpp picks a repacked layout per tensor from these: ggml_cpu_has_avx2() and friends
    are compile-time flags, which a native build (llama-cpp-python's default) takes from the CPU it was
    built on, and which a multi-variant build chooses at run time by the same CPU's features. So this
    machine's features are detected from the CPU (``this_cpu``), and the engine's own list can be read
    with ``from_system_info`` where it is installed. Not modelled: the AMX buffer type (an AMX-INT8 CPU
    with a native build puts Q4_0/Q4_1/Q8_0/K-quant weights there first), KleidiAI (an opt-in ARM build),
    RISC-V vector widths other than 256 bits (and RISC-V without zvfh), ggml builds without GGML_CPU_REPACK,
    and detection outside Linux and macOS (elsewhere this_cpu finds no layouts)."""

    features: frozenset[str]

    @classmethod
    def from_system_info(cls, text: str) -> CpuFeatures:
        """From llama.cpp's system info line: "CPU : SSE3 = 1 | AVX2 = 1 | SVE_CNT = 32 | REPACK = 1 | ..."."""
        cpu = text.split("CPU :", 1)[1] if "CPU :" in text else text
        cpu = re.split(r"\|\s*[A-Za-z]+ : ", cpu)[0]  # stop at the next backend's section
        out = set()
        for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", cpu):
            if name.endswith("_CNT") or name.endswith("_VLEN"):
                out.add(f"{name}={value}")
            elif value != "0":
                out.add(name)
        return cls(frozenset(out))


NO_REPACK = CpuFeatures(frozenset())  # a CPU (or build) without repacked layouts: every host weight stays mapped

# repack.cpp ggml_repack_get_optimal_repack_type: per ggml type, the CPU features each layout needs and the
# multiple of ne[1] (rows) it takes, in the order tried; a tensor is repacked when any of them applies
_REPACK_LAYOUTS: dict[str, tuple[tuple[frozenset[str], int], ...]] = {
    "Q4_0": (
        (frozenset({"AVX2"}), 8),
        (frozenset({"SVE", "MATMUL_INT8", "SVE_CNT=32"}), 8),
        (frozenset({"NEON", "MATMUL_INT8"}), 4),
        (frozenset({"NEON", "DOTPROD"}), 4),
        (frozenset({"VXE"}), 4),
        (frozenset({"RISCV_V", "RVV_VLEN=256"}), 16),
    ),
    "Q4_K": (
        (frozenset({"AVX2"}), 8),
        (frozenset({"NEON", "MATMUL_INT8"}), 8),
        (frozenset({"NEON", "DOTPROD"}), 8),
        (frozenset({"RISCV_V", "RVV_VLEN=256"}), 16),
    ),
    "Q2_K": ((frozenset({"AVX512"}), 8), (frozenset({"RISCV_V", "RVV_VLEN=256"}), 16)),
    "Q5_K": ((frozenset({"NEON", "MATMUL_INT8"}), 8), (frozenset({"NEON", "DOTPROD"}), 8)),
    "Q6_K": ((frozenset({"NEON", "MATMUL_INT8"}), 8), (frozenset({"NEON", "DOTPROD"}), 8)),
    "IQ4_NL": (
        (frozenset({"AVX2"}), 8),
        (frozenset({"NEON", "DOTPROD"}), 4),
        (frozenset({"RISCV_V", "RVV_VLEN=256"}), 16),
    ),
    "MXFP4": ((frozenset({"AVX2"}), 8), (frozenset({"NEON", "DOTPROD"}), 4)),
    "Q8_0": (
        (frozenset({"NEON", "MATMUL_INT8"}), 4),
        (frozenset({"NEON", "DOTPROD"}), 4),
        (frozenset({"RISCV_V", "RVV_VLEN=256"}), 16),
    ),
    "Q1_0": ((frozenset({"NEON", "MATMUL_INT8"}), 4), (frozenset({"NEON", "DOTPROD"}), 4)),
}
# every feature a repacked layout asks for
REPACK_FEATURES = frozenset({"REPACK"}.union(*(needs for layouts in _REPACK_LAYOUTS.values() for needs, _ in layouts)))
# /proc/cpuinfo flags (x86 "flags", ARM "Features") -> ggml's feature names, as a native build's -march sees them
_CPUINFO_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512_VNNI",
    "amx_int8": "AMX_INT8",
    "asimd": "NEON",
    "asimddp": "DOTPROD",
    "i8mm": "MATMUL_INT8",
    "sve": "SVE",
}


@cache
def this_cpu() -> CpuFeatures:
    """This machine's CPU features as ggml's native build sees them (Linux: /proc/cpuinfo and the SVE
    vector length; macOS on Apple silicon: NEON and DOTPROD, MATMUL_INT8 where sysctl reports FEAT_I8MM)."""
    found = {"REPACK"}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    found |= {_CPUINFO_FLAGS[w] for w in value.split() if w in _CPUINFO_FLAGS}
                    break
    except OSError:
        if platform.system() == "Darwin" and platform.machine() == "arm64":
            found |= {"NEON", "DOTPROD"}
            if _sysctl("hw.optional.arm.FEAT_I8MM") == "1":
                found.add("MATMUL_INT8")
    if "SVE" in found:
        try:
            with open("/proc/sys/abi/sve_default_vector_length", encoding="ascii") as f:
                found.add(f"SVE_CNT={int(f.read().strip())}")
        except (OSError, ValueError):
            pass
    return CpuFeatures(frozenset(found))


def _sysctl(name: str) -> str:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: dimensions up to the last one larger than 1 (at least 1)."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def is_repacked(tensor: TensorInfo, cpu: CpuFeatures, op: str | None = None) -> bool:
    """True when llama.cpp puts this weight, held by the host, in the CPU_REPACK buffer: a matrix product's
    2-D weights (or a MUL_MAT_ID's 3-D experts) of a type that ``cpu`` has a repacked layout for, with a
    row count that layout takes. ``op``: the use, when not the tensor's own (a tied output's MUL_MAT)."""
    op = op or matmul_op(tensor)
    if op is None or "REPACK" not in cpu.features:
        return False
    if _n_dims(tensor.shape) != (3 if op == "mul_mat_id" else 2):
        return False
    layouts = _REPACK_LAYOUTS.get(ggml_types.type_name(tensor.ggml_type), ())
    return any(needs <= cpu.features and tensor.shape[1] % rows == 0 for needs, rows in layouts)


def n_cpu_moe_patterns(n: int) -> tuple[str, ...]:
    r"""llama.cpp's ``--n-cpu-moe N``: the routed experts of blocks 0..N-1 on the host, as the tensor
    override patterns it builds (common/arg.cpp "--n-cpu-moe" -> common/common.h
    llm_add_n_cpu_ffn_overrides(N, LLM_FFN_EXPS_REGEX): ``blk\.i`` + LLM_FFN_EXPS_REGEX for i < N, each to
    ggml_backend_cpu_buffer_type()). Counted from block 0 up, while n_gpu_layers offloads from the last block
    down; N above n_layer names blocks that do not exist and matches nothing more. ``--cpu-moe`` is the
    unprefixed pattern, roles.ROUTED_EXPERTS_PATTERN."""
    if n < 0:
        raise UsageError(f"--n-cpu-moe {n}: the number of layers must not be negative")
    return tuple(rf"blk\.{i}{ROUTED_EXPERTS_PATTERN}" for i in range(n))


@dataclass(frozen=True)
class Placement:
    """Bytes per device index (-1: host) for one n_gpu_layers and split.

    weights_bytes: what llama.cpp's model buffers hold per device; on the host the CPU_Mapped range(s)
    plus CPU_REPACK (plus CPU without mmap), which is what lives in host RAM for these weights."""

    n_gpu_layers: int
    layer_device: tuple[int, ...]  # per layer, then the output layer
    weights_bytes: dict[int, int]
    kv_bytes: dict[int, int]
    tensor_device: dict[str, int]
    duplicated_bytes: int  # copies beyond the file's tensors: tied token_embd, per-layer tensors' further copies
    mapped_bytes: int = 0  # the host's CPU_Mapped buffers (part of weights_bytes[-1])
    repack_bytes: int = 0  # the host's CPU_REPACK buffer (part of weights_bytes[-1])
    host_tensor_bytes: int = 0  # each host tensor once, padded: what host compute reads at most per token
    repacked: tuple[str, ...] = ()  # host tensors (and a tied output copy: token_embd) in CPU_REPACK
    overridden: tuple[str, ...] = ()  # tensors a host pattern matched (llama.cpp logs each as "overridden")


def place(
    header: ModelHeader,
    n_gpu_layers: int,
    split: list[float],
    cp: ContextParams,
    buffer_types: dict[int, BufferType] | None = None,
    cpu: CpuFeatures | None = None,
    mmap: bool = True,
    host_patterns: tuple[str, ...] = (),
) -> Placement:
    """Weights and KV cache per device. ``buffer_types`` (device -> ggml_types.BufferType; the host is -1)
    sizes each tensor as the device's buffer type does (CPU_BUFFER unless given: CPU and RPC).

    ``cpu``: whose repacked layouts apply to host weights; None is this machine's (``this_cpu``), as with
    RPC devices or none. Pass NO_REPACK when an offload device lends a host buffer type (CUDA and other
    GPU backends): make_cpu_buft_list puts it before CPU_REPACK, every host matrix weight passes its
    check, and with mmap the loader then swaps it for the plain CPU buffer, so nothing is repacked
    (a published CUDA log, shared/data cuda-logs-published.json case D: Q4_0 with 15/33 layers offloaded
    shows CPU_Mapped only). ``mmap``: llama.cpp's default load mode; without it host weights are allocated.

    ``host_patterns``: tensor buffer overrides to the CPU (llama_model_tensor_buft_override with
    ggml_backend_cpu_buffer_type(), e.g. n_cpu_moe_patterns). llama-model-loader.cpp create_tensor
    (buft_for_tensor, "check overrides") tries them before the layer's buffer types: the first pattern that
    std::regex_search finds in the name (roles.matches_any) gives the tensor select_weight_buft over the CPU's
    buffer list, the one a host layer's tensors get (make_cpu_buft_list: a GPU's host buffer type, CPU_REPACK,
    CPU), so an overridden weight is repacked exactly when a host layer's would be (``cpu``), else it joins
    the host's other tensors in the CPU context, whose mapped range (get_mapping_range) now spans it. A
    matched per-layer tensor (rope_freqs) then has its one instance on the host (each block's lookup finds
    it in the CPU context), and a matched tied ``token_embd`` gets the host output's treatment. The layer's
    other tensors, and its KV cache (llama_kv_cache follows the layer's device), stay on its device. The
    compute follows the weights: ggml_backend_sched runs an op on the backend holding its weight, so the
    host's experts are multiplied by the CPU backend (a GPU backend may claim the op for large batches,
    offload_op, copying the weights; RPC devices never do)."""
    a = header.arch
    n_layer = a.n_layer
    arch = a.name or ""
    devs = layer_devices(n_layer, n_gpu_layers, split)
    out_dev = devs[n_layer]
    cpu = this_cpu() if cpu is None else cpu
    bufts = buffer_types or {}
    host_buft = bufts.get(-1, CPU_BUFFER)
    weights: dict[int, int] = {}
    where: dict[str, int] = {}
    spans: dict[int, tuple[int, int]] = {}  # per file: first and last byte of its mapped host tensors
    repacked: list[str] = []
    repack = unmapped = host_tensors = duplicated = 0

    def on_device(d: int, t: TensorInfo) -> int:
        n = alloc_bytes(t, bufts.get(d, CPU_BUFFER))
        weights[d] = weights.get(d, 0) + n
        return n

    for pattern in host_patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"tensor override pattern {pattern!r} is not a regular expression: {exc}") from None
    overridden = tuple(t.name for t in header.tensors if host_patterns and matches_any(t.name, host_patterns))
    on_host = frozenset(overridden)
    for t in header.tensors:
        if is_skipped(t, n_layer, header.arch.n_layer_nextn):
            continue  # an MTP block llama.cpp leaves unloaded: in the file, in no buffer
        il = offload_layer(t, n_layer, arch)
        d = -1 if il is None or t.name in on_host else devs[il]
        where[t.name] = d
        if d != -1:
            on_device(d, t)
            continue
        host_tensors += alloc_bytes(t, host_buft)
        if is_repacked(t, cpu):
            repack += alloc_bytes(t, host_buft)
            repacked.append(t.name)
        elif mmap:
            start = t.offset_bytes
            first, last = spans.get(t.shard, (start, start + t.n_bytes))
            spans[t.shard] = (min(first, start), max(last, start + t.n_bytes))
        else:
            unmapped += alloc_bytes(t, host_buft)
    # per-layer tensors: block 0's device has the file's tensor, each further device holding blocks a copy
    further = {d for d in devs[:n_layer] if d != devs[0]} if n_layer else set()
    for t in header.tensors:
        if is_per_layer(t) and t.name not in on_host:
            for d in sorted(further):
                duplicated += on_device(d, t)
    embd = tied_embedding(header)
    if embd is not None and embd.name in on_host:
        out_dev = -1  # the output's copy is overridden too: create_tensor matches it by the same name
    if embd is not None and out_dev != -1:
        duplicated += on_device(out_dev, embd)
    elif embd is not None and is_repacked(embd, cpu, op="mul_mat"):
        # the output's MUL_MAT picks CPU_REPACK: a context apart from the embeddings' lookup, so a copy
        duplicated += alloc_bytes(embd, host_buft)
        repack += alloc_bytes(embd, host_buft)
        repacked.append(embd.name)
    mapped = sum(last - first for first, last in spans.values())
    if mapped or repack or unmapped:
        weights[-1] = mapped + repack + unmapped
    kv: dict[int, int] = {}
    mem_devs = [devs[il] if cp.offload_kqv else -1 for il in range(n_layer)]
    for il, b in enumerate(memory_bytes_per_layer(header, cp, [bufts.get(d, CPU_BUFFER) for d in mem_devs])):
        kv[mem_devs[il]] = kv.get(mem_devs[il], 0) + b
    return Placement(
        n_gpu_layers,
        tuple(devs),
        weights,
        kv,
        where,
        duplicated,
        mapped,
        repack,
        host_tensors,
        tuple(repacked),
        overridden,
    )
