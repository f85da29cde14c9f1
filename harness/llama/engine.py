"""Load a model with llama.cpp on chosen devices and report what llama.cpp itself says each buffer costs.

This is the "actual" side of every predicted-vs-actual comparison: the numbers are parsed from
llama.cpp's own log (captured with `llama_log_set`), not computed here. The low-level ctypes API of
llama-cpp-python is used directly (no `llama_cpp.Llama`), so that the device list, the load mode and
the log are ours. `llama_cpp` is imported lazily.

Facts of this llama.cpp version (llama-cpp-python 0.3.36), read in its source and checked here:

- **Buffer lines** (`%10s`/`%12s` right-aligned buffer names, `%8.2f` MiB), per buffer type:
  `load_tensors: <name> model buffer size = N MiB`, `llama_kv_cache: <name> KV buffer size = N MiB`,
  `sched_reserve: <name> compute buffer size = N MiB`, `llama_context: <name>  output buffer size = N MiB`.
  Names: `CPU_Mapped` (mmapped weights), `CPU` (host buffers), `CPU_REPACK` (weights repacked for the
  CPU's SIMD kernels, for the types and CPUs that have such kernels), `RPC<i>[host:port]` (device i
  of an RPC server), `CUDA<i>` (a local GPU) and `CUDA_Host` (a GPU backend's pinned host buffer type: the
  host's compute buffer when the first device is that GPU, the output buffer when the output layer is on
  it, host weights with mmap off; llama-context.cpp, llama-model.cpp). A compute buffer
  is only printed when it is larger than 1 byte. Each device llama.cpp will use is first announced as
  `llama_prepare_model_devices: using device CUDA0 (NVIDIA H200) (0000:18:00.0) - N MiB free` (llama.cpp),
  the id a CUDA GPU's PCI bus id (`cudaDeviceGetPCIBusId`, lowercased: ggml-cuda.cu), "unknown id" where the
  backend has none; harness.llama.nvidia matches it to nvidia-smi's GPU.
- **Rounding.** Each printed value is the byte size / 2**20 rounded to 2 decimals, so it is within
  0.005 MiB (5,243 bytes) of the truth; `*_bytes` fields here are `round(MiB * 2**20)` per line, summed.
- **Layers.** `offloaded X/Y layers to GPU`, Y = n_layer + 1 (the output layer is the "+1" and the
  first to be offloaded). Repeating layers are offloaded from the last one backwards; each carries its
  KV cache, so with n_gpu_layers = g the device holds KV for g - 1 layers (the output layer has none).
  Printed whenever the build supports offload (an RPC build always does), also for 0 layers, and
  also when there is no offload device at all: with no GPU and no RPC device llama.cpp still prints
  "offloaded 10/31 layers to GPU" and keeps everything on the CPU. Only the devices it says it is
  `using device …` and their buffers prove an offload (`EngineReport.n_layers_on_devices`).
- **What a model buffer holds.** `CPU_Mapped` is the mmapped file range from the first to the last
  host tensor, so with partial offload it can include offloaded tensors' bytes (SmolLM2, 10 of 31
  layers on RPC: CPU_Mapped 92.10 MiB = the whole file, RPC0 47.71 MiB). A tied output weight is
  copied to the device holding the output layer (SmolLM2: token_embd's 28.69 MiB on RPC0 at 1 layer).
- **Context length.** n_ctx is padded up to a multiple of 256 (`GGML_PAD(n_ctx, 256)`); the KV cache
  then has that many cells (SWA layers of an iSWA model get their own, smaller cache).
- **KV cache types.** `type_k`/`type_v` are ggml type ids: f32, f16 (default), bf16, q8_0, q4_0,
  q4_1, iq4_nl, q5_0, q5_1 (llama.cpp's `--cache-type-k/-v` list). A quantized V cache needs flash
  attention: with `flash_attn_type` AUTO llama.cpp turns it on ("enabling flash_attn since it is
  required for quantized V cache"), with DISABLED it refuses to create the context. A quantized K
  cache with flash attention needs head sizes divisible by the type's block size (32).
- **Flash attention** is `llama_context_params.flash_attn_type`, an enum: AUTO = -1 (default:
  probed per device at context creation, "Flash Attention enabled" / "... not supported, set to
  disabled"), DISABLED = 0, ENABLED = 1. There is no `flash_attn` bool any more.
- **Simulated allocation.** `llama_model_params.no_alloc` with `load_mode = LLAMA_LOAD_MODE_NONE`
  (0) loads only metadata; compute buffers are then reported as a real allocation would have them,
  while model and KV buffers print as 0.00 MiB (the `llama_kv_cache: size = …` summary line still gives
  the KV size that would have been allocated). Host weights print as `CPU`, not `CPU_Mapped`. No decode.
  With the default load mode (AUTO = -1, which picks mmap) a GGML_ASSERT aborts the process, so
  both are set together here.
- **Load errors.** `llama_model_load_from_file` returns NULL; the reason is only in the log
  (`llama_model_load: error loading model: …`). EngineError carries those lines.
- **Aborts.** Some failures are GGML_ABORT/GGML_ASSERT, which end the process and cannot be caught:
  an RPC server that cannot be reached, dies or answers garbage after its HELLO ("ggml-rpc.cpp:566:
  Remote RPC server crashed or returned malformed response", seen here with a peer that closes after
  the HELLO), an RPC protocol mismatch, sampling with no logits (an empty prompt: "llama-sampler.cpp:940:
  GGML_ASSERT(logits != nullptr) failed"). By default ggml then runs gdb on the process, whose output
  lands partly on stdout. `ggml_set_abort_callback` (libggml-base) replaces that: ours writes one line on
  stderr and exits with EngineError's code (`_contain_aborts`). Endpoints are still probed
  (harness.llama.rpc.connect) before llama.cpp sees them, and `load_and_report(isolated=True)` loads in a child
  process, so that a load onto a peer that misbehaves after the HELLO is an EngineError here.
- **Threads.** ggml's thread pool holds at most GGML_MAX_N_THREADS (512) threads and llama.cpp does not
  check n_threads: 100000 crashed with SIGSEGV here.
- **Ctrl-C.** A SIGINT that arrives while llama.cpp runs C code is handled when Python next runs, which
  during a load is our log callback: a KeyboardInterrupt raised there is swallowed by ctypes ("Exception
  ignored on calling ctypes callback function") and the load went on. While the log is captured, SIGINT
  inside one of our callbacks is only noted; the progress callback then cancels the load, and the
  interrupt is raised once llama.cpp has returned (`LogCapture.check_interrupt`).
- **Tensor overrides** (`llama_model_params.tensor_buft_overrides`, a NULL-terminated array of
  {const char * pattern; ggml_backend_buffer_type_t buft}): each tensor name is tried against the patterns
  in order with std::regex_search; to the CPU buffer type (ggml_backend_dev_buffer_type of the CPU device,
  which is ggml_backend_cpu_buffer_type()) the tensor then gets the host's buffer list, CPU_REPACK included.
  Each match is logged at DEBUG level only: `tensor blk.0.ffn_up_exps.weight (0 MiB iq4_nl) buffer type
  overridden to CPU_REPACK` (the buffer type chosen, before mmap swaps a GPU's host buffer for CPU; a name
  created twice, a tied token_embd or rope_freqs, is logged at each creation), as is each layer's device:
  `load_tensors: layer   3 assigned to device RPC0, is_swa = 0` (the device's name, no RPC endpoint).
  LogCapture keeps those two kinds of DEBUG line apart (`placement_lines`), EngineReport.tensor_placed reads
  them. With mmap, llama.cpp warns once: "tensor overrides to CPU are used with mmap enabled - consider
  using --load-mode none for better performance".
- **Log levels** of this ggml: DEBUG = 1, INFO = 2, WARN = 3, ERROR = 4, CONT = 5 (continues the
  previous line). llama-cpp-python's own `_logger` still maps 1 to INFO; it is restored afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from harness import settings
from harness.errors import EngineError, HarnessError, UsageError
from harness.gguf import ggml_types, roles
from harness.llama import clib, nvidia, rpc
from harness.offload.hardware import GGML_MAX_N_THREADS
from harness.offload.placement import KV_TYPES, ContextParams

MIB = 1024 * 1024
# half of the last printed digit (0.01 MiB), in bytes, rounded up: the error bound of one printed value
MIB_PRINT_TOLERANCE_BYTES = 5243

LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CONT = 1, 2, 3, 4, 5

FLASH_ATTN_AUTO, FLASH_ATTN_DISABLED, FLASH_ATTN_ENABLED = -1, 0, 1
LOAD_MODE_NONE = 0

_BUFFER_RE = re.compile(
    r"^\w+: +(?P<name>\S+) +(?P<kind>model|KV|RS|compute|output) buffer size = +"
    r"(?P<mib>\d+\.\d+) MiB$"
)
_OFFLOADED_RE = re.compile(r"offloaded (?P<n>\d+)/(?P<total>\d+) layers to GPU")
_USING_DEVICE_RE = re.compile(r"using device (?P<name>\S+) \((?P<desc>.*)\) \((?P<id>.*)\) - (?P<free>\d+) MiB free$")
_N_CTX_RE = re.compile(r"^llama_context: n_ctx += (?P<n>\d+)$")
_FA_SET_RE = re.compile(r"^llama_context: flash_attn += (?P<v>\w+)$")
_FA_RESOLVED_RE = re.compile(r"Flash Attention (?P<v>enabled|not supported)")
_LAYER_DEVICE_RE = re.compile(r"^load_tensors: layer +(?P<il>\d+) assigned to device (?P<dev>\S+), is_swa = \d+$")
_OVERRIDDEN_RE = re.compile(r"^tensor (?P<name>\S+) \(.*\) buffer type overridden to (?P<buft>\S+)$")
_KV_SIZE_RE = re.compile(
    r"^llama_kv_cache: size = +(?P<mib>\d+\.\d+) MiB \( *(?P<cells>\d+) cells, "
    r"+(?P<layers>\d+) layers, +(?P<seqs>\d+)/(?P<streams>\d+) seqs\), "
    r"K \((?P<tk>\w+)\): +(?P<k_mib>\d+\.\d+) MiB, V \((?P<tv>\w+)\): +(?P<v_mib>\d+\.\d+) MiB$"
)


def mib_to_bytes(mib: float) -> int:
    """A printed MiB value in bytes (exact to ±MIB_PRINT_TOLERANCE_BYTES)."""
    return round(mib * MIB)


@dataclass(frozen=True)
class BufferReport:
    """What llama.cpp printed for one buffer type, summed over its lines (a name can print several times:
    one model buffer per split file, one KV buffer per cache of an iSWA model)."""

    name: str
    model_bytes: int = 0
    kv_bytes: int = 0  # KV cache, and recurrent state ("RS buffer") for recurrent models
    compute_bytes: int = 0
    output_bytes: int = 0
    model_mib: float = 0.0
    kv_mib: float = 0.0
    compute_mib: float = 0.0
    output_mib: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def is_rpc(self) -> bool:
        return self.name.startswith("RPC")

    @property
    def is_host(self) -> bool:
        """In this host's RAM: CPU, CPU_Mapped, CPU_REPACK, and pinned host buffers of a GPU backend
        ("CUDA_Host"…). Everything else is on an offload device (an RPC server's RAM counts as a device)."""
        return self.name.startswith("CPU") or self.name.endswith("_Host")


@dataclass(frozen=True)
class KvCacheReport:
    """One `llama_kv_cache: size = …` line: one cache (an iSWA model has a non-SWA and a SWA one)."""

    cells: int
    layers: int
    seqs: int
    streams: int
    type_k: str
    type_v: str
    k_mib: float
    v_mib: float
    size_mib: float


@dataclass(frozen=True)
class OffloadDevice:
    """A `using device NAME (DESCRIPTION) (ID) - N MiB free` line: a device llama.cpp will offload to."""

    name: str  # "RPC0", "CUDA0"…
    description: str  # an RPC device's endpoint, a GPU's model name
    free_mib: int
    device_id: str = ""  # a CUDA GPU's PCI bus id ("0000:18:00.0"); "" where llama.cpp printed "unknown id"


@dataclass(frozen=True)
class EngineReport:
    model_path: str
    n_gpu_layers: int
    rpc_endpoints: tuple[str, ...]
    type_k: str
    type_v: str
    no_alloc: bool
    buffers: tuple[BufferReport, ...]  # in the order llama.cpp first named them
    kv_caches: tuple[KvCacheReport, ...]
    offload_devices: tuple[OffloadDevice, ...]
    n_layers_offloaded: int | None  # as logged ("offloaded X/Y"); None: no such line. See n_layers_on_devices
    n_layers_total: int | None
    n_ctx: int | None  # as the context reports it: padded to a multiple of 256
    flash_attn: bool | None  # as resolved by llama.cpp (AUTO is probed per device)
    n_tokens_decoded: int
    load_s: float  # model load + context creation
    decode_s: float | None
    log_lines: tuple[str, ...] = field(repr=False)  # llama.cpp's INFO/WARN/ERROR lines, in order
    layer_devices: tuple[str, ...] = ()  # the device of each layer 0..n_layer (the output layer last), as logged
    overridden: tuple[tuple[str, str], ...] = ()  # (tensor, buffer type) per creation an override pattern matched
    gpus: tuple[str, ...] = ()  # the local GPUs loaded on by name ("CUDA0"…), before the RPC devices
    # nvidia-smi's view of every GPU before the load and while the model was loaded (after the decode): () when
    # not asked for or where nvidia-smi is missing
    gpu_memory_before: tuple[nvidia.GpuMemory, ...] = ()
    gpu_memory_after: tuple[nvidia.GpuMemory, ...] = ()

    def gpu_used_bytes(self, name: str) -> tuple[int | None, int | None]:
        """(used before the load, used while loaded) on the local GPU llama.cpp calls ``name`` ("CUDA0"), as
        nvidia-smi counts it (every process's memory on that GPU); None where not measured."""
        dev = next((d for d in self.offload_devices if d.name == name), None)
        device_id = dev.device_id if dev is not None else None
        before = nvidia.gpu_for(self.gpu_memory_before, device_id)
        after = nvidia.gpu_for(self.gpu_memory_after, device_id)
        return (
            before.used_bytes if before is not None else None,
            after.used_bytes if after is not None else None,
        )

    def tensor_placed(self, name: str) -> str | None:
        """Where llama.cpp put a tensor, by its DEBUG lines: the buffer type an override gave it ("CPU",
        "CPU_REPACK"), else its block's device ("RPC0", "CPU"); None for tensors of no block
        (input and output layers), which the log does not name."""
        buft = dict(self.overridden).get(name)
        if buft is not None:
            return buft
        block = roles.block_of(name)
        return self.layer_devices[block] if block is not None and block < len(self.layer_devices) else None

    @property
    def n_layers_on_devices(self) -> int:
        """Layers really offloaded: 0 when llama.cpp named no offload device or put no weights on one,
        whatever it logged."""
        weights_on_devices = any(b.model_bytes for b in self.device_buffers)
        if not self.offload_devices or (not weights_on_devices and not self.no_alloc):
            return 0
        return self.n_layers_offloaded or 0

    def buffer(self, name: str) -> BufferReport | None:
        return next((b for b in self.buffers if b.name == name), None)

    def actual_bytes(self, planned: str) -> int:
        """What llama.cpp allocated on a planned device: "host", "RPC[host:port]" (its buffers print as
        RPC<i>[host:port]) or a local GPU's name."""
        if planned == "host":
            return sum(b.total_bytes for b in self.host_buffers)
        endpoint = rpc.endpoint_of(planned)
        if endpoint is not None:
            return sum(b.total_bytes for b in self.buffers if rpc.endpoint_of(b.name) == endpoint)
        return sum(b.total_bytes for b in self.buffers if b.name.startswith(planned))

    @property
    def rpc_buffers(self) -> tuple[BufferReport, ...]:
        return tuple(b for b in self.buffers if b.is_rpc)

    @property
    def host_buffers(self) -> tuple[BufferReport, ...]:
        return tuple(b for b in self.buffers if b.is_host)

    @property
    def device_buffers(self) -> tuple[BufferReport, ...]:
        return tuple(b for b in self.buffers if not b.is_host)


def kv_type(value: str | int) -> int:
    """A KV cache type by name ("f16", "q8_0"…: placement.KV_TYPES) or ggml type id, as the ggml type id
    (llama_context_params.type_k/type_v take GGML_TYPE_* values)."""
    if isinstance(value, int):
        if value not in {ggml_types.type_by_name(name) for name in KV_TYPES}:
            raise EngineError(f"ggml type {value} is not a KV cache type llama.cpp accepts ({', '.join(KV_TYPES)})")
        return value
    if value.lower() not in KV_TYPES:
        raise EngineError(f"KV cache type {value!r} is not one of {', '.join(KV_TYPES)}")
    return ggml_types.type_by_name(value)


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineError(f"llama-cpp-python is not installed ({exc}); run `make install`") from None
    _contain_aborts()
    return llama_cpp


_ABORT_PATH_RE = re.compile(r"^\S*/(?=[^/\s]+:\d+: )")  # the build folder before "ggml-rpc.cpp:566: …"


def abort_reason(message: str) -> str:
    """ggml's abort message as one line, without the path of the folder llama.cpp was built in."""
    first = message.strip().splitlines()[0] if message.strip() else "no reason given"
    return _ABORT_PATH_RE.sub("", first)


@cache
def _contain_aborts() -> None:
    """Make a GGML_ABORT/GGML_ASSERT one line on stderr and EngineError's exit code, instead of ggml's
    default: the message, then gdb attached to print a backtrace (partly on stdout), then SIGABRT. The
    process must still end: llama.cpp's state is broken and the callback may not return. HARNESS_DEBUG
    keeps ggml's default, backtrace included."""
    if settings.debug():
        return
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # for what bypasses the callback (an uncaught C++ exception)
    from llama_cpp import llama_cpp as bindings

    try:
        setter = bindings._lib.ggml_set_abort_callback  # dlsym through libllama: its own libggml-base
    except AttributeError:  # a ggml without it: the environment variable above still spares the backtrace
        return
    setter.argtypes = [_ABORT_CALLBACK]
    setter.restype = ctypes.c_void_p
    setter(_on_abort)


def _abort(message: bytes | None) -> None:
    reason = abort_reason((message or b"").decode("utf-8", errors="replace"))
    with contextlib.suppress(Exception):  # stdout may be gone; the line below matters more
        sys.stdout.flush()  # what was streamed so far stays
    try:
        os.write(2, f"error: llama.cpp aborted: {reason}\n".encode())
    finally:
        os._exit(EngineError.exit_code)


_ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_on_abort = _ABORT_CALLBACK(_abort)  # referenced for the life of the process, as ggml keeps it


def check_threads(n_threads: int | None) -> int:
    """The thread count to give llama.cpp: n_threads, or every core for None (or 0)."""
    if not n_threads:
        return os.cpu_count() or 1
    if not 1 <= n_threads <= GGML_MAX_N_THREADS:
        raise UsageError(f"--threads {n_threads}: ggml runs 1..{GGML_MAX_N_THREADS} threads")
    return n_threads


def _kv_type_name(type_id: int) -> str:
    return ggml_types.type_name(type_id).lower()


# --- the log ---------------------------------------------------------------------------------------------------


class LogCapture:
    """llama.cpp's log as whole lines with their levels; CONT pieces are joined to the line they continue."""

    def __init__(self, keep_debug: bool = False) -> None:
        self.keep_debug = keep_debug
        self.lines: list[tuple[int, str]] = []
        self._partial = ""
        self._level = LOG_INFO
        self._lock = threading.Lock()
        self.interrupted = False  # a Ctrl-C arrived inside one of our callbacks, not yet raised
        self.placement_lines: list[str] = []  # DEBUG lines saying where layers and overridden tensors went

    def check_interrupt(self) -> None:
        """Raise the KeyboardInterrupt that arrived while llama.cpp was running (call after each C call)."""
        if self.interrupted:
            self.interrupted = False
            raise KeyboardInterrupt

    def feed(self, level: int, text: str) -> None:
        with self._lock:
            if level != LOG_CONT:
                if self._partial:
                    self._emit(self._partial)
                    self._partial = ""
                self._level = level
            *complete, self._partial = (self._partial + text).split("\n")
            for line in complete:
                self._emit(line)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                self._emit(self._partial)
                self._partial = ""

    def _emit(self, line: str) -> None:
        if self._level == LOG_DEBUG and (_LAYER_DEVICE_RE.match(line) or _OVERRIDDEN_RE.match(line)):
            self.placement_lines.append(line)
        if self._level != LOG_DEBUG or self.keep_debug:
            self.lines.append((self._level, line))

    def text_lines(self) -> tuple[str, ...]:
        return tuple(line for _, line in self.lines)

    def errors(self) -> list[str]:
        return [line.strip() for level, line in self.lines if level == LOG_ERROR and line.strip()]


# The code of Python functions that llama.cpp calls back through ctypes, which swallows (prints and
# drops) whatever they raise: a Ctrl-C handled inside one of them is noted instead (_note_interrupts)
_CALLBACK_CODES: set = set()


def c_callback(fn: Callable) -> Callable:
    """Mark ``fn`` as called from C (a log, progress or evaluation callback): a Ctrl-C that Python handles
    while it runs is raised after llama.cpp returns, instead of being lost inside ctypes."""
    _CALLBACK_CODES.add(fn.__code__)
    return fn


def _in_callback(frame) -> bool:
    while frame is not None:
        if frame.f_code in _CALLBACK_CODES:
            return True
        frame = frame.f_back
    return False


@contextmanager
def _note_interrupts(capture: LogCapture) -> Iterator[None]:
    """While llama.cpp runs, a SIGINT handled in one of our callbacks sets capture.interrupted (raised by
    capture.check_interrupt once C returns); anywhere else it is the usual KeyboardInterrupt. Only the
    main thread gets signals, and a handler other than Python's default is left alone."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def on_sigint(signum: int, frame) -> None:
        if _in_callback(frame):
            capture.interrupted = True
            return
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def captured_log(capture: LogCapture) -> Iterator[LogCapture]:
    """Route llama.cpp's (and ggml's) log into capture; restore the previous callback afterwards. A
    Ctrl-C that arrives meanwhile is raised once llama.cpp returns, at the latest when this block ends.

    The logger is process-global in llama.cpp: do not load models from two threads at once.
    """
    llama_cpp = _llama_cpp()
    prev_cb = llama_cpp.llama_log_callback()
    prev_ud = ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(prev_cb), ctypes.byref(prev_ud))

    @c_callback
    def _on_log(level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
        try:
            if text:
                capture.feed(level, text.decode("utf-8", errors="replace"))
        except KeyboardInterrupt:  # raised by another handler than ours: ctypes would drop it
            capture.interrupted = True

    callback = llama_cpp.llama_log_callback(_on_log)  # referenced until restored below
    llama_cpp.llama_log_set(callback, None)
    try:
        with _note_interrupts(capture):
            yield capture
    finally:
        llama_cpp.llama_log_set(prev_cb, prev_ud)
        capture.flush()
        del callback
    capture.check_interrupt()


# --- parsing -----------------------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    buffers: dict[str, dict[str, float | int]] = field(default_factory=dict)
    kv_caches: list[KvCacheReport] = field(default_factory=list)
    offload_devices: list[OffloadDevice] = field(default_factory=list)
    n_layers_offloaded: int | None = None
    n_layers_total: int | None = None
    n_ctx: int | None = None
    flash_attn: bool | None = None


_KIND_FIELD = {"model": "model", "KV": "kv", "RS": "kv", "compute": "compute", "output": "output"}


def parse_log(lines: Sequence[str]) -> _Parsed:
    """The buffer report and settings that llama.cpp printed, from its log lines."""
    out = _Parsed()
    for line in lines:
        line = line.rstrip()
        if m := _BUFFER_RE.match(line):
            entry = out.buffers.setdefault(m["name"], {})
            key = _KIND_FIELD[m["kind"]]
            mib = float(m["mib"])
            entry[f"{key}_mib"] = entry.get(f"{key}_mib", 0.0) + mib
            entry[f"{key}_bytes"] = entry.get(f"{key}_bytes", 0) + mib_to_bytes(mib)
        elif m := _USING_DEVICE_RE.search(line):
            device_id = "" if m["id"] == "unknown id" else m["id"]
            out.offload_devices.append(OffloadDevice(m["name"], m["desc"], int(m["free"]), device_id))
        elif m := _OFFLOADED_RE.search(line):
            out.n_layers_offloaded, out.n_layers_total = int(m["n"]), int(m["total"])
        elif m := _N_CTX_RE.match(line):
            out.n_ctx = int(m["n"])
        elif m := _FA_SET_RE.match(line):
            out.flash_attn = {"enabled": True, "disabled": False}.get(m["v"])
        elif m := _FA_RESOLVED_RE.search(line):
            out.flash_attn = m["v"] == "enabled"
        elif m := _KV_SIZE_RE.match(line):
            out.kv_caches.append(
                KvCacheReport(
                    int(m["cells"]),
                    int(m["layers"]),
                    int(m["seqs"]),
                    int(m["streams"]),
                    m["tk"],
                    m["tv"],
                    float(m["k_mib"]),
                    float(m["v_mib"]),
                    float(m["mib"]),
                )
            )
    return out


def parse_placement(lines: Sequence[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(device per layer 0..n_layer, (tensor, buffer type) per overridden tensor) from llama.cpp's DEBUG
    lines (LogCapture.placement_lines)."""
    layers: dict[int, str] = {}
    overridden: list[tuple[str, str]] = []
    for line in lines:
        if m := _LAYER_DEVICE_RE.match(line):
            layers[int(m["il"])] = m["dev"]
        elif m := _OVERRIDDEN_RE.match(line):
            overridden.append((m["name"], m["buft"]))
    return tuple(layers[il] for il in sorted(layers)), tuple(overridden)


# --- loading -----------------------------------------------------------------------------------------------------


@cache
def _backend_initialised() -> bool:
    _llama_cpp().llama_backend_init()
    return True


def has_field(structure: type[ctypes.Structure], name: str) -> bool:
    return any(f[0] == name for f in structure._fields_)


class _BuftOverride(ctypes.Structure):
    """llama.h struct llama_model_tensor_buft_override (llama-cpp-python declares the field as a void pointer
    and leaves the structure out)."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


OVERRIDE_BUFFER_TYPES = ("CPU",)  # the buffer types a tensor override may name here


@cache
def _cpu_buffer_type() -> int:
    """ggml_backend_dev_buffer_type of the CPU device: ggml_backend_cpu_buffer_type(), the buffer type that
    llama.cpp's loader compares an override with to give the tensor the host's buffer list (CPU_REPACK…)."""
    g = clib.declare(rpc.backend_lib(), {"ggml_backend_dev_buffer_type": ([ctypes.c_void_p], ctypes.c_void_p)})
    cpu = g.ggml_backend_dev_by_type(rpc.GGML_BACKEND_DEVICE_TYPE_CPU)
    buft = g.ggml_backend_dev_buffer_type(cpu) if cpu else None
    if not buft:
        raise EngineError("llama.cpp has no CPU device: tensor overrides to CPU are not possible")
    return buft


def _override_array(tensor_overrides: Sequence[tuple[str, str]]) -> ctypes.Array | None:
    """The NULL-terminated llama_model_tensor_buft_override array for (pattern, buffer type) pairs, or None
    for none. Patterns are checked as Python regexes (llama.cpp's std::regex would throw while loading)."""
    if not tensor_overrides:
        return None
    entries = []
    for pattern, buft in tensor_overrides:
        if buft not in OVERRIDE_BUFFER_TYPES:
            raise EngineError(f"tensor override {pattern}={buft}: only {', '.join(OVERRIDE_BUFFER_TYPES)} is supported")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise EngineError(f"tensor override pattern {pattern!r} is not a regular expression: {exc}") from None
        entries.append((pattern.encode(), _cpu_buffer_type()))
    # ctypes keeps each pattern's bytes alive with the array (its _objects)
    return (_BuftOverride * (len(entries) + 1))(*entries, (None, None))


def _failure(what: str, capture: LogCapture) -> EngineError:
    capture.flush()
    reasons = capture.errors()
    detail = "; ".join(reasons[:4]) if reasons else "llama.cpp logged no reason"
    return EngineError(f"{what}: {detail}")


@dataclass
class Loaded:
    """A model and context llama.cpp holds open (inside `loaded_model`), with the log captured so far."""

    llama_cpp: Any
    model: int
    ctx: int
    capture: LogCapture
    load_s: float
    keepalive: tuple = ()  # ctypes arrays llama.cpp points into


@contextmanager
def loaded_model(
    path: str | os.PathLike[str],
    n_gpu_layers: int = 0,
    n_ctx: int = 2048,
    devices: Sequence[str] = (),
    *,
    type_k: str | int = "f16",
    type_v: str | int = "f16",
    flash_attn: bool | None = None,
    n_batch: int = 2048,
    n_ubatch: int = 512,
    n_seq_max: int = 1,
    n_threads: int | None = None,
    swa_full: bool | None = None,
    no_alloc: bool = False,
    tensor_split: Sequence[float] = (),
    cb_eval: Any = None,
    tensor_overrides: Sequence[tuple[str, str]] = (),
    gpus: Sequence[str] = (),
) -> Iterator[Loaded]:
    """Load ``path`` and create a context (see load_and_report for the parameters); free both on exit,
    also on errors, and restore the previous log callback."""
    llama_cpp = _llama_cpp()
    tk, tv = kv_type(type_k), kv_type(type_v)
    threads = check_threads(n_threads)
    dev_handles: list[int] = [_local_gpu_handle(name) for name in gpus]
    for endpoint in devices:
        try:
            dev_handles.extend(d.handle for d in rpc.connect(endpoint))
        except rpc.RpcError as exc:
            raise EngineError(str(exc)) from None
    _backend_initialised()

    mparams = llama_cpp.llama_model_default_params()
    device_array = (ctypes.c_void_p * (len(dev_handles) + 1))(*dev_handles, None)
    if dev_handles:
        mparams.devices = ctypes.cast(device_array, ctypes.c_void_p).value
    mparams.n_gpu_layers = n_gpu_layers
    split_array = None
    if tensor_split:
        if len(tensor_split) != len(dev_handles):
            raise EngineError(f"tensor_split has {len(tensor_split)} entries for {len(dev_handles)} devices")
        split_array = (ctypes.c_float * max(llama_cpp.llama_max_devices(), len(tensor_split)))(*tensor_split)
        mparams.tensor_split = split_array
    override_array = _override_array(tensor_overrides)
    if override_array is not None:
        mparams.tensor_buft_overrides = ctypes.cast(override_array, ctypes.c_void_p).value
    if no_alloc:
        missing = [f for f in ("no_alloc", "load_mode") if not has_field(llama_cpp.llama_model_params, f)]
        if missing:
            raise EngineError(
                f"this llama-cpp-python's llama_model_params lacks {', '.join(missing)}: "
                f"simulated allocation is not available"
            )
        mparams.no_alloc = True
        mparams.load_mode = LOAD_MODE_NONE

    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = n_ubatch
    cparams.n_seq_max = n_seq_max
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.type_k, cparams.type_v = tk, tv
    if swa_full is not None:
        cparams.swa_full = swa_full
    cparams.flash_attn_type = {None: FLASH_ATTN_AUTO, True: FLASH_ATTN_ENABLED, False: FLASH_ATTN_DISABLED}[flash_attn]
    if cb_eval is not None:  # the scheduler's evaluation callback (harness.imatrix)
        cparams.cb_eval = cb_eval
        cparams.cb_eval_user_data = None

    capture = LogCapture()

    @c_callback
    def _on_progress(progress: float, user_data: ctypes.c_void_p) -> bool:
        return not capture.interrupted  # false cancels the load (Ctrl-C, noted by captured_log)

    progress_callback = llama_cpp.llama_progress_callback(_on_progress)
    mparams.progress_callback = progress_callback
    model = ctx = None
    with captured_log(capture):
        try:
            t0 = time.perf_counter()
            model = llama_cpp.llama_model_load_from_file(os.fsencode(path), mparams)
            capture.check_interrupt()
            if not model:
                raise _failure(f"llama.cpp could not load {os.fspath(path)}", capture)
            ctx = llama_cpp.llama_init_from_model(model, cparams)
            capture.check_interrupt()
            if not ctx:
                raise _failure(
                    f"llama.cpp could not create a context for {os.fspath(path)} (n_ctx {n_ctx}, "
                    f"K {_kv_type_name(tk)}, V {_kv_type_name(tv)})",
                    capture,
                )
            keepalive = (device_array, split_array, override_array, cb_eval, progress_callback)
            yield Loaded(llama_cpp, model, ctx, capture, time.perf_counter() - t0, keepalive)
        finally:
            if ctx:
                llama_cpp.llama_free(ctx)
            if model:
                llama_cpp.llama_model_free(model)


def context_settings(cp: ContextParams) -> dict[str, Any]:
    """The load_and_report / loaded_model keywords that make llama.cpp's context the one ``cp`` plans."""
    return dict(
        type_k=cp.type_k,
        type_v=cp.type_v,
        flash_attn=cp.flash_attn,
        n_batch=cp.n_batch,
        n_ubatch=cp.n_ubatch,
        n_seq_max=cp.n_seq_max,
        swa_full=cp.swa_full,
    )


def report_of(
    loaded_path: str | os.PathLike[str],
    capture: LogCapture,
    *,
    n_gpu_layers: int,
    devices: Sequence[str],
    type_k: str | int,
    type_v: str | int,
    no_alloc: bool,
    load_s: float,
    n_decoded: int = 0,
    decode_s: float | None = None,
    gpus: Sequence[str] = (),
    gpu_memory_before: Sequence[nvidia.GpuMemory] = (),
    gpu_memory_after: Sequence[nvidia.GpuMemory] = (),
) -> EngineReport:
    parsed = parse_log(capture.text_lines())
    layer_devices, overridden = parse_placement(capture.placement_lines)
    return EngineReport(
        model_path=os.fspath(loaded_path),
        n_gpu_layers=n_gpu_layers,
        rpc_endpoints=tuple(devices),
        type_k=_kv_type_name(kv_type(type_k)),
        type_v=_kv_type_name(kv_type(type_v)),
        no_alloc=no_alloc,
        buffers=tuple(BufferReport(name, **fields) for name, fields in parsed.buffers.items()),
        kv_caches=tuple(parsed.kv_caches),
        offload_devices=tuple(parsed.offload_devices),
        n_layers_offloaded=parsed.n_layers_offloaded,
        n_layers_total=parsed.n_layers_total,
        n_ctx=parsed.n_ctx,
        flash_attn=parsed.flash_attn,
        n_tokens_decoded=n_decoded,
        load_s=load_s,
        decode_s=decode_s,
        log_lines=capture.text_lines(),
        layer_devices=layer_devices,
        overridden=overridden,
        gpus=tuple(gpus),
        gpu_memory_before=tuple(gpu_memory_before),
        gpu_memory_after=tuple(gpu_memory_after),
    )


def load_and_report(
    path: str | os.PathLike[str],
    n_gpu_layers: int = 0,
    n_ctx: int = 2048,
    devices: Sequence[str] = (),
    *,
    type_k: str | int = "f16",
    type_v: str | int = "f16",
    flash_attn: bool | None = None,
    n_batch: int = 2048,
    n_ubatch: int = 512,
    n_seq_max: int = 1,
    n_threads: int | None = None,
    swa_full: bool | None = None,
    decode: bool = True,
    n_decode_tokens: int = 8,
    no_alloc: bool = False,
    tensor_split: Sequence[float] = (),
    tensor_overrides: Sequence[tuple[str, str]] = (),
    isolated: bool = False,
    gpus: Sequence[str] = (),
    gpu_memory: bool = False,
) -> EngineReport:
    """Load path with n_gpu_layers on the given devices, create a context, optionally decode a few
    tokens, and return llama.cpp's own account of every buffer.

    devices: RPC endpoints ("host:port"); every device each server lends is passed, in order, in
    `llama_model_params.devices`, after the local ``gpus``. Both empty: llama.cpp's default, all local GPUs
    (none on a CPU-only host).
    gpus: local GPUs by the names this build gives them ("CUDA0"…: local_gpus), first in the device list.
    flash_attn: None = AUTO (llama.cpp probes), True = ENABLED, False = DISABLED.
    swa_full: full-size SWA cache (None: the bindings' default, True; llama.cpp's CLI default is False,
    which sizes the SWA cache to the window plus a ubatch instead of n_ctx).
    no_alloc: simulate allocations (compute buffers only; model and KV print as 0; no decode).
    tensor_split: one weight per device (llama_model_params.tensor_split); empty: llama.cpp splits by
    the devices' free memory.
    tensor_overrides: (pattern, "CPU") pairs, llama_model_params.tensor_buft_overrides in order (``-ot
    PATTERN=CPU``; placement.n_cpu_moe_patterns for --n-cpu-moe): tensors whose names a pattern matches go
    to the host whatever their layer's device. The report says where each went (EngineReport.tensor_placed).
    isolated: load in a child process, so that llama.cpp dying (an RPC peer that answers garbage or
    hangs up mid-load aborts its client) is an EngineError here, not the end of this process.
    gpu_memory: ask nvidia-smi for every GPU's used memory before the load and again while the model is
    loaded, after the decode (EngineReport.gpu_used_bytes); in the child process when isolated, whose CUDA
    context, buffers and pool are then all the difference holds.
    Everything llama.cpp allocated is freed before returning, also on errors.
    """
    if n_decode_tokens < 1:
        raise EngineError(f"n_decode_tokens must be at least 1, not {n_decode_tokens}")
    check_threads(n_threads)
    load = dict(
        type_k=type_k,
        type_v=type_v,
        flash_attn=flash_attn,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        n_seq_max=n_seq_max,
        n_threads=n_threads,
        swa_full=swa_full,
        no_alloc=no_alloc,
        tensor_split=tuple(tensor_split),
        tensor_overrides=tuple((str(p), str(b)) for p, b in tensor_overrides),
        gpus=tuple(gpus),
    )
    if isolated:
        onto = f" onto {', '.join((*gpus, *devices))}" if gpus or devices else ""
        return run_isolated(
            "load_and_report",
            (os.fspath(path), n_gpu_layers, n_ctx, tuple(devices)),
            {**load, "decode": decode, "n_decode_tokens": n_decode_tokens, "gpu_memory": gpu_memory},
            f"loading {os.fspath(path)}{onto} failed",
        )
    n_decoded, decode_s = 0, None
    memory_before = nvidia.query_memory() if gpu_memory else ()
    memory_after: tuple[nvidia.GpuMemory, ...] = ()
    with loaded_model(path, n_gpu_layers, n_ctx, devices, **load) as lm:
        if decode and not no_alloc:
            t1 = time.perf_counter()
            n_decoded = _decode(lm.llama_cpp, lm.model, lm.ctx, n_decode_tokens, lm.capture)
            decode_s = time.perf_counter() - t1
        if gpu_memory:
            memory_after = nvidia.query_memory()
        capture, load_s = lm.capture, lm.load_s
    return report_of(
        path,
        capture,
        n_gpu_layers=n_gpu_layers,
        devices=devices,
        type_k=type_k,
        type_v=type_v,
        no_alloc=no_alloc,
        load_s=load_s,
        n_decoded=n_decoded,
        decode_s=decode_s,
        gpus=gpus,
        gpu_memory_before=memory_before,
        gpu_memory_after=memory_after,
    )


# --- a child process for what can kill this one ------------------------------------------------------------------

_CHILD_CODE = "from harness.llama.engine import _child_main; _child_main()"
# what run_isolated may run: a function name -> its module
_ISOLATED = {"load_and_report": "harness.llama.engine", "reserve_here": "harness.llama.dryrun"}


def run_isolated(name: str, args: tuple, kwargs: dict[str, Any], what: str) -> Any:
    """``name(*args, **kwargs)``, a function of this module, run in a child process: its result, or the
    HarnessError it raised; an EngineError saying ``what`` and why when llama.cpp killed the child."""
    payload = pickle.dumps((name, args, kwargs))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=rpc.child_env(),
    )
    try:
        out, err = proc.communicate(payload)
    finally:  # also on Ctrl-C: never leave the child behind
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode == 0 and out:
        status, value = pickle.loads(out)  # our own child's answer
        if status == "ok":
            return value
        if status == "error":
            raise value
        raise RuntimeError(f"{what}: {value}")  # a bug of ours in the child
    raise EngineError(f"{what}: {_death(proc.returncode, err.decode('utf-8', errors='replace'))}")


def _death(returncode: int, stderr: str) -> str:
    """Why a child process ended without an answer, in a few words."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = next((line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")), None)
    if said:
        return said
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"llama.cpp died of {name}"
    return f"the process exited with status {returncode}" + (f" ({lines[-1][:300]})" if lines else "")


def _child_main() -> None:
    """The child's side of run_isolated: a pickled call on stdin, a pickled answer on stdout."""
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever C code prints goes with stderr, away from the answer
    rpc.die_with_parent()
    name, args, kwargs = pickle.load(sys.stdin.buffer)  # from our parent
    if name not in _ISOLATED:
        raise SystemExit(f"error: {name} is not run in a child process")
    try:
        result = ("ok", getattr(importlib.import_module(_ISOLATED[name]), name)(*args, **kwargs))
    except HarnessError as exc:
        result = ("error", exc)
    except Exception as exc:  # reported by the parent as the bug it is
        result = ("bug", f"{type(exc).__name__}: {exc}")
    pickle.dump(result, answer)
    answer.close()
    os._exit(0)  # the answer is out: skip tearing down what llama.cpp left (server threads of a dry run)


def decode_batch(llama_cpp, ctx: int, tokens: Sequence[int], logits_for: Callable[[int], bool]) -> int:
    """Decode tokens at positions 0.. of sequence 0 in one llama_batch, with logits where ``logits_for(i)``;
    returns llama_decode's status."""
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = bool(logits_for(i))
        batch.n_tokens = len(tokens)
        return llama_cpp.llama_decode(ctx, batch)
    finally:
        llama_cpp.llama_batch_free(batch)


def _decode(llama_cpp, model: int, ctx: int, n_tokens: int, capture: LogCapture) -> int:
    """Decode one batch of n_tokens (BOS then fixed ids), logits for the last; returns tokens decoded."""
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    bos = llama_cpp.llama_vocab_bos(vocab)
    tokens = [bos if bos >= 0 else 0] + [(100 + 7 * i) % n_vocab for i in range(n_tokens - 1)]
    status = decode_batch(llama_cpp, ctx, tokens, lambda i: i == len(tokens) - 1)
    if status != 0:
        raise _failure(f"llama_decode failed with status {status}", capture)
    if not llama_cpp.llama_get_logits_ith(ctx, -1):
        raise _failure("llama_decode produced no logits", capture)
    return len(tokens)


@dataclass(frozen=True)
class LocalGPU:
    name: str  # "CUDA0"
    description: str
    free_bytes: int
    total_bytes: int


def _local_gpu_devices() -> Iterator[tuple[str, int]]:
    """(name, ggml device handle) of each GPU this engine build sees here, in ggml's order; RPC devices
    (also of type GPU) are left out."""
    _backend_initialised()
    so = rpc.backend_lib()
    for i in range(so.ggml_backend_dev_count()):
        dev = so.ggml_backend_dev_get(i)
        if so.ggml_backend_dev_type(dev) != 1:  # GGML_BACKEND_DEVICE_TYPE_GPU
            continue
        name = so.ggml_backend_dev_name(dev).decode()
        if not name.startswith("RPC"):
            yield name, dev


def local_gpus() -> tuple[LocalGPU, ...]:
    """GPUs this engine build can offload to here (CUDA, Vulkan, Metal…); RPC devices are not listed."""
    _backend_initialised()
    so = rpc.backend_lib()
    out = []
    for name, dev in _local_gpu_devices():
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        so.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(LocalGPU(name, so.ggml_backend_dev_description(dev).decode(), free.value, total.value))
    return tuple(out)


def _local_gpu_handle(name: str) -> int:
    """The ggml device handle of the local GPU ``name`` ("CUDA0"), for llama_model_params.devices."""
    found = dict(_local_gpu_devices())
    if name not in found:
        seen = ", ".join(found) or "none"
        raise EngineError(f"no local GPU named {name}: this llama.cpp build sees {seen}")
    return found[name]
