"""Compute buffers from llama.cpp's own reservation, taken without allocating (a dry run).

llama.cpp sizes each device's compute buffer by reserving its worst-case graphs and taking ggml-alloc's
peak. With ``llama_model_params.no_alloc`` (and ``load_mode`` none) it does exactly that without
allocating anything: the context prints each device's compute buffer as a real load would, in a
fraction of a second, while model and KV buffers print as 0 (those we know exactly from the header).

The devices are stand-ins: llama.cpp RPC servers on loopback, started inside the child process that
runs the dry runs (one thread each), so a plan for GPUs this machine does not have gets the graph
llama.cpp would build for that split. A model known only by its header (a registry architecture entry,
a header read from the Hub) is loaded from a sparse stand-in file (harness.gguf.standin).

Results are cached per (model, devices, layout, context, llama.cpp build) in the cache directory, so a
second plan asks llama.cpp nothing. A model llama.cpp refuses to load is an EngineError with llama.cpp's
own reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import settings
from harness.errors import EngineError, RpcError
from harness.llama import engine, rpc
from harness.offload.placement import ContextParams, n_cpu_moe_patterns

CACHE_VERSION = 1
CACHE_FOLDER = "reservations"
SERVER_START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Layout:
    """One split llama.cpp is asked to reserve for: n_gpu_layers and the per-device layer counts."""

    n_gpu_layers: int
    tensor_split: tuple[float, ...]
    n_cpu_moe: int = 0  # the routed experts of blocks 0..n_cpu_moe-1 overridden to the host (--n-cpu-moe)

    @property
    def key(self) -> str:
        moe = f"/moe{self.n_cpu_moe}" if self.n_cpu_moe else ""
        return f"{self.n_gpu_layers}:" + ",".join(f"{x:g}" for x in self.tensor_split) + moe


@dataclass(frozen=True)
class Reservation:
    """llama.cpp's compute buffers for one layout: per stand-in device (in order) and on the host."""

    device_compute_bytes: tuple[int, ...]
    host_compute_bytes: int


def available() -> str | None:
    """None when dry runs can be made here; else why not, in words a plan can show. Cheap: llama_cpp is
    not imported (a build without no_alloc is refused by the child, in words)."""
    try:
        folder = rpc.lib_dir()
    except RpcError as exc:
        return str(exc)
    if not (folder / "libggml-rpc.so").exists():
        return "llama-cpp-python was built without its RPC backend (CMAKE_ARGS=-DGGML_RPC=on)"
    return None


def engine_build() -> str:
    """What identifies the llama.cpp that answers: its libraries' sizes and times (a rebuild, another
    version or backend changes them); a stat, without importing the engine."""
    try:
        folder = rpc.lib_dir()
        return ";".join(
            f"{p.name}:{st.st_size}:{st.st_mtime_ns}" for p in sorted(folder.glob("lib*.so*")) if (st := p.stat())
        )
    except (OSError, RpcError):
        return "none"


def _cache_file(model_key: str, n_devices: int, cp: ContextParams) -> Path:
    what = json.dumps(
        [CACHE_VERSION, model_key, n_devices, asdict(cp), engine_build()], sort_keys=True, separators=(",", ":")
    )
    return settings.cache_dir() / CACHE_FOLDER / (hashlib.sha256(what.encode()).hexdigest()[:40] + ".json")


def _read_cache(path: Path) -> dict[str, Reservation]:
    try:
        raw = json.loads(path.read_text())
        return {k: Reservation(tuple(int(x) for x in v[0]), int(v[1])) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}  # absent or damaged: asked again, and rewritten


def _write_cache(path: Path, entries: dict[str, Reservation]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({k: [list(r.device_compute_bytes), r.host_compute_bytes] for k, r in entries.items()})
        )
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written costs time, not correctness


def reserve(
    model_path: str | os.PathLike[str] | Callable[[], str],
    model_key: str,
    n_devices: int,
    layouts: Sequence[Layout],
    cp: ContextParams,
) -> dict[Layout, Reservation]:
    """llama.cpp's compute buffers for each layout of ``model_path`` on ``n_devices`` stand-in devices;
    ``model_key`` identifies the model's header for the cache. Layouts not cached are asked for in one
    child process. ``model_path`` may be a function giving it, called only when llama.cpp is asked."""
    cache_path = _cache_file(model_key, n_devices, cp)
    cached = _read_cache(cache_path)
    missing = [lay for lay in dict.fromkeys(layouts) if lay.key not in cached]
    if missing:
        path = os.fspath(model_path() if callable(model_path) else model_path)
        answers = engine.run_isolated(
            "reserve_here", (path, n_devices, tuple(missing), cp), {}, f"llama.cpp's dry run of {path} failed"
        )
        for lay, res in zip(missing, answers):
            cached[lay.key] = res
        _write_cache(cache_path, cached)
    return {lay: cached[lay.key] for lay in layouts}


# --- the child's side -------------------------------------------------------------------------------------------


def _start_servers(n: int) -> list[str]:
    """``n`` RPC servers of this host's CPU, each on a thread of this (child) process."""
    endpoints = []
    for _ in range(n):
        port = rpc.free_port("127.0.0.1")
        threading.Thread(target=rpc.run_in_this_process, args=("127.0.0.1", port, 1), daemon=True).start()
        endpoints.append(f"127.0.0.1:{port}")
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    for endpoint in endpoints:
        host, port = rpc.split_endpoint(endpoint)
        while True:
            try:
                rpc.probe(host, port, timeout_s=1.0)
                break
            except RpcError as exc:
                if time.monotonic() > deadline:
                    raise EngineError(f"the dry run's stand-in device did not start: {exc}") from None
                time.sleep(0.01)
    return endpoints


def reserve_here(path: str, n_devices: int, layouts: tuple[Layout, ...], cp: ContextParams) -> list[Reservation]:
    """Run in a child process (engine.run_isolated): one no_alloc load per layout."""
    endpoints = _start_servers(n_devices)
    out = []
    for lay in layouts:
        report = engine.load_and_report(
            path,
            lay.n_gpu_layers,
            cp.n_ctx,
            endpoints,
            **engine.context_settings(cp),
            decode=False,
            no_alloc=True,
            tensor_split=lay.tensor_split if n_devices else (),
            tensor_overrides=[(pattern, "CPU") for pattern in n_cpu_moe_patterns(lay.n_cpu_moe)],
        )
        per_device = tuple(
            sum(b.compute_bytes for b in report.rpc_buffers if rpc.endpoint_of(b.name) == endpoint)
            for endpoint in endpoints
        )
        out.append(Reservation(per_device, sum(b.compute_bytes for b in report.host_buffers)))
    return out
