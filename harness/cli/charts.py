"""The PNG charts of `compare --plot` and `plan --plot`, in one style.

matplotlib loads only when a chart is drawn, with its Agg backend (no display needed). A chart is written to
a temporary file beside its target and renamed into place, so a failure part way leaves no half-written PNG
(harness.models.assets.atomic_output); a path that cannot be written is one line, checked before the work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli.options import check_writable_dir
from harness.errors import UsageError
from harness.models.assets import atomic_output
from harness.text import GIB, MIB, human_bytes

if TYPE_CHECKING:  # `plan` must not load what compare needs (the engine, numpy) to start
    from harness.compare import Comparison
    from harness.plan import PlanResult

DPI = 110
# one colour per kind of memory, the same in every chart (matplotlib's tab10)
COLOURS = {
    "weights": "tab:blue",
    "KV cache": "tab:orange",
    "compute": "tab:green",
    "output": "tab:olive",
    "reserve": "tab:gray",
}


def check_path(path: str, option: str = "--plot") -> None:
    """Refuse, before any work, a chart path that cannot be written: a folder, or in a folder this user
    cannot write in (or make)."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; name the PNG file to write, e.g. {Path(path) / 'chart.png'}")
    check_writable_dir(os.path.dirname(path) or ".", option, path)


def _unit(largest_bytes: int) -> tuple[int, str]:
    return (GIB, "GiB") if largest_bytes >= GIB else (MIB, "MiB")


@contextmanager
def _figure(path: str, option: str, *args, **kwargs) -> Iterator[tuple[object, object]]:
    """(figure, axes) from plt.subplots(*args, **kwargs); on leaving, the figure written to ``path`` as a PNG
    (temporary file, then renamed) and closed, whatever happened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        try:
            with atomic_output(Path(path)) as out:
                fig.savefig(out, format="png", dpi=DPI)
        except OSError as exc:  # the disk filled, the folder went away while the work ran
            raise UsageError(f"{option} {path}: cannot write the chart: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def compare_chart(c: Comparison, path: str) -> None:
    """`compare --plot`: size against quality (KLD) for measured rows, or against predicted speed otherwise;
    point labels carry the quant and its tokens/s."""
    with _figure(path, "--plot", 1, 2, figsize=(12, 5)) as (fig, (ax1, ax2)):
        measured = [r for r in c.rows if r.tg_tokens_per_s is not None]
        div, unit = _unit(max(r.tensor_bytes for r in c.rows))
        where = "with each variant on its own split" if c.split else "on this machine"
        if measured:
            xs = [r.tensor_bytes / div for r in measured]
            ys = [max(r.kld or 1e-5, 1e-5) for r in measured]
            ax1.scatter(xs, ys, s=[40 + 4 * r.tg_tokens_per_s for r in measured])
            for i, (r, x, y) in enumerate(zip(measured, xs, ys)):
                label = f"{r.quant}\nPPL {r.perplexity:.2f}" + (" (reference, KLD 0)" if r.kld is None else "")
                ax1.annotate(label, (x, y), fontsize=8, textcoords="offset points", xytext=(8, 10 if i % 2 else -22))
            ax1.set_yscale("log")
            ax1.set_ylabel("mean KL divergence vs reference (nats, log)")
            ax1.set_title("quality vs size (point size: measured tg tokens/s)")
            pos = range(len(measured))
            ax2.bar([p - 0.2 for p in pos], [r.tg_tokens_per_s for r in measured], width=0.4, label="tg tokens/s")
            ax2.bar(
                [p + 0.2 for p in pos], [r.pp_tokens_per_s / 10 for r in measured], width=0.4, label="pp tokens/s / 10"
            )
            ax2.set_xticks(list(pos), [r.quant for r in measured])
            ax2.set_ylabel("tokens/s")
            ax2.set_title(f"speed measured {where}")
            ax2.legend()
        else:
            xs = [r.tensor_bytes / div for r in c.rows]
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


def plan_chart(r: PlanResult, quant: str, path: str) -> None:
    """`plan --plot`: each device's memory as stacked bars (weights, KV cache, compute, reserve) inside an
    outline at its budget, the safety margin hatched at the top of it (llama.cpp's own total beside them
    after --verify); the host beside them, what its RAM must hold (weights each once, KV, compute, output)
    against that RAM."""
    p = r.plan
    n = len(p.devices)
    panels = {"width_ratios": [n + 1, 2]} if n else {}
    width = max(9.0, 4 + 1.4 * n)
    with _figure(path, "--plot", 1, 2 if n else 1, figsize=(width, 6), squeeze=False, gridspec_kw=panels) as (
        fig,
        axes,
    ):
        if n:
            _devices_panel(axes[0][0], r)
        _host_panel(axes[0][-1], p.host)
        name = os.path.basename(r.model) if os.path.exists(r.model) else r.model
        fig.suptitle(
            f"{name} ({quant}): {p.verdict}\n"
            f"n_gpu_layers {p.n_gpu_layers}/{p.n_layers_total}, ctx {p.context.n_ctx}, KV {p.context.type_k}"
        )
        handles: dict[str, object] = {}
        for ax in axes[0]:
            for h, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, h)
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 4), fontsize=8)
        fig.tight_layout(rect=(0, 0.1, 1, 1))


def _stack(ax, xs: list[float], segments: list[tuple[str, list[int]]], div: int) -> list[int]:
    """Stacked bars of ``segments`` (label, bytes per bar); the tops, in bytes."""
    tops = [0] * len(xs)
    for label, values in segments:
        ax.bar(xs, [v / div for v in values], 0.6, [t / div for t in tops], color=COLOURS[label], label=label)
        tops = [t + v for t, v in zip(tops, values)]
    return tops


def _devices_panel(ax, r: PlanResult) -> None:
    devices = r.plan.devices
    xs = list(range(len(devices)))
    div, unit = _unit(max(max(d.budget_bytes, d.total_bytes) for d in devices))
    segments = [
        ("weights", [d.weights_bytes for d in devices]),
        ("KV cache", [d.kv_bytes for d in devices]),
        ("compute", [d.compute_bytes for d in devices]),
        ("reserve", [d.reserve_bytes for d in devices]),
    ]
    tops = _stack(ax, xs, segments, div)
    budgets = [d.budget_bytes / div for d in devices]
    ax.bar(xs, budgets, 0.6, fill=False, edgecolor="black", linewidth=1.2, zorder=3, label="budget")
    ax.bar(
        xs,
        [d.margin_bytes / div for d in devices],
        0.6,
        [(d.budget_bytes - d.margin_bytes) / div for d in devices],
        fill=False,
        hatch="///",
        zorder=3,
        edgecolor="tab:red",
        linewidth=0,
        label="safety margin",
    )
    for x, d, top in zip(xs, devices, tops):
        layers = d.n_layers + (1 if d.holds_output else 0)
        room = human_bytes(d.headroom_bytes) if d.fits else "-" + human_bytes(-d.headroom_bytes)
        ax.annotate(
            f"{layers} layers\n{human_bytes(top)} of {human_bytes(d.budget_bytes)}\nheadroom {room}",
            (x, max(top, d.budget_bytes) / div),
            ha="center",
            fontsize=8,
            textcoords="offset points",
            xytext=(0, 4),
        )
        if d.name in r.actual:
            ax.hlines(
                r.actual[d.name].total_bytes / div,
                x - 0.4,
                x + 0.4,
                colors="black",
                linestyles="--",
                label="llama.cpp's buffers (--verify)",
            )
    ax.set_xticks(xs, [d.name for d in devices], fontsize=8, rotation=10 if len(devices) > 2 else 0)
    ax.set_xlim(-0.8, len(devices) - 0.2)
    ax.set_ylabel(unit)
    ax.set_ylim(0, max(max(d.budget_bytes, t) for d, t in zip(devices, tops)) / div * 1.22)
    ax.set_title("offload devices against their budgets")


def _host_panel(ax, h) -> None:
    resident = h.weights_bytes if h.resident_weights_bytes is None else h.resident_weights_bytes
    segments = [
        ("weights", [resident]),
        ("KV cache", [h.kv_bytes]),
        ("compute", [h.compute_bytes]),
        ("output", [h.output_bytes]),
    ]
    div, unit = _unit(max(h.ram_bytes, h.needed_bytes))
    (top,) = _stack(ax, [0], segments, div)
    if h.ram_bytes:
        # drawn over the bar: a share larger than the RAM must show where the RAM ends
        edge = "black" if h.fits else "tab:red"
        ax.bar([0], [h.ram_bytes / div], 0.6, fill=False, edgecolor=edge, lw=1.5, ls=":", zorder=3, label="host RAM")
    ram = human_bytes(h.ram_bytes) if h.ram_bytes else "RAM not set"
    parts = "\n".join(f"{label} {human_bytes(v)}" for label, (v,) in segments if v)
    ax.annotate(
        f"{human_bytes(top)} of {ram}\n{parts}",
        (0, max(top, h.ram_bytes) / div),
        ha="center",
        fontsize=8,
        textcoords="offset points",
        xytext=(0, 4),
    )
    ax.set_xticks([0], ["host"])
    ax.set_xlim(-1, 1)
    ax.set_ylim(0, max(top, h.ram_bytes) / div * 1.4)  # room for the parts named above the bar
    ax.set_ylabel(unit)
    ax.set_title("host RAM")
