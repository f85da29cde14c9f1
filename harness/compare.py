"""Quant levels side by side under one budget: size, fit, speed and quality.

For a model file here, each missing variant is built with llama.cpp's own quantizer from the file
(requantized when the file is itself quantized: said so in the result), cached, planned for the
target budget, benchmarked with the bench method, and scored against the file with quality.measure.
For a model known by its architecture only, rows carry exact sizes, fit and predicted speed on the
target and on more GPUs; nothing measured is made up (null).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import settings
from harness.gguf.shards import read_header
from harness.llama.bench_loop import run_bench
from harness.llama.imatrix import ImportanceMatrix, compute
from harness.llama.quality import default_text, measure
from harness.llama.quantizer import quantize
from harness.llama.session import open_session
from harness.models.assets import atomic_output
from harness.models.resolve import resolve_model
from harness.offload.placement import ContextParams
from harness.offload.solver import Plan, gpus_to_fit, solve_strategies
from harness.plan import context_of, target_devices, target_host
from harness.quant.sizes import at_quant, needs_imatrix, predict

DEFAULT_QUANTS = ("Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS")


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


@dataclass(frozen=True)
class Comparison:
    model: str
    reference: str | None  # the variant the others are scored against
    rows: tuple[Row, ...]
    notes: tuple[str, ...]

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
        )
        rows = []
        for r in self.rows:
            d = {k: getattr(r, k) for k in keys}
            d = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}
            d["other_strategy"] = r.other.to_json() if r.other else None
            rows.append(d)
        return {"model": self.model, "reference": self.reference, "rows": rows, "notes": list(self.notes)}


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

    def row(self, quant: str, header, n_fallback: int, file_bytes: int | None = None, **measured) -> Row:
        """``quant``'s row: ``header`` planned on the devices (a mixture of experts both ways: the faster plan
        that fits, and the other), and how many GPUs of the kind hold every layer (with the predicted tg
        there); ``measured``: the fields measured here, and the note."""
        plan, other = solve_strategies(
            header,
            self.devices,
            self.host,
            self.context,
            margin_fraction=self.margin_fraction,
            n_cpu_moe=self.n_cpu_moe,
            strategy=self.strategy,
        )
        found = gpus_to_fit(header, self.devices[0], self.host, self.context, self.margin_fraction)
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
    """``req`` is a harness.plan.PlanRequest for the target budget (its model is the one compared)."""

    resolved = resolve_model(req.model, req.remote)
    target = _Target(
        target_devices(req)[0], target_host(req), context_of(req), req.margin_fraction, req.strategy, req.n_cpu_moe
    )
    if resolved.virtual:
        return _compare_architecture(req, quants, resolved, target, progress)
    return _compare_local(req, quants, resolved, target, text, reps, n_chunks, progress)


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


def _compare_local(req, quants, resolved, target: _Target, text, reps, n_chunks, progress) -> Comparison:
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
    cp = ContextParams(n_ctx=512, n_batch=512, n_ubatch=512)
    qualities = {}
    speeds: dict[str, tuple[float, float]] = {}
    with ExitStack() as stack:
        sessions = {q: stack.enter_context(open_session(str(p), None, cp)) for q, p in paths.items()}
        for q, s in sessions.items():
            progress(f"{q}: bench (pp256, tg32, {reps} repetitions)")
            tests = run_bench(s, 256, 32, reps, lambda m: None)
            speeds[q] = (tests[0].avg_ts, tests[1].avg_ts)
        progress("quality against " + own)
        ref = sessions[own]
        qualities = measure(
            ref, {q: s for q, s in sessions.items() if q != own}, text or default_text(), 512, n_chunks, progress
        )
    rows = []
    for q in dict.fromkeys([own, *quants]):
        h = read_header(paths[q])
        pred = predict(resolved.header, q, q in with_imatrix)
        quality = qualities.get("reference" if q == own else q)
        rows.append(
            target.row(
                q,
                h,
                pred.n_fallback,
                h.file_bytes,
                pp_tokens_per_s=speeds[q][0],
                tg_tokens_per_s=speeds[q][1],
                perplexity=quality.perplexity if quality else None,
                kld=quality.kld if quality else None,
                top1_agreement=quality.top1_agreement if quality else None,
                note="reference (the file itself)"
                if q == own
                else "built with llama.cpp's quantizer"
                + (" and the harness's importance matrix" if q in with_imatrix else ""),
            )
        )
    return Comparison(req.model, own, tuple(rows), tuple(notes))


def plot(c: Comparison, path: Path) -> None:
    """One PNG: size against quality (KLD) for measured rows, or against predicted speed otherwise;
    point labels carry the quant and its tokens/s. Written to a temporary name, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    measured = [r for r in c.rows if r.tg_tokens_per_s is not None]
    largest = max(r.tensor_bytes for r in c.rows)
    gib, unit = (1 << 30, "GiB") if largest >= 1 << 30 else (1 << 20, "MiB")
    if measured:
        xs = [r.tensor_bytes / gib for r in measured]
        ax1.scatter(xs, [max(r.kld or 1e-5, 1e-5) for r in measured], s=[40 + 4 * r.tg_tokens_per_s for r in measured])
        for i, (r, x) in enumerate(zip(measured, xs)):
            label = f"{r.quant}\nPPL {r.perplexity:.2f}" + (" (reference, KLD 0)" if r.kld is None else "")
            ax1.annotate(
                label,
                (x, max(r.kld or 1e-5, 1e-5)),
                fontsize=8,
                textcoords="offset points",
                xytext=(8, 10 if i % 2 else -22),
            )
        ax1.set_yscale("log")
        ax1.set_ylabel("mean KL divergence vs reference (nats, log)")
        ax1.set_title("quality vs size (point size: measured tg tokens/s)")
        pos = range(len(measured))
        ax2.bar([p - 0.2 for p in pos], [r.tg_tokens_per_s for r in measured], width=0.4, label="tg tokens/s here")
        ax2.bar(
            [p + 0.2 for p in pos], [r.pp_tokens_per_s / 10 for r in measured], width=0.4, label="pp tokens/s here / 10"
        )
        ax2.set_xticks(list(pos), [r.quant for r in measured])
        ax2.set_ylabel("tokens/s")
        ax2.set_title("speed measured on this machine")
        ax2.legend()
    else:
        xs = [r.tensor_bytes / gib for r in c.rows]
        ax1.scatter(
            xs,
            [r.predicted_tg_tokens_per_s for r in c.rows],
            c=["tab:green" if r.fits_fully else "tab:red" for r in c.rows],
        )
        for r, x in zip(c.rows, xs):
            ax1.annotate(
                f"{r.quant} ({r.n_gpu_layers}/{r.n_layers_total})", (x, r.predicted_tg_tokens_per_s), fontsize=8
            )
        ax1.set_ylabel("predicted tg tokens/s on one GPU (green: fits fully)")
        ax1.set_title("size vs predicted speed")
        ax2.bar([r.quant for r in c.rows], [r.gpus_to_fit or 0 for r in c.rows])
        ax2.set_ylabel("GPUs of the target kind to hold every layer (0: more than 16)")
    ax1.set_xlabel(f"tensor bytes ({unit})")
    fig.suptitle(f"{c.model}: quant levels side by side" + (f" (reference {c.reference})" if c.reference else ""))
    fig.tight_layout()
    with atomic_output(path) as out:
        fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
