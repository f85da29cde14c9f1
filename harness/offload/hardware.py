"""Hardware profiles (hardware.toml) and facts about this host: RAM and measured memory bandwidth."""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

from harness import settings
from harness.errors import RegistryError

# ggml.h: the CPU backend's thread pool holds at most this many threads, and llama.cpp does not check
# (`run --threads 100000` crashed in ggml); the CLI, the engine and the RPC server all bound by it
GGML_MAX_N_THREADS = 512

# Prompt processing reaches well under half of the datasheet FLOPs (DESIGN.md section 7): plans count half.
PP_FLOPS_FRACTION = 0.5


class _PlannedRates:
    """A profile's datasheet figures at the rates the planner counts them."""

    bandwidth_gbps: float
    efficiency: float  # the fraction of the datasheet bandwidth that generation reaches
    fp16_tflops: float

    @property
    def effective_bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gbps * 1e9 * self.efficiency

    @property
    def effective_flops(self) -> float:
        """FLOP/s for prompt processing: PP_FLOPS_FRACTION of the datasheet fp16 figure."""
        return self.fp16_tflops * 1e12 * PP_FLOPS_FRACTION


@dataclass(frozen=True)
class GPUProfile(_PlannedRates):
    key: str
    name: str
    memory_bytes: int
    bandwidth_gbps: float
    fp16_tflops: float
    link_gbps: float
    efficiency: float
    reserve_bytes: int

    @property
    def link_bytes_per_s(self) -> float:
        return self.link_gbps * 1e9


@dataclass(frozen=True)
class HostProfile(_PlannedRates):
    key: str
    name: str
    bandwidth_gbps: float
    efficiency: float
    fp16_tflops: float


@dataclass(frozen=True)
class Profiles:
    gpus: dict[str, GPUProfile]
    hosts: dict[str, HostProfile]

    def gpu(self, key: str) -> GPUProfile:
        try:
            return self.gpus[key]
        except KeyError:
            raise RegistryError(
                f"no GPU profile {key!r}; known: {', '.join(self.gpus)} (or give --budget SIZE)"
            ) from None

    def host(self, key: str) -> HostProfile:
        try:
            return self.hosts[key]
        except KeyError:
            raise RegistryError(f"no host profile {key!r}; known: {', '.join(self.hosts)}") from None


def _build(cls: type, path: Path, section: str, key: str, raw: object):
    where = f"{path}: [{section}.{key}]"
    if not isinstance(raw, dict):
        raise RegistryError(f"{where} must be a table")
    names = {f.name: f.type for f in fields(cls) if f.name != "key"}
    unknown = set(raw) - set(names)
    missing = set(names) - set(raw)
    if unknown or missing:
        raise RegistryError(
            f"{where}: "
            + "; ".join(
                ([f"unknown key(s) {', '.join(sorted(unknown))}"] if unknown else [])
                + ([f"missing key(s) {', '.join(sorted(missing))}"] if missing else [])
            )
        )
    for k, v in raw.items():
        want = {"int": int, "float": (int, float), "str": str}[names[k]]
        if not isinstance(v, want) or isinstance(v, bool):
            raise RegistryError(f"{where}: {k} must be a {names[k]}")
    return cls(key=key, **raw)


def load_profiles(path: Path | None = None) -> Profiles:
    """The hardware profiles at ``path`` (default: settings.hardware_path()), parsed once per version of the file."""
    path = Path(path or settings.hardware_path())
    return _parsed_profiles(
        path, *settings.data_file_stamp(path, "hardware profiles", "HARNESS_HARDWARE", "hardware.toml")
    )


@functools.lru_cache(maxsize=8)
def _parsed_profiles(path: Path, mtime_ns: int, size: int) -> Profiles:
    raw = settings.read_data_file(path, "hardware profiles", "HARNESS_HARDWARE", "hardware.toml")
    unknown = set(raw) - {"gpus", "hosts"}
    if unknown:
        raise RegistryError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    for key in ("gpus", "hosts"):
        if key in raw and not isinstance(raw[key], dict):
            raise RegistryError(f"{path}: {key} must be a table ([{key}.NAME] sections), not {type(raw[key]).__name__}")
    gpus = {k: _build(GPUProfile, path, "gpus", k, v) for k, v in raw.get("gpus", {}).items()}
    hosts = {k: _build(HostProfile, path, "hosts", k, v) for k, v in raw.get("hosts", {}).items()}
    return Profiles(gpus, hosts)


def host_ram_bytes() -> int:
    """Total physical memory of this host (MemTotal), or 0 where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def host_available_bytes() -> int:
    """MemAvailable from /proc/meminfo: what can be allocated without swapping (0 if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure_host_read_bandwidth(n_bytes: int = 256 << 20, repeats: int = 5, threads: int | None = None) -> float:
    """Bytes/s this host reads from RAM: the best of ``repeats`` sums over a buffer much larger than any
    cache, split across ``threads`` (default: every core, as llama.cpp's generation uses them; numpy
    releases the GIL while summing)."""
    import numpy as np

    threads = threads or os.cpu_count() or 1
    data = np.ones(n_bytes // 8, dtype=np.int64)
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return n_bytes / best


def measure_host_flops(n: int = 1024, repeats: int = 3) -> float:
    """FLOP/s of an f32 matrix product on this host (numpy's BLAS): a stand-in for prompt processing."""
    import numpy as np

    a = np.ones((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def measured_host_profile() -> HostProfile:
    """This machine, measured now: read bandwidth of a 256 MiB sum and f32 matmul throughput.
    The measurement already is an effective figure, so its efficiency is 1."""
    bw = measure_host_read_bandwidth()
    return HostProfile("this", "this host (measured)", bw / 1e9, 1.0, measure_host_flops() / 1e12 / PP_FLOPS_FRACTION)
