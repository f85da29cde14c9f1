"""The n_gpu_layers solver: per-device memory plans, a verdict, a speed prediction and suggestions.

Weights and KV cache are exact (harness.placement); compute buffers are modelled (harness.buffers);
each device also keeps a runtime reserve (the CUDA context and allocator slack; 0 for an RPC host)
and a safety margin. A plan is for named budgets (`--gpu a100-40gb`, `--budget 40GiB`), so a laptop
can plan a cluster; this host's RAM is checked for what stays on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.gguf.header import ModelHeader
from harness.gguf.roles import TOKEN_EMBD, embedding_bytes_not_read
from harness.offload.buffers import compute_bytes, output_bytes
from harness.offload.hardware import GPUProfile, HostProfile
from harness.offload.placement import ContextParams, Placement, offloaded_layer_bytes, place

# Per-token fixed costs (DESIGN.md: "+ fixed overhead"): what keeps a small model far below its
# bandwidth bound. Assumptions, not measurements; the bench compares them with measured speed.
LAYER_OVERHEAD_S = 40e-6
HOST_LAYER_OVERHEAD_S = 10e-6


@dataclass(frozen=True)
class Device:
    """One offload device: a GPU (from a profile or a bare budget) or a llama.cpp RPC host."""

    name: str
    budget_bytes: int
    reserve_bytes: int = 0
    bandwidth_bytes_per_s: float = 0.0  # effective, for generation
    flops: float = 0.0  # effective fp16 FLOP/s, for prompt processing
    link_bytes_per_s: float = 25e9  # host <-> device
    alignment: int = 32

    @classmethod
    def from_profile(
        cls, p: GPUProfile, index: int = 0, budget_bytes: int | None = None, reserve_bytes: int | None = None
    ) -> Device:
        return cls(
            _numbered_name(p.key, index),
            p.memory_bytes if budget_bytes is None else budget_bytes,
            p.reserve_bytes if reserve_bytes is None else reserve_bytes,
            p.effective_bandwidth_bytes_per_s,
            p.effective_flops,
            p.link_bytes_per_s,
        )


def _numbered_name(kind: str, index: int) -> str:
    return f"{kind}#{index}"


def numbered(device: Device, n: int, kind: str | None = None) -> list[Device]:
    """``n`` devices like ``device``, named as plans name GPUs of one kind: KIND#0, KIND#1… (``kind``:
    the part of the device's name before '#' unless given)."""
    kind = kind or device.name.split("#")[0]
    return [replace(device, name=_numbered_name(kind, i)) for i in range(n)]


@dataclass(frozen=True)
class Host:
    ram_bytes: int
    bandwidth_bytes_per_s: float
    flops: float
    name: str = "host"

    @classmethod
    def from_profile(cls, p: HostProfile, ram_bytes: int) -> Host:
        return cls(ram_bytes, p.effective_bandwidth_bytes_per_s, p.effective_flops, p.key)


@dataclass(frozen=True)
class DevicePlan:
    name: str
    budget_bytes: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    reserve_bytes: int
    margin_bytes: int
    n_layers: int  # repeating layers placed here (the output layer is not counted)
    holds_output: bool

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.reserve_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.margin_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.headroom_bytes >= 0


@dataclass(frozen=True)
class HostPlan:
    weights_bytes: int  # read from the mmapped file: page cache, not anonymous memory
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    ram_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def fits(self) -> bool:
        return self.ram_bytes == 0 or self.total_bytes <= self.ram_bytes


@dataclass(frozen=True)
class Plan:
    n_gpu_layers: int
    n_layers_total: int  # n_layer + 1: the output layer counts as one
    tensor_split: tuple[float, ...]
    devices: tuple[DevicePlan, ...]
    host: HostPlan
    context: ContextParams
    predicted_tg_tokens_per_s: float
    predicted_pp_tokens_per_s: float
    forced: bool = False

    @property
    def fits_fully(self) -> bool:
        return self.n_gpu_layers == self.n_layers_total and all(d.fits for d in self.devices)

    @property
    def devices_fit(self) -> bool:
        return all(d.fits for d in self.devices)

    @property
    def verdict(self) -> str:
        if not self.devices_fit:
            return "does not fit"  # only a forced n_gpu_layers gets here
        if not self.host.fits:
            return "cannot run"
        if self.fits_fully:
            return "fits fully"
        return "partial offload" if self.n_gpu_layers else "host only"


def _margin(budget: int, margin_fraction: float) -> int:
    return int(budget * margin_fraction)


def evaluate(
    header: ModelHeader,
    devices: list[Device],
    host: Host,
    cp: ContextParams,
    n_gpu_layers: int,
    split: list[float],
    margin_fraction: float = 0.0,
    forced: bool = False,
) -> Plan:
    """The memory plan and speed of one n_gpu_layers and split."""
    alignment = {i: d.alignment for i, d in enumerate(devices)}
    p = place(header, n_gpu_layers, split if devices else [], cp, alignment)
    n_layer = header.arch.n_layer
    out_dev = p.layer_device[n_layer]
    plans = []
    for i, d in enumerate(devices):
        n_layers = sum(1 for il in range(n_layer) if p.layer_device[il] == i)
        holds_output = out_dev == i
        used = n_layers > 0 or holds_output
        plans.append(
            DevicePlan(
                d.name,
                d.budget_bytes,
                p.weights_bytes.get(i, 0),
                p.kv_bytes.get(i, 0),
                compute_bytes(header, cp, n_layers > 0, holds_output) if used else 0,
                d.reserve_bytes if used else 0,
                _margin(d.budget_bytes, margin_fraction),
                n_layers,
                holds_output,
            )
        )
    host_layers = sum(1 for il in range(n_layer) if p.layer_device[il] == -1)
    host_plan = HostPlan(
        p.weights_bytes.get(-1, 0),
        p.kv_bytes.get(-1, 0),
        compute_bytes(header, cp, host_layers > 0, out_dev == -1, is_host=True),
        output_bytes(header, cp),
        host.ram_bytes,
    )
    tg, pp = predict_speed(header, p, devices, host, cp)
    return Plan(n_gpu_layers, n_layer + 1, tuple(split), tuple(plans), host_plan, cp, tg, pp, forced)


def _split_for(
    header: ModelHeader, devices: list[Device], host: Host, cp: ContextParams, ngl: int, margin_fraction: float
) -> list[float] | None:
    """Layer counts per device (given to llama.cpp as tensor_split, which then places exactly these
    counts) that put ``ngl`` layers within every budget, filling devices in order; None if none do."""
    if len(devices) == 1:
        return [1.0]
    # the layers offloaded, lowest first, then the output layer (also when ngl is 0: a split is still given)
    costs = {
        a: offloaded_layer_bytes(header, cp, a)[header.arch.n_layer + 1 - max(ngl, 1) :]
        for a in {d.alignment for d in devices}
    }
    counts = [0] * len(devices)
    used = [0] * len(devices)
    dev = 0
    n_slots = max(ngl, 1)
    for k in range(n_slots):
        is_output = k == n_slots - 1
        while dev < len(devices):
            d = devices[dev]
            cost = costs[d.alignment][k]
            holds_layers = counts[dev] > 0 or not is_output
            fixed = (
                d.reserve_bytes
                + _margin(d.budget_bytes, margin_fraction)
                + compute_bytes(header, cp, holds_layers, is_output)
            )
            if used[dev] + cost + fixed <= d.budget_bytes:
                counts[dev] += 1
                used[dev] += cost
                break
            dev += 1
        if dev == len(devices):
            return None
    return [float(c) for c in counts]


def solve(
    header: ModelHeader,
    devices: list[Device],
    host: Host,
    cp: ContextParams,
    n_gpu_layers: int | None = None,
    margin_fraction: float = 0.0,
) -> Plan:
    """The largest n_gpu_layers whose every device stays within budget (or evaluate a forced one)."""
    total = header.arch.n_layer + 1
    if not devices:
        return evaluate(header, [], host, cp, 0, [], margin_fraction)
    if n_gpu_layers is not None:
        ngl = max(0, min(n_gpu_layers, total))
        split = _split_for(header, devices, host, cp, ngl, margin_fraction) or _even(devices)
        return evaluate(header, devices, host, cp, ngl, split, margin_fraction, forced=True)
    best = evaluate(header, devices, host, cp, 0, _even(devices), margin_fraction)
    lo, hi = 0, total
    # device totals grow with n_gpu_layers, so the largest fitting value can be bisected
    while lo < hi:
        mid = (lo + hi + 1) // 2
        split = _split_for(header, devices, host, cp, mid, margin_fraction)
        plan = evaluate(header, devices, host, cp, mid, split, margin_fraction) if split else None
        if plan is not None and plan.devices_fit:
            lo, best = mid, plan
        else:
            hi = mid - 1
    return best


MAX_GPUS = 16


def gpus_to_fit(
    header: ModelHeader, device: Device, host: Host, cp: ContextParams, margin_fraction: float, start: int = 1
) -> tuple[int, Plan] | None:
    """The fewest copies of ``device`` (from ``start`` up to MAX_GPUS) that hold every layer, and that plan."""
    for n in range(start, MAX_GPUS + 1):
        devices = numbered(device, n)
        plan = solve(header, devices, host, cp, margin_fraction=margin_fraction)
        if plan.fits_fully:
            return n, plan
    return None


def _even(devices: list[Device]) -> list[float]:
    return [1.0] * len(devices)


def predict_speed(
    header: ModelHeader, p: Placement, devices: list[Device], host: Host, cp: ContextParams
) -> tuple[float, float]:
    """(generation, prompt) tokens/s. Generation reads every weight once per token where it lives
    (token_embd is a row lookup) plus the KV cache at half the context; devices run one after another.
    Prompt processing is compute-bound, and host-resident weights cross the link once per ubatch
    (llama.cpp's op offload) when a device exists."""
    embd = header.tensor(TOKEN_EMBD)
    embd_bytes = embd.n_bytes if embd is not None else 0
    read = dict(p.weights_bytes)
    read[-1] = read.get(-1, 0) - embedding_bytes_not_read(header, p.layer_device[header.arch.n_layer] == -1)
    for d, kv in p.kv_bytes.items():
        read[d] = read.get(d, 0) + kv // 2
    t_token = 0.0
    for d, n_bytes in read.items():
        bw = host.bandwidth_bytes_per_s if d == -1 else devices[d].bandwidth_bytes_per_s
        if n_bytes > 0 and bw > 0:
            t_token += n_bytes / bw
    # fixed overhead: kernel launches per layer on a device (~10 ops x ~4 us), a hop per device
    n_layer = header.arch.n_layer
    for d in p.layer_device[:n_layer]:
        t_token += LAYER_OVERHEAD_S if d != -1 else HOST_LAYER_OVERHEAD_S
    t_token += 20e-6 * (1 + len([d for d in read if d != -1]))
    tg = 1.0 / t_token if t_token > 0 else 0.0

    n_ub = min(cp.n_ubatch, cp.n_batch)
    params = header.n_params - (embd.n_elements if embd is not None else 0)
    dev_bytes = sum(v for k, v in p.weights_bytes.items() if k != -1)
    host_bytes = max(p.weights_bytes.get(-1, 0) - embd_bytes, 0)
    flops = max((d.flops for d in devices), default=0.0)
    link = min((d.link_bytes_per_s for d in devices), default=0.0)
    if flops > 0 and dev_bytes > 0:
        t_ub = 2 * params * n_ub / flops + (host_bytes / link if n_ub >= 32 and link > 0 else 0.0)
    else:
        t_ub = 2 * params * n_ub / host.flops if host.flops else 0.0
    t_ub += n_layer * LAYER_OVERHEAD_S * 4  # larger batches: more, longer kernels per layer
    pp = n_ub / t_ub if t_ub > 0 else 0.0
    return tg, pp


def with_context(plan_context: ContextParams, **changes: object) -> ContextParams:
    return replace(plan_context, **changes)
