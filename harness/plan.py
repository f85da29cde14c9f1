"""`harness plan` as a library call: a request of plain values in, a PlanResult out, and its renderings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.offload.advice import suggest
from harness.errors import HarnessError
from harness.offload.hardware import host_ram_bytes, load_profiles
from harness.offload.placement import ContextParams
from harness.offload.solver import Device, Host, Plan, solve
from harness.units import gib, human_bytes, table
from harness.units import parse_size
from harness.llama.engine import local_gpus
from harness.offload.hardware import measured_host_profile
from harness.models.resolve import resolve_model
from harness.models.registry import load_registry
from harness.models.resolve import architecture_header
from harness.llama.engine import load_and_report

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
        raise HarnessError(f"--rpc {spec!r}: write HOST:PORT=SIZE, e.g. 127.0.0.1:50052=8GiB")
    try:
        budget = parse_size(size)
    except ValueError as exc:
        raise HarnessError(f"--rpc {spec!r}: {exc}") from None
    # an RPC host is its CPU memory over a network: plan bandwidth as a dual-channel host's
    return Device(f"RPC[{endpoint}]", budget, 0, 40e9, 0.5e12, 1.25e9), endpoint


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
            base = Device.from_profile(profiles.gpu(DEFAULT_GPU), 0, budget_bytes=g.total_bytes,
                                       reserve_bytes=req.reserve_bytes)
            devices.insert(0, Device(g.name, *_fields_after_name(base)))
    elif not req.rpc or req.gpu or req.budget_bytes:
        if req.budget_bytes is not None:
            base = Device("gpu", req.budget_bytes, req.reserve_bytes or 0,
                          *_bandwidth_of(profiles, req.gpu or DEFAULT_GPU))
            gpu_key = req.gpu
        else:
            gpu_key = req.gpu or DEFAULT_GPU
            base = Device.from_profile(profiles.gpu(gpu_key), 0, reserve_bytes=req.reserve_bytes)
        devices = [Device(f"{gpu_key or 'gpu'}#{i}", *_fields_after_name(base)) for i in range(req.gpus)] + devices
    return devices, endpoints, gpu_key


def target_host(req: PlanRequest) -> Host:
    ram = req.host_ram_bytes if req.host_ram_bytes is not None else host_ram_bytes()
    if req.host_profile == "this":

        return Host.from_profile(measured_host_profile(), ram)
    return Host.from_profile(load_profiles().host(req.host_profile), ram)


def context_of(req: PlanRequest) -> ContextParams:
    try:
        return ContextParams(n_ctx=req.n_ctx, n_ubatch=req.n_ubatch, type_k=req.kv_type, type_v=req.kv_type,
                             flash_attn=req.flash_attn or req.kv_type != "f16")
    except ValueError as exc:
        raise HarnessError(str(exc)) from None


def make_plan(req: PlanRequest, resolved=None) -> PlanResult:
    """Plan ``req``; ``resolved`` (a resolve.ResolvedModel) spares a second header read when the caller has it."""
    resolved = resolved or resolve_model(req.model, req.remote)
    header = resolved.header
    devices, endpoints, gpu_key = target_devices(req)
    host = target_host(req)
    cp = context_of(req)
    plan = solve(header, devices, host, cp, req.n_gpu_layers, req.margin_fraction)
    alternatives = _registry_alternatives(resolved)
    advice = suggest(header, plan, devices, host, cp, req.margin_fraction, gpu_key if not req.rpc else None,
                     alternatives)
    notes = ["host weights are read from the mmapped file: they live in the page cache, so the host "
             "needs that much free RAM (or the file streams from disk at disk speed)"]
    if resolved.virtual:
        notes.append(f"{req.model} is built from its architecture: no file is read; sizes are llama.cpp's rules")
    result = PlanResult(req.model, plan, tuple(advice), gpu_key, tuple(endpoints), notes=tuple(notes))
    if req.verify:
        result = _verify(result, resolved, devices, endpoints)
    return result


def _bandwidth_of(profiles, key: str) -> tuple[float, float, float]:
    p = profiles.gpu(key)
    return p.effective_bandwidth_bytes_per_s, p.fp16_tflops * 1e12 * 0.5, p.link_gbps * 1e9


def _fields_after_name(d: Device) -> tuple:
    return (d.budget_bytes, d.reserve_bytes, d.bandwidth_bytes_per_s, d.flops, d.link_bytes_per_s, d.alignment)


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
        raise HarnessError("--verify loads the model on the planned devices; only llama.cpp RPC devices (--rpc) "
                           "can be verified on this machine")
    plan = result.plan
    path = resolved.header.paths[0]
    report = load_and_report(path, plan.n_gpu_layers, plan.context.n_ctx, endpoints,
                             type_k=plan.context.type_k, type_v=plan.context.type_v,
                             flash_attn=plan.context.flash_attn, n_ubatch=plan.context.n_ubatch,
                             swa_full=plan.context.swa_full, decode=True, tensor_split=plan.tensor_split)
    actual = {}
    for d, endpoint in zip(plan.devices, endpoints):
        # llama.cpp names a buffer RPC<index on that server>[endpoint]
        bufs = [b for b in report.rpc_buffers if b.name.endswith(f"[{endpoint}]")]
        actual[d.name] = Actual(sum(b.model_bytes for b in bufs), sum(b.kv_bytes for b in bufs),
                                sum(b.compute_bytes for b in bufs))
    host = [b for b in report.host_buffers]
    actual["host"] = Actual(sum(b.model_bytes for b in host), sum(b.kv_bytes for b in host),
                            sum(b.compute_bytes for b in host))
    return PlanResult(result.model, plan, result.suggestions, result.gpu_profile, result.rpc_endpoints, actual,
                      report.n_layers_on_devices, result.notes)


def plan_json(r: PlanResult) -> dict[str, Any]:
    p = r.plan

    def dev(d) -> dict[str, Any]:
        out = {"name": d.name, "budget_bytes": d.budget_bytes, "weights_bytes": d.weights_bytes, "kv_bytes": d.kv_bytes,
               "compute_bytes": d.compute_bytes, "reserve_bytes": d.reserve_bytes, "margin_bytes": d.margin_bytes,
               "total_bytes": d.total_bytes, "headroom_bytes": d.headroom_bytes, "n_layers": d.n_layers,
               "holds_output": d.holds_output}
        if d.name in r.actual:
            a = r.actual[d.name]
            out["actual"] = {"weights_bytes": a.weights_bytes, "kv_bytes": a.kv_bytes,
                             "compute_bytes": a.compute_bytes, "total_bytes": a.total_bytes}
        return out

    host = {"weights_bytes": p.host.weights_bytes, "kv_bytes": p.host.kv_bytes, "compute_bytes": p.host.compute_bytes,
            "output_bytes": p.host.output_bytes, "total_bytes": p.host.total_bytes, "ram_bytes": p.host.ram_bytes}
    if "host" in r.actual:
        a = r.actual["host"]
        host["actual"] = {"weights_bytes": a.weights_bytes, "kv_bytes": a.kv_bytes, "compute_bytes": a.compute_bytes,
                          "total_bytes": a.total_bytes}
    return {
        "model": r.model, "verdict": p.verdict, "n_gpu_layers": p.n_gpu_layers, "n_layers_total": p.n_layers_total,
        "fits_fully": p.fits_fully, "tensor_split": list(p.tensor_split), "n_ctx": p.context.n_ctx,
        "kv_type": p.context.type_k, "flash_attn": p.context.flash_attn, "n_ubatch": p.context.n_ubatch,
        "devices": [dev(d) for d in p.devices], "host": host,
        "predicted_tg_tokens_per_s": round(p.predicted_tg_tokens_per_s, 3),
        "predicted_pp_tokens_per_s": round(p.predicted_pp_tokens_per_s, 3),
        "suggestions": list(r.suggestions), "notes": list(r.notes),
        "n_layers_offloaded_actual": r.n_layers_offloaded_actual,
    }


def render_plan(r: PlanResult) -> str:
    p = r.plan
    lines = [f"{r.model}: {p.verdict} — n_gpu_layers {p.n_gpu_layers} of {p.n_layers_total} "
             f"(ctx {p.context.n_ctx}, KV {p.context.type_k}, flash attention {'on' if p.context.flash_attn else 'off'})"]
    rows = []
    for d in p.devices:
        rows.append([d.name, d.n_layers + (1 if d.holds_output else 0), human_bytes(d.weights_bytes),
                     human_bytes(d.kv_bytes), human_bytes(d.compute_bytes), human_bytes(d.reserve_bytes),
                     human_bytes(d.total_bytes), human_bytes(d.budget_bytes), human_bytes(d.headroom_bytes)
                     if d.headroom_bytes >= 0 else "-" + human_bytes(-d.headroom_bytes)])
        if d.name in r.actual:
            a = r.actual[d.name]
            rows.append(["  llama.cpp says", "", human_bytes(a.weights_bytes), human_bytes(a.kv_bytes),
                         human_bytes(a.compute_bytes), "", human_bytes(a.total_bytes), "", ""])
    if rows:
        lines += ["", table(["device", "layers", "weights", "KV", "compute", "reserve", "total", "budget", "headroom"],
                            rows, right=[False] + [True] * 8)]
    h = p.host
    host_rows = [["host", human_bytes(h.weights_bytes), human_bytes(h.kv_bytes), human_bytes(h.compute_bytes),
                  human_bytes(h.output_bytes), human_bytes(h.total_bytes),
                  human_bytes(h.ram_bytes) if h.ram_bytes else "not set"]]
    if "host" in r.actual:
        a = r.actual["host"]
        host_rows.append(["  llama.cpp says", human_bytes(a.weights_bytes), human_bytes(a.kv_bytes),
                          human_bytes(a.compute_bytes), "", human_bytes(a.total_bytes), ""])
    lines += ["", table(["", "weights", "KV", "compute", "output", "total", "RAM"], host_rows,
                        right=[False] + [True] * 6)]
    lines += ["", f"predicted: {p.predicted_tg_tokens_per_s:.2f} tokens/s generation (memory-bandwidth bound, "
                  f"at the profiles' efficiency), up to {p.predicted_pp_tokens_per_s:.0f} tokens/s prompt processing "
                  "(compute / PCIe bound)"]
    if r.n_layers_offloaded_actual is not None:
        lines.append(f"llama.cpp offloaded {r.n_layers_offloaded_actual}/{p.n_layers_total} layers")
    if not p.fits_fully and not p.host.fits:
        lines.append(f"the host lacks {gib(h.total_bytes - h.ram_bytes)} of RAM for its share")
    for s in r.suggestions:
        lines.append(f"suggestion: {s}")
    for n in r.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)
