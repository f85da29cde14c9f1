"""`nvidia-smi`'s view of each NVIDIA GPU: its name, compute capability and memory, as the driver counts it.

llama.cpp reports the buffers it allocates; the driver also counts what llama.cpp never prints: the CUDA
context, cuBLAS's workspace, ggml-cuda's memory pool, CUDA graphs. Used memory before a load and while the
model is loaded, less llama.cpp's buffers on that GPU, is the runtime reserve a plan must leave (plan
--verify on local GPUs, scripts/gpu_check.py). Standard library only: no CUDA library is touched here.

Facts of nvidia-smi, from its documentation (`nvidia-smi --help-query-gpu`):

- `--format=csv,noheader,nounits` prints one line per GPU, the fields comma-and-space separated in the
  order asked, memory in MiB; a value the GPU does not report is `[N/A]` (memory on GPUs that share host
  memory, e.g. GB10) or `[Not Supported]`.
- `index` is nvidia-smi's order (PCI bus order), which need not be CUDA's: CUDA orders devices fastest first
  unless CUDA_DEVICE_ORDER=PCI_BUS_ID, and CUDA_VISIBLE_DEVICES renumbers them. A GPU is matched to a
  llama.cpp device by its PCI bus id: nvidia-smi prints `00000000:18:00.0` (8-digit domain), ggml-cuda's
  device id is `cudaDeviceGetPCIBusId` lowercased, `0000:18:00.0` (ggml-cuda.cu, ggml_backend_cuda_reg).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

MIB = 1024 * 1024
QUERY_TIMEOUT_S = 15.0
MEMORY_FIELDS = ("index", "name", "memory.total", "memory.used", "memory.free", "pci.bus_id")


@dataclass(frozen=True)
class GpuMemory:
    """One GPU as nvidia-smi reports it; None where it says [N/A]. Bytes are its MiB figures times 2**20."""

    index: int
    name: str
    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None
    pci_bus_id: str  # normalised: bus_id()


class NvidiaSmiError(Exception):
    """nvidia-smi is missing, failed, or printed what is not its CSV (the message says which)."""


def bus_id(text: str) -> str:
    """A PCI bus id as both sides can be compared: a 4-digit lowercase domain ("00000000:18:00.0" and
    "0000:18:00.0" are both "0000:18:00.0"); text that is not one is returned lowercased."""
    domain, sep, rest = text.strip().partition(":")
    try:
        return f"{int(domain, 16):04x}:{rest.lower()}" if sep else text.strip().lower()
    except ValueError:
        return text.strip().lower()


def _mib(value: str, field: str, line: str) -> int | None:
    if value.startswith("["):  # [N/A], [Not Supported], [Unknown Error]
        return None
    try:
        return int(float(value) * MIB)
    except ValueError:
        raise NvidiaSmiError(f"nvidia-smi printed {value!r} for {field} in {line!r}") from None


def parse_csv(text: str, n_fields: int) -> list[list[str]]:
    """nvidia-smi's `--format=csv,noheader,nounits` lines as fields; a GPU name that carries a comma is
    joined back (the name is the only free text it prints: every query here has it second)."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in next(csv.reader([line], skipinitialspace=True))]
        if len(fields) > n_fields >= 2:
            extra = len(fields) - n_fields
            fields = [fields[0], ", ".join(fields[1 : 2 + extra]), *fields[2 + extra :]]
        if len(fields) != n_fields:
            raise NvidiaSmiError(f"nvidia-smi printed {len(fields)} fields where {n_fields} were asked: {line!r}")
        rows.append(fields)
    return rows


def parse_memory(text: str) -> tuple[GpuMemory, ...]:
    """The output of `nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,pci.bus_id
    --format=csv,noheader,nounits`."""
    out = []
    for fields in parse_csv(text, len(MEMORY_FIELDS)):
        index, name, total, used, free, pci = fields
        line = ", ".join(fields)
        if not index.isdecimal():
            raise NvidiaSmiError(f"nvidia-smi printed {index!r} for the GPU index in {line!r}")
        out.append(
            GpuMemory(
                int(index),
                name,
                _mib(total, "memory.total", line),
                _mib(used, "memory.used", line),
                _mib(free, "memory.free", line),
                bus_id(pci),
            )
        )
    return tuple(out)


def smi(fields: Sequence[str], timeout_s: float = QUERY_TIMEOUT_S) -> str:
    """`nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits`'s output."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise NvidiaSmiError("nvidia-smi is not on PATH")
    cmd = [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise NvidiaSmiError(f"nvidia-smi did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise NvidiaSmiError(f"nvidia-smi could not be run: {exc}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise NvidiaSmiError(f"nvidia-smi exited with status {done.returncode}: {said[-1] if said else 'no message'}")
    return done.stdout


def query_memory(timeout_s: float = QUERY_TIMEOUT_S) -> tuple[GpuMemory, ...]:
    """Every GPU's memory now; () where nvidia-smi is missing or fails (a machine without NVIDIA GPUs)."""
    try:
        return parse_memory(smi(MEMORY_FIELDS, timeout_s))
    except NvidiaSmiError:
        return ()


def gpu_for(rows: Sequence[GpuMemory], device_id: str | None) -> GpuMemory | None:
    """The row of the GPU that llama.cpp names by ``device_id`` (its PCI bus id, from the `using device`
    line); with no id or no match, the only GPU when there is one, else None (the orders may differ)."""
    if device_id:
        want = bus_id(device_id)
        for r in rows:
            if r.pci_bus_id == want:
                return r
    return rows[0] if len(rows) == 1 else None
