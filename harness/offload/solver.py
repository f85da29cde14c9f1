"""The n_gpu_layers solver: per-device memory plans, a verdict, a speed prediction and suggestions.

Weights and KV cache are exact (harness.placement); compute buffers are modelled (harness.buffers);
each device also keeps a runtime reserve (the CUDA context and allocator slack; 0 for an RPC host)
and a safety margin. A plan is for named budgets (`--gpu a100-40gb`, `--budget 40GiB`), so a laptop
can plan a cluster; this host's RAM is checked for what stays on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache

from harness.gguf.ggml_types import CPU_BUFFER, CUDA_BUFFER, BufferType
from harness.gguf.header import ModelHeader
from harness.gguf.roles import (
    TOKEN_EMBD,
    embedding_bytes_not_read,
    is_routed_expert,
    per_layer_bytes,
    routed_expert_bytes,
    unread_expert_share,
)
from harness.offload import cuda
from harness.offload.buffers import compute_bytes, output_bytes, pipeline_copies, pipeline_extra_bytes
from harness.offload.hardware import GPUProfile, HostProfile
from harness.offload.memory import layer_memory_bytes
from harness.offload.placement import (
    NO_REPACK,
    ContextParams,
    Placement,
    layer_devices,
    n_cpu_moe_patterns,
    offloaded_layer_bytes,
    place,
)

FORMULA = "formula"  # where compute buffers come from when llama.cpp is not asked
# How layers are spread over several devices (--split): in proportion to each device's budget, as llama.cpp
# does by default, or packed into the devices in order (more layers when the budgets' fixed costs differ)
PROPORTIONAL, PACKED = "proportional", "packed"
SPLIT_MODES = (PROPORTIONAL, PACKED)

# llama.cpp's compute buffers for a batch of layouts: per layout, the
# bytes on each device (in order) and on the host. harness.llama.dryrun answers it; the solver only asks.
# A layout: (n_gpu_layers, per-device layer counts, n_cpu_moe).
ComputeOracle = Callable[[Sequence[tuple[int, tuple[float, ...], int]]], list[tuple[tuple[int, ...], int]]]

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
    buffer_type: BufferType = CPU_BUFFER  # how its buffers size tensors (an RPC server's CPU; CUDA for a GPU)
    # a GPU backend lends the host a pinned buffer type, which llama.cpp tries before CPU_REPACK (then, with
    # mmap, swaps for the plain CPU one): with such a device nothing on the host is repacked. RPC lends none.
    lends_host_buffer: bool = False

    @property
    def is_cuda(self) -> bool:
        """A CUDA device: its buffers, compute and pool as ggml-cuda sizes them (harness.offload.cuda)."""
        return self.buffer_type == CUDA_BUFFER

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
            CUDA_BUFFER,
            lends_host_buffer=True,
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
    weights_bytes: int  # llama.cpp's host model buffers: the mapped file range(s) plus CPU_REPACK copies
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    ram_bytes: int
    # each host tensor once: a repacked tensor's file pages are read once and then left to the page cache,
    # and offloaded tensors inside the mapped range are never touched; what the host's RAM must hold
    resident_weights_bytes: int | None = None

    @property
    def total_bytes(self) -> int:
        """The host's buffers as llama.cpp reports them."""
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def needed_bytes(self) -> int:
        """The RAM the host's share needs (weights counted once each)."""
        resident = self.weights_bytes if self.resident_weights_bytes is None else self.resident_weights_bytes
        return resident + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def fits(self) -> bool:
        return self.ram_bytes == 0 or self.needed_bytes <= self.ram_bytes


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
    compute_source: str = FORMULA
    n_cpu_moe: int = 0  # blocks 0..n_cpu_moe-1 keep their routed experts on the host
    split_mode: str = PROPORTIONAL  # how the layers were spread over several devices
    n_copies: int = 1  # llama.cpp's pipeline parallelism: copies of each split's inputs (buffers.pipeline_copies)

    @property
    def strategy(self) -> str:
        """ "experts" when routed experts stay on the host, else "layers"."""
        return "experts" if self.n_cpu_moe else "layers"

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
            return "expert offload" if self.n_cpu_moe else "fits fully"
        return "partial offload" if self.n_gpu_layers else "host only"


def _margin(budget: int, margin_fraction: float) -> int:
    return int(budget * margin_fraction)


def placement_of(
    header: ModelHeader, devices: list[Device], cp: ContextParams, n_gpu_layers: int, split, n_cpu_moe: int = 0
) -> Placement:
    """Where llama.cpp puts every tensor for this split on these devices: each device's buffer type, the
    routed experts of blocks below ``n_cpu_moe`` overridden to the host, and host weights repacked for this
    CPU unless a device lends a host buffer type (a GPU: then nothing is repacked)."""
    return place(
        header,
        n_gpu_layers,
        list(split) if devices else [],
        cp,
        {i: d.buffer_type for i, d in enumerate(devices)},
        cpu=NO_REPACK if any(d.lends_host_buffer for d in devices) else None,  # None: this machine's CPU
        host_patterns=n_cpu_moe_patterns(n_cpu_moe),
    )


def evaluate(
    header: ModelHeader,
    devices: list[Device],
    host: Host,
    cp: ContextParams,
    n_gpu_layers: int,
    split: list[float],
    margin_fraction: float = 0.0,
    forced: bool = False,
    measured: tuple[tuple[int, ...], int] | None = None,
    compute_source: str = FORMULA,
    n_cpu_moe: int = 0,
    split_mode: str = PROPORTIONAL,
) -> Plan:
    """The memory plan and speed of one n_gpu_layers and split. ``measured``: llama.cpp's compute buffers
    for it (per device, host), which replace the formula's; ``compute_source`` says where they came from.
    ``n_cpu_moe``: the routed experts of blocks 0..n_cpu_moe-1 stay on the host (llama.cpp's --n-cpu-moe)."""
    p = placement_of(header, devices, cp, n_gpu_layers, split, n_cpu_moe)
    n_layer = header.arch.n_layer
    out_dev = p.layer_device[n_layer]
    n_copies = pipeline_copies(len(devices), n_gpu_layers, n_layer + 1, bool(p.overridden)) if cp.offload_kqv else 1

    def formula(n_layers: int, holds_output: bool) -> int:
        return compute_bytes(header, cp, n_layers > 0, holds_output) + pipeline_extra_bytes(header, cp, n_copies)

    # a CUDA device's own needs beyond a CPU-backed dry run (harness.offload.cuda): flash attention's f16 copies of
    # a quantized cache in the compute buffer, and the memory pool beside the profile's context reserve
    cuda_compute, cuda_pool = cuda.fattn_f16_bytes(header, cp), cuda.pool_bytes(header, cp)
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
                (measured[0][i] if measured else formula(n_layers, holds_output)) + (cuda_compute if d.is_cuda else 0)
                if used
                else 0,
                d.reserve_bytes + (cuda_pool if d.is_cuda else 0) if used else 0,
                _margin(d.budget_bytes, margin_fraction),
                n_layers,
                holds_output,
            )
        )
    host_layers = sum(1 for il in range(n_layer) if p.layer_device[il] == -1)
    host_plan = HostPlan(
        p.weights_bytes.get(-1, 0),
        p.kv_bytes.get(-1, 0),
        measured[1] if measured else compute_bytes(header, cp, host_layers > 0, out_dev == -1, is_host=True),
        output_bytes(header, cp),
        host.ram_bytes,
        p.host_tensor_bytes,
    )
    tg, pp = predict_speed(header, p, devices, host, cp)
    return Plan(
        n_gpu_layers,
        n_layer + 1,
        tuple(split),
        tuple(plans),
        host_plan,
        cp,
        tg,
        pp,
        forced,
        compute_source,
        n_cpu_moe,
        split_mode if len(devices) > 1 else PROPORTIONAL,
        n_copies,
    )


def _split_for(
    header: ModelHeader,
    devices: list[Device],
    host: Host,
    cp: ContextParams,
    ngl: int,
    margin_fraction: float,
    n_cpu_moe: int = 0,
    mode: str = PROPORTIONAL,
) -> list[float] | None:
    """Layer counts per device (given to llama.cpp as tensor_split, which then places exactly these counts)
    for ``ngl`` offloaded layers. proportional: llama.cpp's own default, layers in proportion to each device's
    budget (llama_model::load_tensors splits by each device's free memory when no tensor_split is given;
    whether they fit is evaluate's to say). packed: devices filled in order, each to its budget; None if
    they cannot hold ``ngl`` layers."""
    if len(devices) == 1:
        return [1.0]
    if mode == PROPORTIONAL:
        where = layer_devices(header.arch.n_layer, ngl, [float(d.budget_bytes) for d in devices])
        counts = [float(sum(1 for d in where if d == i)) for i in range(len(devices))]
        return counts if any(counts) else _even(devices)  # (nothing offloaded: any split will do)
    # the layers offloaded, lowest first, then the output layer (also when ngl is 0: a split is still given)
    costs = {}
    for a in {d.buffer_type for d in devices}:
        per_layer = offloaded_layer_bytes(header, cp, a)
        for il, n in enumerate(routed_expert_bytes(header, a)[:n_cpu_moe]):
            per_layer[il] -= n
        costs[a] = per_layer[header.arch.n_layer + 1 - max(ngl, 1) :]
    counts = [0] * len(devices)
    used = [0] * len(devices)
    dev = 0
    n_slots = max(ngl, 1)
    copies = pipeline_copies(len(devices), ngl, header.arch.n_layer + 1, n_cpu_moe > 0) if cp.offload_kqv else 1
    shared = pipeline_extra_bytes(header, cp, copies)
    on_cuda = cuda.fattn_f16_bytes(header, cp) + cuda.pool_bytes(header, cp)
    for k in range(n_slots):
        is_output = k == n_slots - 1
        while dev < len(devices):
            d = devices[dev]
            cost = costs[d.buffer_type][k]
            holds_layers = counts[dev] > 0 or not is_output
            fixed = (
                d.reserve_bytes
                + _margin(d.budget_bytes, margin_fraction)
                + compute_bytes(header, cp, holds_layers, is_output)
                + shared
                + (on_cuda if d.is_cuda else 0)
                + (per_layer_bytes(header, d.buffer_type) if holds_layers else 0)
            )
            if used[dev] + cost + fixed <= d.budget_bytes:
                counts[dev] += 1
                used[dev] += cost
                break
            dev += 1
        if dev == len(devices):
            return None
    return [float(c) for c in counts]


STRATEGIES = ("auto", "layers", "experts")


def solve(
    header: ModelHeader,
    devices: list[Device],
    host: Host,
    cp: ContextParams,
    n_gpu_layers: int | None = None,
    margin_fraction: float = 0.0,
    oracle: ComputeOracle | None = None,
    oracle_source: str = FORMULA,
    n_cpu_moe: int | None = None,
    strategy: str = "layers",
    split_mode: str = PROPORTIONAL,
) -> Plan:
    """The best plan for ``strategy`` (see solve_strategies), or the one a forced n_gpu_layers / n_cpu_moe gives."""
    return solve_strategies(
        header, devices, host, cp, n_gpu_layers, margin_fraction, oracle, oracle_source, n_cpu_moe, strategy, split_mode
    )[0]


def solve_strategies(
    header: ModelHeader,
    devices: list[Device],
    host: Host,
    cp: ContextParams,
    n_gpu_layers: int | None = None,
    margin_fraction: float = 0.0,
    oracle: ComputeOracle | None = None,
    oracle_source: str = FORMULA,
    n_cpu_moe: int | None = None,
    strategy: str = "auto",
    split_mode: str = PROPORTIONAL,
) -> tuple[Plan, Plan | None]:
    """(the chosen plan, the other strategy's plan or None).

    layers: the largest n_gpu_layers whose every device stays within budget (the dense split).
    experts (mixture-of-experts models): every layer on the devices and the routed experts of as few blocks
    as needed on the host (--n-cpu-moe N, the smallest N that fits); when even all experts on the host do not
    fit, the layer split of what remains. auto: of the two, the one with the faster predicted generation.
    A forced ``n_gpu_layers`` and/or ``n_cpu_moe`` is evaluated (or solved for the other) as given.

    With an ``oracle`` (llama.cpp's own reservation), the formula's answer is only the first guess: the
    plans around it get llama.cpp's compute buffers, until the answer is bracketed by llama.cpp's figures.
    ``split_mode``: how layers spread over several devices (PROPORTIONAL, llama.cpp's default, or PACKED)."""
    given = _Given(header, devices, host, cp, margin_fraction, split_mode)
    asker = _Asker(given, oracle, oracle_source) if oracle else None
    is_moe = header.arch.n_expert > 0 and any(routed_expert_bytes(header))
    if n_cpu_moe is not None or not is_moe or strategy == "layers" or not devices:
        moe = min(max(n_cpu_moe or 0, 0), header.arch.n_layer)
        return _solve_layers(given, n_gpu_layers, asker, moe), None
    experts = _solve_experts(given, asker)
    if strategy == "experts" or (experts.n_cpu_moe == 0 and experts.fits_fully):
        return experts, None  # (every layer fits with its experts: there is nothing to choose)
    layers = _solve_layers(given, n_gpu_layers, asker, 0)
    if experts.predicted_tg_tokens_per_s > layers.predicted_tg_tokens_per_s and experts.devices_fit:
        return experts, layers
    return layers, experts


@dataclass(frozen=True)
class _Given:
    """What one solve is given: the model, the devices and host, the context, the margin, the split mode."""

    header: ModelHeader
    devices: list[Device]
    host: Host
    cp: ContextParams
    margin_fraction: float
    split_mode: str

    def split(self, ngl: int, moe: int, forced: bool = False) -> list[float] | None:
        """The split for ``ngl`` layers (see _split_for); when forced, an even one if packing finds none."""
        if not self.devices:
            return []
        split = _split_for(
            self.header, self.devices, self.host, self.cp, ngl, self.margin_fraction, moe, self.split_mode
        )
        return split if split is not None or not forced else _even(self.devices)

    def evaluate(self, ngl: int, split, moe: int, forced: bool = False, measured=None, source: str = FORMULA) -> Plan:
        return evaluate(
            self.header, self.devices, self.host, self.cp, ngl, split, self.margin_fraction, forced, measured,
            source, moe, self.split_mode,
        )  # fmt: skip

    def at(self, ngl: int, moe: int, forced: bool = False) -> Plan | None:
        """The formula's plan for ``ngl`` layers and ``moe`` (None: packing cannot place that many)."""
        split = self.split(ngl, moe, forced)
        return self.evaluate(ngl, split, moe, forced) if split is not None else None


def _solve_layers(given: _Given, n_gpu_layers: int | None, asker: _Asker | None, moe: int) -> Plan:
    total = given.header.arch.n_layer + 1
    if not given.devices:
        return (asker and asker.plans([(0, moe)], forced=True)[(0, moe)]) or given.evaluate(0, [], moe)
    if n_gpu_layers is not None:
        ngl = max(0, min(n_gpu_layers, total))
        if asker and (plan := asker.plans([(ngl, moe)], forced=True)[(ngl, moe)]):
            return plan
        return given.at(ngl, moe, forced=True)
    best = given.evaluate(0, given.split(0, moe, forced=True), moe)
    lo, hi = 0, total
    # device totals grow with n_gpu_layers, so the largest fitting value can be bisected
    while lo < hi:
        mid = (lo + hi + 1) // 2
        plan = given.at(mid, moe)
        if plan is not None and plan.devices_fit:
            lo, best = mid, plan
        else:
            hi = mid - 1
    if asker is None:
        return best
    found = asker.bracket(lambda n: (n, moe), best.n_gpu_layers, 0, total, largest=True)
    if found is not None:
        return found
    # not even 0 layers fit (the devices' fixed costs alone exceed a budget): the host-only plan
    return asker.plans([(0, moe)], forced=True)[(0, moe)] or best


def _solve_experts(given: _Given, asker: _Asker | None) -> Plan:
    """Every layer on the devices, the fewest blocks' routed experts on the host."""
    n_layer = given.header.arch.n_layer
    total = n_layer + 1
    lo, hi = 0, n_layer + 1  # device totals fall as n_cpu_moe grows: bisect the smallest that fits
    best: Plan | None = None
    while lo < hi:
        mid = (lo + hi) // 2
        plan = given.at(total, mid) if mid <= n_layer else None
        if plan is not None and plan.devices_fit:
            hi, best = mid, plan
        else:
            lo = mid + 1
    if asker is not None:  # llama.cpp's figures decide, from the formula's guess (all blocks when it found none)
        guess = best.n_cpu_moe if best is not None else n_layer
        best = asker.bracket(lambda m: (total, m), guess, 0, n_layer, largest=False)
    if best is None:  # even every block's experts on the host leave too much: split the layers as well
        return _solve_layers(given, None, asker, n_layer)
    return best


def layer_kinds(header: ModelHeader, cp: ContextParams, n_cpu_moe: int = 0) -> list[int]:
    """A kind per repeating layer: layers of one kind have the same tensors (by role and shape) and the same
    memory (KV, windowed KV, recurrent state), so llama.cpp builds the same graph for them. Weight types do
    not count: a matrix product's result is f32 whatever the weight's type (a Q4_K_M file's Q6_K layers
    build the Q4_K ones' graph), and the stand-in devices run every type. A block whose routed experts stay on
    the host (below ``n_cpu_moe``) is a kind of its own."""
    n_layer = header.arch.n_layer
    tensors: dict[int, list[tuple]] = {il: [] for il in range(n_layer)}
    for t in header.tensors:
        if t.layer is not None and t.layer < n_layer:
            tensors[t.layer].append((t.name.split(".", 2)[-1], tuple(t.shape)))
    memory = layer_memory_bytes(header, cp)
    kinds: dict[tuple, int] = {}
    # ids that mean the same for every n_cpu_moe: twice the layer's own kind, plus one with its experts on the host
    return [
        2 * kinds.setdefault((tuple(sorted(tensors[il])), memory[il]), len(kinds)) + (il < n_cpu_moe)
        for il in range(n_layer)
    ]


# ggml-alloc's peak settles once a device holds a few layers of a kind in a row: one layer's graph reuses
# less than two's (a qwen2 of 128 wide: 5.25 MB for one layer on the device, 6.30 MB for two to four)
_SETTLED_RUN = 3


def compute_signature(kinds: Sequence[int], layer_device: Sequence[int]) -> tuple:
    """What a layout's compute buffers depend on: the kinds of layer the host and each device hold, in their
    order, with runs of one kind counted up to a few (longer runs no longer raise the peak); which of them
    holds the output layer; the order the layers visit them (the first receives the inputs). Not how many
    layers a long run has: a 126-layer model asks llama.cpp once for n_gpu_layers 3..125. tests/test_dryrun.py
    holds llama.cpp to it on every zoo architecture and both real models, at every n_gpu_layers on one
    device and splits over two and three."""
    n_layer = len(kinds)
    runs: dict[int, list[list[int]]] = {}
    order: list[int] = []
    for il in range(n_layer):
        d = layer_device[il]
        if not order or order[-1] != d:
            order.append(d)
        mine = runs.setdefault(d, [])
        if mine and mine[-1][0] == kinds[il] and (il and layer_device[il - 1] == d):
            mine[-1][1] = min(mine[-1][1] + 1, _SETTLED_RUN)
        else:
            mine.append([kinds[il], 1])
    per_device = tuple(sorted((d, tuple(tuple(r) for r in rs)) for d, rs in runs.items()))
    return per_device, layer_device[n_layer], tuple(order)


class _Asker:
    """Plans with llama.cpp's compute buffers: asks the oracle once per compute signature, in batches."""

    def __init__(self, given: _Given, oracle, source) -> None:
        self.given, self.oracle, self.source = given, oracle, source
        self.known: dict[tuple, tuple[tuple[int, ...], int]] = {}
        self._kinds = cache(lambda moe: layer_kinds(given.header, given.cp, moe))

    def plans(self, asked: Sequence[tuple[int, int]], forced: bool = False) -> dict[tuple[int, int], Plan | None]:
        """A plan per (n_gpu_layers, n_cpu_moe) (None: no split of the formula's places that many layers)."""
        g = self.given
        layouts = {nm: split for nm in asked if (split := g.split(*nm, forced)) is not None}
        signature = {
            (n, moe): compute_signature(self._kinds(moe), layer_devices(g.header.arch.n_layer, n, split))
            for (n, moe), split in layouts.items()
        }
        ask = {}
        for nm, sig in signature.items():
            if sig not in self.known and sig not in ask:
                ask[sig] = nm
        if ask:
            answers = self.oracle([(n, tuple(layouts[(n, moe)]), moe) for n, moe in ask.values()])
            self.known.update(zip(ask, answers))
        out: dict[tuple[int, int], Plan | None] = {nm: None for nm in asked}
        for (n, moe), split in layouts.items():
            out[(n, moe)] = g.evaluate(n, split, moe, forced, self.known[signature[(n, moe)]], self.source)
        return out

    def bracket(self, layout, guess: int, least: int, most: int, largest: bool) -> Plan | None:
        """The largest (or smallest) x in least..most whose plan ``layout(x)`` fits by llama.cpp's figures,
        searched from the formula's ``guess``, a few layouts per batch (one child process each)."""
        fit_side, other_side = least - 1, most + 1  # known to fit / known not to, as x runs the wrong way
        if not largest:
            fit_side, other_side = most + 1, least - 1
        found: dict[int, Plan] = {}
        probes = [x for x in (guess - 1, guess, guess + 1) if least <= x <= most]
        while probes:
            plans = self.plans([layout(x) for x in probes])
            for x in probes:
                plan = plans[layout(x)]
                if plan is not None and plan.devices_fit:
                    found[x] = plan
                    fit_side = max(fit_side, x) if largest else min(fit_side, x)
                else:
                    other_side = min(other_side, x) if largest else max(other_side, x)
            if abs(other_side - fit_side) <= 1:
                break
            lo, hi = sorted((fit_side, other_side))
            probes = [x for x in sorted({lo + (hi - lo) * k // 4 for k in (1, 2, 3)} - {lo, hi}) if least <= x <= most]
        return found.get(fit_side)


MAX_GPUS = 16


def gpus_to_fit(
    header: ModelHeader, device: Device, host: Host, cp: ContextParams, margin_fraction: float, start: int = 1
) -> tuple[int, Plan] | None:
    """The fewest copies of ``device`` (from ``start`` up to MAX_GPUS) that hold every layer, and that plan."""
    for n in range(start, MAX_GPUS + 1):
        devices = numbered(device, n)
        # every layer on the devices or not at all: one evaluation, not a whole solve
        plan = solve(header, devices, host, cp, header.arch.n_layer + 1, margin_fraction)
        if plan.devices_fit:
            return n, replace(plan, forced=False)
    return None


def _even(devices: list[Device]) -> list[float]:
    return [1.0] * len(devices)


def predict_speed(
    header: ModelHeader, p: Placement, devices: list[Device], host: Host, cp: ContextParams
) -> tuple[float, float]:
    """(generation, prompt) tokens/s. Generation reads every weight once per token where it lives
    (token_embd is a row lookup; of a mixture-of-experts' routed experts only the share a token uses,
    expert_used_count / expert_count) plus the KV cache at half the context; devices run one after another.
    Prompt processing is compute-bound on the active parameters, and host-resident weights (host experts
    included: a micro-batch of 512 tokens touches every expert) cross the link once per ubatch (llama.cpp's
    op offload) when a device exists."""
    embd = header.tensor(TOKEN_EMBD)
    embd_bytes = embd.n_bytes if embd is not None else 0
    read = dict(p.weights_bytes)
    read[-1] = p.host_tensor_bytes - embedding_bytes_not_read(header, p.layer_device[header.arch.n_layer] == -1)
    # a token reads only its experts: expert_used_count of expert_count of each routed expert tensor, on
    # whichever side it sits (shared experts and everything else in full)
    unread_share = unread_expert_share(header)
    routed_params = 0
    for t in header.tensors:
        d = p.tensor_device.get(t.name)  # None: a tensor llama.cpp leaves unloaded (an MTP block)
        if unread_share and d is not None and is_routed_expert(t.name):
            read[d] = read.get(d, 0) - int(t.n_bytes * unread_share)
            routed_params += t.n_elements
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
    # the active parameters: a token's experts only
    params = header.n_params - (embd.n_elements if embd is not None else 0) - int(routed_params * unread_share)
    dev_bytes = sum(v for k, v in p.weights_bytes.items() if k != -1)
    host_bytes = max(p.host_tensor_bytes - embd_bytes, 0)
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
