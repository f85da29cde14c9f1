"""Quant levels side by side under one budget: size, fit, speed and quality.

For a model file here, each missing variant is built with llama.cpp's own quantizer from the file
(requantized when the file is itself quantized: said so in the result), cached, planned for the
target budget, benchmarked with the bench method, and scored against the file with quality.measure.
For a model known by its architecture only, rows carry exact sizes, fit and predicted speed on the
target and on more GPUs; nothing measured is made up (null).

With devices to run on (RPC hosts, this machine's GPUs: PlanRequest.rpc / local), each variant is planned
for them as `harness run` plans (llama.cpp's dry run for compute buffers), loaded alone with its own split,
benchmarked there, and its plan set beside llama.cpp's own buffer report per device. Quality is measured as
without devices: every variant on the host at once, scoring the same chunks side by side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import settings
from harness.errors import UsageError
from harness.gguf.shards import read_header
from harness.llama.bench_loop import run_bench
from harness.llama.engine import BufferReport, EngineReport
from harness.llama.imatrix import ImportanceMatrix, compute
from harness.llama.quality import default_text, measure
from harness.llama.quantizer import quantize
from harness.llama.rpc import endpoint_of
from harness.llama.session import open_session
from harness.models.resolve import resolve_model
from harness.offload.placement import ContextParams
from harness.offload.solver import Plan, gpus_to_fit, solve_strategies
from harness.plan import Actual, context_of, make_plan, target_devices, target_host
from harness.quant.sizes import at_quant, needs_imatrix, predict
from harness.text import human_bytes

DEFAULT_QUANTS = ("Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS")
# each variant's speed test: llama-bench's method at this size (harness.llama.bench_loop)
PP_TOKENS, TG_TOKENS = 256, 32
QUALITY_N_CTX = 512  # the chunk quality is scored in (and the host sessions' context): llama.cpp's perplexity default


@dataclass(frozen=True)
class StrategyFit:
    """One way to split a mixture of experts on the target: whole layers, or routed experts on the host."""

    strategy: str  # "layers" / "experts"
    n_gpu_layers: int
    n_cpu_moe: int
    fits_fully: bool  # every layer on the devices (the experts of n_cpu_moe blocks on the host)
    devices_fit: bool
    verdict: str
    predicted_tg_tokens_per_s: float

    @classmethod
    def of(cls, plan: Plan) -> StrategyFit:
        return cls(
            plan.strategy,
            plan.n_gpu_layers,
            plan.n_cpu_moe,
            plan.fits_fully,
            plan.devices_fit,
            plan.verdict,
            plan.predicted_tg_tokens_per_s,
        )

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class DeviceMemory:
    """One device's memory for one variant run with its split: the plan's buffers and llama.cpp's own report of
    the load (weights, KV cache, compute; on the host also the logits' output buffer). A runtime reserve is no
    buffer llama.cpp reports, so neither side holds one."""

    name: str  # a planned device's name, or "host"
    budget_bytes: int  # the device's budget; for the host, its RAM (0: not set)
    n_layers: int  # layers the plan puts here, the output layer counted as one
    predicted: Actual
    actual: Actual

    def to_json(self) -> dict[str, Any]:
        def side(a: Actual) -> dict[str, int]:
            return {
                "weights_bytes": a.weights_bytes,
                "kv_bytes": a.kv_bytes,
                "compute_bytes": a.compute_bytes,
                "output_bytes": a.output_bytes,
                "total_bytes": a.total_bytes,
            }

        return {
            "device": self.name,
            "budget_bytes": self.budget_bytes,
            "n_layers": self.n_layers,
            "predicted": side(self.predicted),
            "actual": side(self.actual),
        }


def _reported(buffers: tuple[BufferReport, ...] | list[BufferReport]) -> Actual:
    return Actual(
        sum(b.model_bytes for b in buffers),
        sum(b.kv_bytes for b in buffers),
        sum(b.compute_bytes for b in buffers),
        sum(b.output_bytes for b in buffers),
    )


def memory_of(plan: Plan, report: EngineReport) -> tuple[DeviceMemory, ...]:
    """Each planned device, then the host: the plan's buffers beside the ones llama.cpp reported for it (an RPC
    device by its endpoint, whatever index the server gave it; a local GPU by its name), as
    EngineReport.actual_bytes matches them."""
    out = []
    for d in plan.devices:
        endpoint = endpoint_of(d.name)
        mine = [
            b
            for b in report.device_buffers
            if (endpoint_of(b.name) == endpoint if endpoint is not None else b.name.startswith(d.name))
        ]
        predicted = Actual(d.weights_bytes, d.kv_bytes, d.compute_bytes)
        n_layers = d.n_layers + (1 if d.holds_output else 0)
        out.append(DeviceMemory(d.name, d.budget_bytes, n_layers, predicted, _reported(mine)))
    h = plan.host
    out.append(
        DeviceMemory(
            "host",
            h.ram_bytes,
            plan.n_layers_total - plan.n_gpu_layers,
            Actual(h.weights_bytes, h.kv_bytes, h.compute_bytes, h.output_bytes),
            _reported(report.host_buffers),
        )
    )
    return tuple(out)


@dataclass(frozen=True)
class Row:
    quant: str
    tensor_bytes: int
    file_bytes: int | None
    bits_per_weight: float
    n_fallback: int
    n_gpu_layers: int
    n_layers_total: int
    fits_fully: bool
    predicted_tg_tokens_per_s: float
    gpus_to_fit: int | None  # GPUs of the target kind that hold every layer (None: more than 16)
    predicted_tg_at_fit_tokens_per_s: float | None = None  # on that many GPUs
    pp_tokens_per_s: float | None = None
    tg_tokens_per_s: float | None = None
    perplexity: float | None = None
    kld: float | None = None
    top1_agreement: float | None = None
    note: str = ""
    strategy: str = "layers"  # how the plan above splits the model: "experts" keeps routed experts on the host
    n_cpu_moe: int = 0
    other: StrategyFit | None = None  # a mixture of experts: the strategy not chosen, on the same target
    # run with its split on the devices (Comparison.devices): llama.cpp's own count and buffers beside the plan's
    n_layers_offloaded: int | None = None
    memory: tuple[DeviceMemory, ...] = ()


@dataclass(frozen=True)
class Comparison:
    model: str
    reference: str | None  # the variant the others are scored against
    rows: tuple[Row, ...]
    notes: tuple[str, ...]
    # the devices each variant was planned for and run on with its own split; () with split False: measured on
    # the host alone, planned for the target profile
    devices: tuple[str, ...] = ()
    split: bool = False

    def to_json(self) -> dict[str, Any]:
        keys = (
            "quant",
            "tensor_bytes",
            "file_bytes",
            "bits_per_weight",
            "n_fallback",
            "n_gpu_layers",
            "fits_fully",
            "predicted_tg_tokens_per_s",
            "pp_tokens_per_s",
            "tg_tokens_per_s",
            "perplexity",
            "kld",
            "top1_agreement",
            "n_layers_total",
            "gpus_to_fit",
            "predicted_tg_at_fit_tokens_per_s",
            "note",
            "strategy",
            "n_cpu_moe",
            "n_layers_offloaded",
        )
        rows = []
        for r in self.rows:
            d = {k: getattr(r, k) for k in keys}
            d = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}
            d["other_strategy"] = r.other.to_json() if r.other else None
            d["memory"] = [m.to_json() for m in r.memory] if self.split else None
            rows.append(d)
        return {
            "model": self.model,
            "reference": self.reference,
            "split": self.split,
            "devices": list(self.devices),
            "rows": rows,
            "notes": list(self.notes),
        }


def _variant_path(source: Path, quant: str) -> Path:
    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return settings.cache_dir() / "variants" / f"{source.stem}-{key}" / f"{quant}.gguf"


def importance_matrix(source: Path, text: str | None, log: Callable[[str], None]):
    """The harness's importance matrix for ``source`` over the text (cached beside the variants)."""
    digest = hashlib.sha256((text or "pydoc").encode()).hexdigest()[:12]
    path = _variant_path(source, f"imatrix-{digest}")
    if path.exists():
        return ImportanceMatrix.load(path)
    log(f"computing an importance matrix for {source.name}")
    im = compute(str(source), text or default_text(), "pydoc_data.topics" if text is None else "--text", progress=log)
    im.save(path)
    return im


def build_variant(source: Path, quant: str, log: Callable[[str], None], imatrix=None) -> Path:
    """llama.cpp's quantizer, from ``source`` (requantizing if it is quantized), cached."""
    target = _variant_path(source, quant + ("-imatrix" if imatrix is not None else ""))
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        quantize(source, target, quant, imatrix, log)
    return target


@dataclass(frozen=True)
class _Target:
    """The budget every variant is planned for: devices, host and context, built once per comparison."""

    devices: list
    host: object
    context: object
    margin_fraction: float
    strategy: str = "auto"
    n_cpu_moe: int | None = None

    def row(
        self,
        quant: str,
        header,
        n_fallback: int,
        file_bytes: int | None = None,
        planned: tuple[Plan, Plan | None] | None = None,
        **measured,
    ) -> Row:
        """``quant``'s row: ``header`` planned on the devices (a mixture of experts both ways: the faster plan
        that fits, and the other), or ``planned``, the plans it was run with; and how many devices of the
        first's kind hold every layer (with the predicted tg there); ``measured``: the fields measured here,
        and the note."""
        plan, other = planned or solve_strategies(
            header,
            self.devices,
            self.host,
            self.context,
            margin_fraction=self.margin_fraction,
            n_cpu_moe=self.n_cpu_moe,
            strategy=self.strategy,
        )
        found = (
            gpus_to_fit(header, self.devices[0], self.host, self.context, self.margin_fraction)
            if self.devices
            else None
        )
        return Row(
            quant,
            header.tensor_bytes,
            file_bytes,
            header.bits_per_weight,
            n_fallback,
            plan.n_gpu_layers,
            plan.n_layers_total,
            plan.fits_fully,
            plan.predicted_tg_tokens_per_s,
            found[0] if found else None,
            found[1].predicted_tg_tokens_per_s if found else None,
            **measured,
            strategy=plan.strategy,
            n_cpu_moe=plan.n_cpu_moe,
            other=StrategyFit.of(other) if other else None,
        )


def compare(
    req,
    quants: list[str],
    text: str | None = None,
    reps: int = 3,
    n_chunks: int = 8,
    progress: Callable[[str], None] = lambda m: None,
) -> Comparison:
    """``req`` is a harness.plan.PlanRequest for the target budget (its model is the one compared). With RPC
    devices (``req.rpc``) or ``req.local`` (this machine's GPUs, as `harness run` takes them), the target is the
    devices to run on, and each variant is measured with its own split there."""

    split = bool(req.rpc) or req.local
    if split and not req.local and (req.gpu or req.budget_bytes is not None):
        raise UsageError(
            "--gpu/--budget with --rpc: each variant runs on the devices named, and a GPU profile names none; "
            "add --local to run on this machine's GPUs as --gpu/--budget describe them, or leave them out"
        )
    resolved = resolve_model(req.model, req.remote)
    devices = target_devices(req)[0]
    target = _Target(devices, target_host(req), context_of(req), req.margin_fraction, req.strategy, req.n_cpu_moe)
    if resolved.virtual:
        c = _compare_architecture(req, quants, resolved, target, progress)
    else:
        c = _compare_local(req, quants, resolved, target, text, reps, n_chunks, progress, split)
    if split and not devices:
        c = replace(c, notes=(*c.notes, "--local: llama.cpp sees no GPU here, so every layer was planned for the host"))
    return replace(c, devices=tuple(d.name for d in devices), split=split)


def _compare_architecture(req, quants, resolved, target: _Target, progress) -> Comparison:
    rows = []
    for q in quants:
        progress(f"{q}: sizing and planning")
        h = at_quant(resolved.header, q)
        pred = predict(resolved.header, q, needs_imatrix(resolved.header, q))
        rows.append(target.row(q, h, pred.n_fallback, note="predicted (not measured here)"))
    return Comparison(
        req.model,
        None,
        tuple(rows),
        (
            f"{req.model} is known by its architecture only: sizes are llama.cpp's rules, speeds predicted; "
            "quality and measured speed are not measured here",
        ),
    )


@dataclass(frozen=True)
class _SplitRun:
    """One variant planned for the devices and, when the plan lets it run, loaded alone that way and benched."""

    plan: Plan
    other: Plan | None
    pp_tokens_per_s: float | None = None
    tg_tokens_per_s: float | None = None
    n_layers_offloaded: int | None = None
    memory: tuple[DeviceMemory, ...] = ()
    why_not: str = ""  # not run: what the plan says


def _run_split(req, quant: str, path: Path, reps: int, progress) -> _SplitRun:
    """``path`` planned as `harness run` plans it (llama.cpp's dry run for the compute buffers), then loaded
    with that split on the devices, benched, and llama.cpp's buffer report kept: one variant on the devices at
    a time, as each plan assumes."""
    result = make_plan(replace(req, model=str(path)), resolve_model(str(path)))
    plan = result.plan
    if not plan.devices_fit or not plan.host.fits:
        h = plan.host
        short = f" (the host's share needs {human_bytes(h.needed_bytes)} of {human_bytes(h.ram_bytes)})"
        why = f"not run with its split: {plan.verdict}" + ("" if h.fits else short)
        return _SplitRun(plan, result.other, why_not=why)
    progress(
        f"{quant}: n_gpu_layers {plan.n_gpu_layers}/{plan.n_layers_total} on "
        f"{', '.join(d.name for d in plan.devices) or 'the host alone'}; bench (pp{PP_TOKENS}, tg{TG_TOKENS}, "
        f"{reps} repetitions)"
    )
    with open_session(str(path), plan, plan.context, result.rpc_endpoints) as s:
        tests = run_bench(s, PP_TOKENS, TG_TOKENS, reps, lambda m: None)
        report = s.report()
    return _SplitRun(
        plan,
        result.other,
        tests[0].avg_ts,
        tests[1].avg_ts,
        report.n_layers_on_devices,
        memory_of(plan, report),
    )


def _compare_local(req, quants, resolved, target: _Target, text, reps, n_chunks, progress, split) -> Comparison:
    source = Path(resolved.header.paths[0])
    own = resolved.header.file_type
    notes = []
    if own not in ("F32", "F16", "BF16"):
        notes.append(
            f"only a {own} file is here: the other variants are requantized from it, and quality is "
            f"measured against it (llama.cpp's --allow-requantize); from an F16 source they would differ"
        )
    paths: dict[str, Path] = {}
    with_imatrix: set[str] = set()
    for q in quants:
        if q == own:
            paths[q] = source
            continue
        im = None
        if needs_imatrix(resolved.header, q):
            im = importance_matrix(source, text, progress)
            with_imatrix.add(q)
        paths[q] = build_variant(source, q, progress, im)
    if own not in quants:
        paths = {own: source, **paths}
    runs = {q: _run_split(req, q, p, reps, progress) for q, p in paths.items()} if split else {}
    cp = ContextParams(n_ctx=QUALITY_N_CTX, n_batch=QUALITY_N_CTX, n_ubatch=QUALITY_N_CTX)
    qualities = {}
    speeds: dict[str, tuple[float | None, float | None]] = {
        q: (r.pp_tokens_per_s, r.tg_tokens_per_s) for q, r in runs.items()
    }
    with ExitStack() as stack:
        sessions = {q: stack.enter_context(open_session(str(p), None, cp)) for q, p in paths.items()}
        if not split:  # no devices: speed is measured here, on the host (with devices: above, on its split)
            for q, s in sessions.items():
                progress(f"{q}: bench (pp{PP_TOKENS}, tg{TG_TOKENS}, {reps} repetitions)")
                tests = run_bench(s, PP_TOKENS, TG_TOKENS, reps, lambda m: None)
                speeds[q] = (tests[0].avg_ts, tests[1].avg_ts)
        progress("quality against " + own)
        ref = sessions[own]
        qualities = measure(
            ref,
            {q: s for q, s in sessions.items() if q != own},
            text or default_text(),
            QUALITY_N_CTX,
            n_chunks,
            progress,
        )
    if split:
        notes.append(
            "each variant was planned for the devices and run alone with its own split (n_gpu_layers per row; "
            "speed measured there, memory below: the plan beside llama.cpp's own buffer report); quality was "
            f"measured as without devices, every variant on the host at n_ctx {QUALITY_N_CTX}"
        )
    rows = []
    for q in dict.fromkeys([own, *quants]):
        h = read_header(paths[q])
        pred = predict(resolved.header, q, q in with_imatrix)
        quality = qualities.get("reference" if q == own else q)
        run = runs.get(q)
        imatrix = " and the harness's importance matrix" if q in with_imatrix else ""
        note = "reference (the file itself)" if q == own else "built with llama.cpp's quantizer" + imatrix
        rows.append(
            target.row(
                q,
                h,
                pred.n_fallback,
                h.file_bytes,
                planned=(run.plan, run.other) if run else None,
                pp_tokens_per_s=speeds[q][0],
                tg_tokens_per_s=speeds[q][1],
                perplexity=quality.perplexity if quality else None,
                kld=quality.kld if quality else None,
                top1_agreement=quality.top1_agreement if quality else None,
                note=f"{run.why_not}; {note}" if run and run.why_not else note,
                n_layers_offloaded=run.n_layers_offloaded if run else None,
                memory=run.memory if run else (),
            )
        )
    return Comparison(req.model, own, tuple(rows), tuple(notes))
