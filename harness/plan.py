"""`harness plan` as a library call: a request of plain values in, a PlanResult out (rendered by harness.text
and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harness.errors import HarnessError, UsageError
from harness.llama.engine import load_and_report, local_gpus
from harness.llama.rpc import device_name, endpoint_of
from harness.models.registry import load_registry
from harness.models.resolve import architecture_header, resolve_model
from harness.offload.advice import suggest
from harness.offload.hardware import host_ram_bytes, load_profiles, measured_host_profile
from harness.offload.placement import ContextParams, kv_type_needs_flash_attn
from harness.offload.solver import Device, Host, Plan, numbered, solve
from harness.text import parse_size

DEFAULT_GPU = "a100-40gb"


@dataclass(frozen=True)
class PlanRequest:
    model: str
    gpu: str | None = None
    budget_bytes: int | None = None
    gpus: int = 1
    rpc: tuple[str, ...] = ()  # "host:port=SIZE"
    n_ctx: int = 4096
    kv_type: str = "f16"
    n_ubatch: int = 512
    flash_attn: bool = True
    host_ram_bytes: int | None = None
    host_profile: str = "ddr5-2ch"
    reserve_bytes: int | None = None
    margin_fraction: float = 0.02
    n_gpu_layers: int | None = None
    verify: bool = False
    local: bool = False  # plan for the devices this machine really has (run/bench), not a named profile
    remote: bool = False  # read a registry entry's real header from the Hub


@dataclass(frozen=True)
class Actual:
    """llama.cpp's own report for one device, from --verify."""

    weights_bytes: int
    kv_bytes: int
    compute_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes


@dataclass(frozen=True)
class PlanResult:
    model: str
    plan: Plan
    suggestions: tuple[str, ...]
    gpu_profile: str | None
    rpc_endpoints: tuple[str, ...]
    actual: dict[str, Actual] = field(default_factory=dict)  # device name -> report (with --verify)
    n_layers_offloaded_actual: int | None = None
    notes: tuple[str, ...] = ()


def _rpc_device(spec: str) -> tuple[Device, str]:
    endpoint, sep, size = spec.partition("=")
    if not sep or ":" not in endpoint:
        raise UsageError(f"--rpc {spec!r}: write HOST:PORT=SIZE, e.g. 127.0.0.1:50052=8GiB")
    try:
        budget = parse_size(size)
    except ValueError as exc:
        raise UsageError(f"--rpc {spec!r}: {exc}") from None
    # an RPC host is its CPU memory over a network: plan bandwidth as a dual-channel host's
    return Device(device_name(endpoint), budget, 0, 40e9, 0.5e12, 1.25e9), endpoint


def target_devices(req: PlanRequest) -> tuple[list[Device], list[str], str | None]:
    """(offload devices, their RPC endpoints, the GPU profile key) that ``req`` names."""
    profiles = load_profiles()
    devices: list[Device] = []
    endpoints = []
    gpu_key = None
    if req.rpc:
        for spec in req.rpc:
            dev, endpoint = _rpc_device(spec)
            devices.append(dev)
            endpoints.append(endpoint)
    if req.local and not (req.gpu or req.budget_bytes):
        for g in local_gpus():
            base = Device.from_profile(
                profiles.gpu(DEFAULT_GPU), 0, budget_bytes=g.total_bytes, reserve_bytes=req.reserve_bytes
            )
            devices.insert(0, replace(base, name=g.name))
    elif not req.rpc or req.gpu or req.budget_bytes:
        if req.budget_bytes is not None:
            base = Device.from_profile(
                profiles.gpu(req.gpu or DEFAULT_GPU),
                budget_bytes=req.budget_bytes,
                reserve_bytes=req.reserve_bytes or 0,
            )
            gpu_key = req.gpu
        else:
            gpu_key = req.gpu or DEFAULT_GPU
            base = Device.from_profile(profiles.gpu(gpu_key), 0, reserve_bytes=req.reserve_bytes)
        devices = numbered(base, req.gpus, gpu_key or "gpu") + devices
    return devices, endpoints, gpu_key


def target_host(req: PlanRequest) -> Host:
    ram = req.host_ram_bytes if req.host_ram_bytes is not None else host_ram_bytes()
    if req.host_profile == "this":
        return Host.from_profile(measured_host_profile(), ram)
    return Host.from_profile(load_profiles().host(req.host_profile), ram)


def context_of(req: PlanRequest) -> ContextParams:
    try:
        return ContextParams(
            n_ctx=req.n_ctx,
            n_ubatch=req.n_ubatch,
            type_k=req.kv_type,
            type_v=req.kv_type,
            flash_attn=req.flash_attn or kv_type_needs_flash_attn(req.kv_type),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_plan(req: PlanRequest, resolved=None) -> PlanResult:
    """Plan ``req``; ``resolved`` (a resolve.ResolvedModel) spares a second header read when the caller has it."""
    resolved = resolved or resolve_model(req.model, req.remote)
    header = resolved.header
    devices, endpoints, gpu_key = target_devices(req)
    host = target_host(req)
    cp = context_of(req)
    plan = solve(header, devices, host, cp, req.n_gpu_layers, req.margin_fraction)
    alternatives = _registry_alternatives(resolved)
    advice = suggest(
        header, plan, devices, host, cp, req.margin_fraction, gpu_key if not req.rpc else None, alternatives
    )
    notes = [
        "host weights are read from the mmapped file: they live in the page cache, so the host "
        "needs that much free RAM (or the file streams from disk at disk speed)"
    ]
    if resolved.virtual:
        notes.append(f"{req.model} is built from its architecture: no file is read; sizes are llama.cpp's rules")
    result = PlanResult(req.model, plan, tuple(advice), gpu_key, tuple(endpoints), notes=tuple(notes))
    if req.verify:
        result = _verify(result, resolved, devices, endpoints)
    return result


def _registry_alternatives(resolved) -> dict[str, Any]:
    reg = load_registry()
    own = resolved.entry.architecture if resolved.entry else None
    out = {}
    for name, e in reg.entries.items():
        if e.architecture and e.architecture != own:
            out[name] = architecture_header(reg, e)
    return dict(sorted(out.items(), key=lambda kv: -kv[1].tensor_bytes))


def _verify(result: PlanResult, resolved, devices: list[Device], endpoints: list[str]) -> PlanResult:
    if resolved.virtual:
        raise HarnessError(f"--verify needs the model file: {result.model} is known by its architecture only")
    if not endpoints or len(endpoints) != len(devices):
        raise HarnessError(
            "--verify loads the model on the planned devices; only llama.cpp RPC devices (--rpc) "
            "can be verified on this machine"
        )
    plan = result.plan
    path = resolved.header.paths[0]
    report = load_and_report(
        path,
        plan.n_gpu_layers,
        plan.context.n_ctx,
        endpoints,
        type_k=plan.context.type_k,
        type_v=plan.context.type_v,
        flash_attn=plan.context.flash_attn,
        n_ubatch=plan.context.n_ubatch,
        swa_full=plan.context.swa_full,
        decode=True,
        tensor_split=plan.tensor_split,
    )
    actual = {}
    for d, endpoint in zip(plan.devices, endpoints):
        bufs = [b for b in report.rpc_buffers if endpoint_of(b.name) == endpoint]
        actual[d.name] = Actual(
            sum(b.model_bytes for b in bufs), sum(b.kv_bytes for b in bufs), sum(b.compute_bytes for b in bufs)
        )
    host = [b for b in report.host_buffers]
    actual["host"] = Actual(
        sum(b.model_bytes for b in host), sum(b.kv_bytes for b in host), sum(b.compute_bytes for b in host)
    )
    return PlanResult(
        result.model,
        plan,
        result.suggestions,
        result.gpu_profile,
        result.rpc_endpoints,
        actual,
        report.n_layers_on_devices,
        result.notes,
    )
