"""`harness plan` as a library call: a request of plain values in, a PlanResult out (rendered by harness.text
and the CLI)."""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import plan_cache
from harness.errors import EngineError, HarnessError, UsageError
from harness.gguf.roles import block_of
from harness.gguf.standin import standin_digest, write_standin
from harness.llama import dryrun
from harness.llama.engine import EngineReport, context_settings, load_and_report, local_gpus
from harness.llama.rpc import RpcServer, device_name, endpoint_of
from harness.llama.rpc import lib as rpc_library
from harness.llama.session import tensor_overrides
from harness.models.registry import load_registry
from harness.models.resolve import architecture_header, resolve_model
from harness.offload import cuda
from harness.offload.advice import suggest
from harness.offload.hardware import host_ram_bytes, load_profiles, measured_host_profile
from harness.offload.placement import HOST, ContextParams, Placement, kv_type_needs_flash_attn
from harness.offload.solver import (
    MAX_GPUS,
    PACKED,
    PROPORTIONAL,
    SPLIT_MODES,
    STRATEGIES,
    Device,
    Host,
    Plan,
    numbered,
    placement_of,
    solve_strategies,
)
from harness.text import human_bytes, parse_size, signed_bytes

DEFAULT_GPU = "a100-40gb"
OP_OFFLOAD_MIN_BATCH = 32  # ggml-cuda.cu ggml_backend_cuda_device_offload_op: min_batch_size
# The ranges a request must lie in, as llama.cpp takes the values (llama_context_params, llama_model_params).
MAX_N_CTX = 2**32 - 1  # n_ctx is a uint32_t; 0 means the model's training context (n_ctx_train)
MAX_N_UBATCH = ContextParams.n_batch  # llama.cpp clamps n_ubatch to n_batch, which the plans keep at 2048
MAX_N_GPU_LAYERS = 2**31 - 1  # an int32_t; more than n_layer + 1 offloads every layer
MAX_LOOPBACK_SERVERS = 8  # --verify --budget: a child process each
COMPUTE_SOURCES = ("auto", "llama", "formula")
DRY_RUN_SOURCE = "llama.cpp dry run"  # what a plan says its compute buffers came from


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
    compute: str = "auto"  # compute buffers: "llama" (its dry run), "formula", "auto" (llama when installed)
    strategy: str = "auto"  # mixture-of-experts models: "layers", "experts" (--n-cpu-moe), "auto" (the faster)
    n_cpu_moe: int | None = None  # pin the blocks whose routed experts stay on the host
    split_mode: str = PROPORTIONAL  # several devices: layers in proportion to budgets (llama.cpp's way) or packed

    def __post_init__(self) -> None:
        """Refuse what no plan can be made for, naming the option that carries it (the CLI's types refuse
        the same values first; a library caller gets this UsageError)."""

        def check(ok: bool, option: str, value: object, want: str) -> None:
            if not ok:
                raise UsageError(f"{option} {value}: {want}")

        check(
            0 <= self.n_ctx <= MAX_N_CTX,
            "--ctx",
            self.n_ctx,
            f"a context length is 0..{MAX_N_CTX:,} tokens (0: the model's training context)",
        )
        check(
            1 <= self.n_ubatch <= MAX_N_UBATCH,
            "--ubatch",
            self.n_ubatch,
            f"a micro-batch is 1..{MAX_N_UBATCH} tokens (llama.cpp uses at most n_batch, {MAX_N_UBATCH})",
        )
        check(self.compute in COMPUTE_SOURCES, "--compute", self.compute, f"one of {', '.join(COMPUTE_SOURCES)}")
        check(self.strategy in STRATEGIES, "--strategy", self.strategy, f"one of {', '.join(STRATEGIES)}")
        check(self.split_mode in SPLIT_MODES, "--split", self.split_mode, f"one of {', '.join(SPLIT_MODES)}")
        check(
            self.n_cpu_moe is None or 0 <= self.n_cpu_moe <= MAX_N_GPU_LAYERS,
            "--n-cpu-moe",
            self.n_cpu_moe,
            "a layer count is 0 or more",
        )
        check(1 <= self.gpus <= MAX_GPUS, "--gpus", self.gpus, f"llama.cpp takes 1..{MAX_GPUS} devices")
        check(
            math.isfinite(self.margin_fraction) and 0 <= self.margin_fraction < 1,
            "--margin",
            self.margin_fraction,
            "a safety margin is a fraction of each budget, at least 0 and below 1",
        )
        check(
            self.n_gpu_layers is None or 0 <= self.n_gpu_layers <= MAX_N_GPU_LAYERS,
            "--n-gpu-layers",
            self.n_gpu_layers,
            "a layer count is 0 or more",
        )
        for option, n_bytes in (
            ("--budget", self.budget_bytes),
            ("--host-ram", self.host_ram_bytes),
            ("--reserve", self.reserve_bytes),
        ):
            check(n_bytes is None or n_bytes >= 0, option, n_bytes, "a size is 0 bytes or more")


@dataclass(frozen=True)
class Actual:
    """llama.cpp's own report for one device, from --verify."""

    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    output_bytes: int = 0  # the logits buffer: in a host buffer, as the plan's host total counts it
    # a local GPU: nvidia-smi's used memory (every process's) before the load and while the model was loaded
    gpu_used_before_bytes: int | None = None
    gpu_used_after_bytes: int | None = None

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def gpu_used_delta_bytes(self) -> int | None:
        """What the load added on the GPU as its driver counts it (nvidia-smi's MiB: ±1 MiB)."""
        if self.gpu_used_before_bytes is None or self.gpu_used_after_bytes is None:
            return None
        return self.gpu_used_after_bytes - self.gpu_used_before_bytes

    @property
    def measured_reserve_bytes(self) -> int | None:
        """The runtime reserve measured: what the load added on the GPU beyond llama.cpp's own buffers (the
        CUDA context, cuBLAS, ggml-cuda's pool, CUDA graphs), to set beside the plan's reserve."""
        delta = self.gpu_used_delta_bytes
        return None if delta is None else delta - self.total_bytes


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
    other: Plan | None = None  # a mixture of experts: the strategy not chosen (layers vs experts), for comparison
    packed: Plan | None = None  # several devices split proportionally: the packed split, when it offloads more
    placement_mismatches: tuple[str, ...] = ()  # --verify with overrides: tensors llama.cpp put elsewhere than planned


def _rpc_device(spec: str) -> tuple[Device, str]:
    endpoint, sep, size = spec.partition("=")
    host, _, port = endpoint.rpartition(":")
    if not sep or not host.strip("[]"):
        raise UsageError(f"--rpc {spec!r}: write HOST:PORT=SIZE, e.g. 127.0.0.1:50052=8GiB")
    if not (port.isdecimal() and 1 <= int(port) <= 65535):
        raise UsageError(f"--rpc {spec!r}: the port must be a number in 1..65535, not {port!r}")
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
    if len(devices) > MAX_GPUS:
        raise UsageError(f"{len(devices)} offload devices: llama.cpp takes at most {MAX_GPUS} (llama_max_devices)")
    return devices, endpoints, gpu_key


def target_host(req: PlanRequest) -> Host:
    ram = req.host_ram_bytes if req.host_ram_bytes is not None else host_ram_bytes()
    if req.host_profile == "this":
        return Host.from_profile(measured_host_profile(), ram)
    return Host.from_profile(load_profiles().host(req.host_profile), ram)


def context_of(req: PlanRequest, header=None) -> ContextParams:
    """The context ``req`` asks for; --ctx 0 is the model's training context, as llama.cpp takes n_ctx 0
    (llama-context.cpp: ``params.n_ctx == 0 ? hparams.n_ctx_train``), so ``header`` is needed for it."""
    n_ctx = req.n_ctx
    if n_ctx == 0:
        n_ctx = header.arch.context_length if header is not None else None
        if not n_ctx:
            raise UsageError(f"--ctx 0 means {req.model}'s training context, which is not known here: give --ctx N")
    try:
        return ContextParams(
            n_ctx=n_ctx,
            n_ubatch=req.n_ubatch,
            type_k=req.kv_type,
            type_v=req.kv_type,
            flash_attn=req.flash_attn or kv_type_needs_flash_attn(req.kv_type),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_plan(req: PlanRequest, resolved=None) -> PlanResult:
    """Plan ``req``; ``resolved`` (a resolve.ResolvedModel) spares a second header read when the caller has it.
    A request asked before with nothing changed is answered from the cache (harness.plan_cache)."""
    key = plan_cache.key(req) if resolved is None else None
    cached = plan_cache.load(key) if key else None
    if cached is not None:
        return cached
    result = _make_plan(req, resolved or resolve_model(req.model, req.remote))
    if key:
        plan_cache.store(key, result)
    return result


def _make_plan(req: PlanRequest, resolved) -> PlanResult:
    if req.verify and req.budget_bytes is not None and not req.rpc and not req.local:
        return _verify_on_loopback(req, resolved)
    header = resolved.header
    devices, endpoints, gpu_key = target_devices(req)
    if req.verify:
        _check_verifiable(req.model, resolved, devices, endpoints, local=req.local)
    host = target_host(req)
    cp = context_of(req, header)
    oracle, compute_note = compute_oracle(req, resolved, len(devices), cp)

    def solved(ask) -> tuple[Plan, Plan | None]:
        return solve_strategies(
            header, devices, host, cp, req.n_gpu_layers, req.margin_fraction, ask, DRY_RUN_SOURCE, req.n_cpu_moe,
            req.strategy, req.split_mode,
        )  # fmt: skip

    def advice_for(p: Plan) -> list[str]:
        # other registry models are built only for advice, which a plan that fits does not get
        alternatives = _registry_alternatives(resolved) if devices and not p.fits_fully else {}
        gpu = gpu_key if not req.rpc else None
        return suggest(header, p, devices, host, cp, req.margin_fraction, gpu, alternatives)

    if oracle is None or not devices:
        plan, other = solved(oracle)
        advice = advice_for(plan)
    else:
        # the advice (formula plans of other contexts, GPU counts, quants, models) depends on the plan only
        # through whether it fits fully: it is worked out on the formula's plan while llama.cpp's dry run
        # runs in its child process, and again only if llama.cpp's figures change that answer
        first, _ = solved(None)
        early: list[list[str]] = []
        worker = threading.Thread(target=lambda: early.append(advice_for(first)), daemon=True)
        worker.start()
        try:
            plan, other = solved(oracle)
        finally:
            worker.join()
        advice = early[0] if early and first.fits_fully == plan.fits_fully else advice_for(plan)
    packed = None
    if len(devices) > 1 and req.split_mode == PROPORTIONAL and req.n_gpu_layers is None and not plan.fits_fully:
        # llama.cpp's even-handed split may leave room unused where the budgets' fixed costs differ (the device
        # holding the output layer): packing the devices in order is offered when it offloads more
        alt = solve_strategies(
            header, devices, host, cp, None, req.margin_fraction, oracle, DRY_RUN_SOURCE, req.n_cpu_moe,
            req.strategy, PACKED,
        )[0]  # fmt: skip
        if alt.devices_fit and (alt.n_gpu_layers, -alt.n_cpu_moe) > (plan.n_gpu_layers, -plan.n_cpu_moe):
            packed = alt
            advice = [
                f"--split packed: fill the devices in order instead of llama.cpp's proportional split — "
                f"n_gpu_layers {alt.n_gpu_layers}"
                + (f" with --n-cpu-moe {alt.n_cpu_moe}" if alt.n_cpu_moe else "")
                + f" (tensor_split {','.join(f'{x:g}' for x in alt.tensor_split)}), "
                f"predicted {alt.predicted_tg_tokens_per_s:.1f} tokens/s",
                *advice,
            ]
    notes = [
        "host weights are read from the mmapped file: they live in the page cache, so the host "
        "needs that much free RAM (or the file streams from disk at disk speed)"
    ]
    notes.append(compute_note)
    if any(d.is_cuda for d in devices):
        notes.append(_cuda_note(header, cp, devices, gpu_key, plan))
    if resolved.source == "architecture":
        notes.append(f"{req.model} is built from its architecture: no file is read; sizes are llama.cpp's rules")
    result = PlanResult(
        req.model, plan, tuple(advice), gpu_key, tuple(endpoints), notes=tuple(notes), other=other, packed=packed
    )
    if req.verify:
        result = _verify(result, resolved, devices, endpoints, local=req.local)
    return result


def _cuda_note(header, cp: ContextParams, devices: list[Device], gpu_key: str | None, plan: Plan) -> str:
    """Where a CUDA device's reserve and extra compute come from (harness.offload.cuda)."""
    d = next(d for d in devices if d.is_cuda)
    where = f"the {gpu_key} profile's figure, an assumption until `make gpu-check` measures it" if gpu_key else "given"
    note = (
        f"CUDA: reserve = the CUDA context {human_bytes(d.reserve_bytes)} ({where}) + the CUDA pool "
        f"{human_bytes(cuda.pool_bytes(header, cp))} (MMQ's q8_1 activations at n_ubatch {cp.n_ubatch}); weights and "
        "KV sized as ggml-cuda's buffers (128-byte alignment, quantized rows padded to 512)"
    )
    if f16 := cuda.fattn_f16_bytes(header, cp):
        note += f"; compute + {human_bytes(f16)}: flash attention's f16 copies of the quantized K/V cache"
    if 0 < plan.n_gpu_layers < plan.n_layers_total and min(cp.n_ubatch, cp.n_batch) >= OP_OFFLOAD_MIN_BATCH:
        # ggml-cuda's offload_op: a host layer's weight-bound ops of a batch of 32+ tokens run on the GPU, weights
        # copied over; the CPU-backed stand-ins have no offload_op, so their host compute keeps those activations
        note += (
            "; partial offload: CUDA runs the host layers' matrix products on the GPU for micro-batches of "
            f"{OP_OFFLOAD_MIN_BATCH}+ tokens (op offload), so the host compute buffer is an upper bound (a published "
            "log, 8B at 15/33 layers: 48 MiB on CUDA_Host where the stand-ins count 148 MiB)"
        )
    return note


def compute_oracle(req: PlanRequest, resolved, n_devices: int, cp: ContextParams):
    """(the solver's oracle, a note saying where compute buffers come from): llama.cpp's own reservation
    on stand-in devices when the engine is here (or --compute llama insists), else the fitted formula."""
    if req.compute == "formula":
        return None, "compute buffers: the fitted formula (--compute formula), not asked of llama.cpp"
    why_not = dryrun.available()
    if why_not:
        if req.compute == "llama":
            raise EngineError(f"--compute llama: llama.cpp's dry run is not available here: {why_not}")
        return None, f"compute buffers: the fitted formula (llama.cpp's dry run is not available: {why_not})"
    header = resolved.header
    if resolved.virtual:
        # the stand-in is written only when llama.cpp must be asked, into a folder of its own removed at exit:
        # a sparse file of the model's full size (243 GB for the 405B) is not left in the cache
        digest = standin_digest(header)
        model_key = f"header:{digest}"

        def model_path() -> str:
            return standin_path(header, digest)

    else:
        model_key = "file:" + ";".join(_file_stamp(p) for p in header.paths)

        def model_path() -> str:
            return header.paths[0]

    def oracle(layouts):
        asked = [dryrun.Layout(n, split, moe) for n, split, moe in layouts]
        got = dryrun.reserve(model_path, model_key, n_devices, asked, cp)
        return [(got[lay].device_compute_bytes, got[lay].host_compute_bytes) for lay in asked]

    stand_ins = "loopback RPC stand-ins of the planned devices" if n_devices else "the host"
    return oracle, f"compute buffers: llama.cpp's own reservation, a dry run without allocating on {stand_ins}"


_STANDINS: dict[str, str] = {}  # digest -> the stand-in written in this process


def standin_path(header, digest: str | None = None) -> str:
    """``header``'s stand-in (harness.gguf.standin: its header, every weight zero, a sparse file of its size),
    written once per process into a folder of its own removed at exit: a sparse file of the model's full size
    (243 GB for the 405B) is not left in the cache."""
    digest = digest or standin_digest(header)
    if digest not in _STANDINS:
        folder = tempfile.mkdtemp(prefix="harness-standin-")
        atexit.register(shutil.rmtree, folder, True)
        _STANDINS[digest] = os.fspath(write_standin(header, Path(folder)))
    return _STANDINS[digest]


def _file_stamp(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _registry_alternatives(resolved) -> dict[str, Any]:
    reg = load_registry()
    own = resolved.entry.architecture if resolved.entry else None
    out = {}
    for name, e in reg.entries.items():
        if e.architecture and e.architecture != own:
            out[name] = architecture_header(reg, e)
    return dict(sorted(out.items(), key=lambda kv: -kv[1].tensor_bytes))


def _verify_on_loopback(req: PlanRequest, resolved) -> PlanResult:
    """--verify with --budget: the budget is lent by llama.cpp RPC servers on loopback (one per --gpus),
    started here and stopped afterwards; the plan targets those devices, so llama.cpp's own numbers
    stand beside it. The servers' memory is this host's RAM: a stand-in for the GPUs, same budgets."""
    _check_verifiable(req.model, resolved)
    if req.gpus > MAX_LOOPBACK_SERVERS:  # at least 1: PlanRequest checks it
        raise UsageError(
            f"--verify --budget starts one loopback RPC server per GPU: --gpus must be 1..{MAX_LOOPBACK_SERVERS}, "
            f"not {req.gpus}"
        )
    rpc_library()  # llama-cpp-python with its RPC backend, or one line saying how to get it
    with ExitStack() as stack:
        servers = [stack.enter_context(RpcServer()) for _ in range(req.gpus)]
        rpc_req = replace(
            req, gpu=None, budget_bytes=None, gpus=1, rpc=tuple(f"{s.endpoint}={req.budget_bytes}" for s in servers)
        )
        result = make_plan(rpc_req, resolved)
    lent = "a llama.cpp RPC server" if len(servers) == 1 else f"{len(servers)} llama.cpp RPC servers"
    note = (
        f"--verify --budget: the plan targets {lent} on loopback, started for the check and stopped after it, "
        f"lending this host's memory with a budget of {human_bytes(req.budget_bytes)} each"
    )
    return replace(result, notes=(*result.notes, note))


def _check_verifiable(
    model: str, resolved, devices: list[Device] | None = None, endpoints=(), local: bool = False
) -> None:
    """What --verify needs, checked before anything is planned: (once the devices are known) devices to load the
    model on: llama.cpp RPC devices, and with --local the GPUs this engine build sees. A model without a file
    here (an architecture entry, a Hub header) is loaded as its stand-in."""
    if devices is None:
        return
    if local:
        _verify_gpus(devices, endpoints)
    elif not endpoints or len(endpoints) != len(devices):
        raise HarnessError(
            "--verify loads the model on the planned devices; only llama.cpp RPC devices can be verified on "
            "this machine: name them with --rpc HOST:PORT=SIZE, give --budget SIZE to have a loopback one "
            "of that budget started for the check, or --local for the GPUs llama.cpp sees here"
        )


def _verify_gpus(devices: list[Device], endpoints) -> tuple[str, ...]:
    """--verify --local: the local GPUs (llama.cpp's names, "CUDA0"…) that stand for the planned devices not
    lent over RPC, in order (target_devices lists local GPUs first): every GPU with no --budget, the first
    --gpus of them with one. A budget below a card's memory is verified on that card: llama.cpp is given the
    plan's layers, split and overrides, so the card's spare memory changes nothing it allocates."""
    n_local = len(devices) - len(endpoints)
    if devices and not n_local:
        return ()  # every planned device is lent over RPC
    gpus = local_gpus()
    if not gpus:
        raise HarnessError(
            "--verify --local: this llama.cpp build sees no local GPU here (no GPU, or llama-cpp-python built "
            "without CUDA: `make gpu-check` builds it with CUDA); use --budget SIZE for a loopback RPC stand-in"
        )
    if n_local > len(gpus):
        seen = ", ".join(g.name for g in gpus)
        raise HarnessError(
            f"--verify --local: the plan has {n_local} GPUs but this llama.cpp build sees {len(gpus)} ({seen}): "
            f"give --gpus {len(gpus)} or fewer"
        )
    return tuple(g.name for g in gpus[:n_local])


def _verify(
    result: PlanResult, resolved, devices: list[Device], endpoints: list[str], local: bool = False
) -> PlanResult:
    plan = result.plan
    header = resolved.header
    path = standin_path(header) if resolved.virtual else header.paths[0]
    overrides = tensor_overrides(plan)
    gpus = _verify_gpus(devices, endpoints) if local else ()
    on_gpus: dict[str, Any] = {}
    if gpus:
        # nvidia-smi before and while loaded, in the child that loads; a whole micro-batch decoded, so that
        # ggml-cuda's pool (grown on demand: MMQ's q8_1 activations) holds what the planned n_ubatch needs
        n_tokens = max(1, min(plan.context.n_ubatch, plan.context.n_ctx))
        on_gpus = dict(gpus=gpus, gpu_memory=True, n_decode_tokens=n_tokens)
    report = load_and_report(
        path,
        plan.n_gpu_layers,
        plan.context.n_ctx,
        endpoints,
        **context_settings(plan.context),
        decode=True,
        tensor_split=plan.tensor_split,
        tensor_overrides=overrides,
        isolated=True,  # an RPC peer that misbehaves after its HELLO aborts llama.cpp: an error here, not a crash
        **on_gpus,
    )
    actual = {}
    for d, gpu in zip(plan.devices, gpus):
        buf = report.buffer(gpu)
        before, after = report.gpu_used_bytes(gpu)
        actual[d.name] = Actual(
            buf.model_bytes if buf else 0,
            buf.kv_bytes if buf else 0,
            buf.compute_bytes if buf else 0,
            gpu_used_before_bytes=before,
            gpu_used_after_bytes=after,
        )
    for d, endpoint in zip(plan.devices[len(gpus) :], endpoints):
        bufs = [b for b in report.rpc_buffers if endpoint_of(b.name) == endpoint]
        actual[d.name] = Actual(
            sum(b.model_bytes for b in bufs), sum(b.kv_bytes for b in bufs), sum(b.compute_bytes for b in bufs)
        )
    host = report.host_buffers
    actual["host"] = Actual(
        sum(b.model_bytes for b in host),
        sum(b.kv_bytes for b in host),
        sum(b.compute_bytes for b in host),
        sum(b.output_bytes for b in host),
    )
    notes = (*result.notes, *_gpu_notes(plan, gpus, actual, report)) if gpus else result.notes
    if resolved.virtual:
        notes = (
            *notes,
            f"--verify loaded a stand-in of {result.model} (no file here): its header with every weight zero, so "
            "llama.cpp's buffers are the model's own, and what it computes is not",
        )
    mismatches: tuple[str, ...] = ()
    if overrides:
        # the plan's placement, as the solver's evaluate makes it (the same devices, split and patterns)
        placed = placement_of(header, devices, plan.context, plan.n_gpu_layers, plan.tensor_split, plan.n_cpu_moe)
        mismatches = placement_mismatches(placed, report)
        n = len(placed.overridden)
        notes = (
            *notes,
            f"llama.cpp placed all {n} overridden tensors where the plan said (the routed experts of blocks "
            f"0..{plan.n_cpu_moe - 1} on the host)"
            if not mismatches
            else f"llama.cpp placed {len(mismatches)} tensors elsewhere than the plan said: "
            + "; ".join(mismatches[:8])
            + (f"; and {len(mismatches) - 8} more" if len(mismatches) > 8 else ""),
        )
    return replace(
        result,
        actual=actual,
        n_layers_offloaded_actual=report.n_layers_on_devices,
        notes=notes,
        placement_mismatches=mismatches,
    )


def _gpu_notes(plan: Plan, gpus: tuple[str, ...], actual: dict[str, Actual], report: EngineReport) -> list[str]:
    """--verify --local: which GPU stood for which planned device, and the reserve nvidia-smi measured there."""
    described = {d.name: d.description for d in report.offload_devices}
    notes = []
    for d, gpu in zip(plan.devices, gpus):
        a = actual[d.name]
        on = f"{d.name}" + (f" was verified on {gpu}" if d.name != gpu else " was verified")
        on += f" ({described[gpu]})" if gpu in described else ""
        if a.measured_reserve_bytes is None:
            why = f"absent, or not matched to {gpu}"
            notes.append(f"{on}; nvidia-smi gave no figure for it ({why}): no reserve measured")
            continue
        notes.append(
            f"{on}: nvidia-smi counted {human_bytes(a.gpu_used_delta_bytes)} more in use while loaded, "
            f"{human_bytes(a.total_bytes)} of it llama.cpp's buffers: a measured reserve of "
            f"{signed_bytes(a.measured_reserve_bytes)} against {human_bytes(d.reserve_bytes)} planned "
            f"(the CUDA context, cuBLAS, ggml-cuda's pool after a {report.n_tokens_decoded}-token batch)"
        )
    return notes


def placement_mismatches(placed: Placement, report: EngineReport) -> tuple[str, ...]:
    """Each tensor llama.cpp put elsewhere than ``placed`` says, by llama.cpp's DEBUG log: an overridden tensor
    in the buffer type planned (CPU_REPACK where the plan repacks it, else CPU), none overridden that the plan
    did not override, and each other block tensor on the host or a device as its layer is planned (a device by
    side only: every RPC server names its first device RPC0)."""
    out = []
    got = dict(report.overridden)
    repacked = frozenset(placed.repacked)
    for name in placed.overridden:
        want = "CPU_REPACK" if name in repacked else HOST
        if got.get(name) != want:
            out.append(f"{name}: planned {want}, llama.cpp {got.get(name) or 'did not override it'}")
    for name in sorted(set(got) - set(placed.overridden)):
        out.append(f"{name}: not planned to move, llama.cpp overrode it to {got[name]}")
    for name, d in placed.tensor_device.items():
        if name in got or block_of(name) is None:
            continue
        where = report.tensor_placed(name)
        if where is not None and (where == HOST) != (d == -1):
            out.append(f"{name}: planned {'the host' if d == -1 else 'a device'}, llama.cpp {where}")
    return tuple(out)
