"""Plain text, the bottom floor: byte sizes, aligned tables, a plan as text, sizes parsed. No I/O here.

Both the library (bench's "what it would take") and the CLI render through these, so a plan reads the
same wherever it is printed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

GIB = 1 << 30
MIB = 1 << 20


def gib(n_bytes: int) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def human_bytes(n_bytes: int) -> str:
    if n_bytes >= GIB:
        return f"{n_bytes / GIB:.2f} GiB"
    if n_bytes >= MIB:
        return f"{n_bytes / MIB:.2f} MiB"
    if n_bytes >= 1024:
        return f"{n_bytes / 1024:.2f} KiB"
    return f"{n_bytes} B"


def signed_bytes(n_bytes: int) -> str:
    """human_bytes with a minus sign for a negative size (a shortfall, a measurement below a figure)."""
    return human_bytes(n_bytes) if n_bytes >= 0 else "-" + human_bytes(-n_bytes)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] | None = None) -> str:
    """A markdown-compatible table with aligned columns; ``right`` marks numeric columns."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = right or [False] * len(headers)

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(r, widths, right)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if ra else ("-" * (w + 2)) for w, ra in zip(widths, right)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "TIB": 1 << 40,
}


def parse_size(text: str) -> int:
    """'40GiB' -> 42949672960, '80GB' -> 80e9, '512' -> 512. Raises ValueError with the accepted forms."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 40GiB, 80GB, 24000MiB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[unit])


def render_plan(r) -> str:
    """`harness plan`'s text for ``r``, a harness.plan.PlanResult (not imported: this floor is below it): the
    verdict, a table per device and the host, the prediction, the advice."""
    p = r.plan
    experts = f", routed experts of blocks 0..{p.n_cpu_moe - 1} on the host (--n-cpu-moe {p.n_cpu_moe})"
    lines = [
        f"{r.model}: {p.verdict} — n_gpu_layers {p.n_gpu_layers} of {p.n_layers_total}"
        f"{experts if p.n_cpu_moe else ''} "
        f"(ctx {p.context.n_ctx}, KV {p.context.type_k}, "
        f"flash attention {'on' if p.context.flash_attn else 'off'})"
    ]
    rows = []
    for d in p.devices:
        rows.append(
            [
                d.name,
                d.n_layers + (1 if d.holds_output else 0),
                human_bytes(d.weights_bytes),
                human_bytes(d.kv_bytes),
                human_bytes(d.compute_bytes),
                human_bytes(d.reserve_bytes),
                human_bytes(d.total_bytes),
                human_bytes(d.budget_bytes),
                signed_bytes(d.headroom_bytes),
            ]
        )
        if d.name in r.actual:
            a = r.actual[d.name]
            rows.append(
                [
                    "  llama.cpp says",
                    "",
                    human_bytes(a.weights_bytes),
                    human_bytes(a.kv_bytes),
                    human_bytes(a.compute_bytes),
                    "",
                    human_bytes(a.total_bytes),
                    "",
                    "",
                ]
            )
            if getattr(a, "measured_reserve_bytes", None) is not None:
                # --verify --local: what the driver counted, its excess over llama.cpp's buffers in "reserve"
                rows.append(
                    [
                        "  nvidia-smi counted",
                        "",
                        "",
                        "",
                        "",
                        signed_bytes(a.measured_reserve_bytes),
                        signed_bytes(a.gpu_used_delta_bytes),
                        "",
                        "",
                    ]
                )
    if rows:
        lines += [
            "",
            table(
                ["device", "layers", "weights", "KV", "compute", "reserve", "total", "budget", "headroom"],
                rows,
                right=[False] + [True] * 8,
            ),
        ]
    h = p.host
    host_rows = [
        [
            "host",
            human_bytes(h.weights_bytes),
            human_bytes(h.kv_bytes),
            human_bytes(h.compute_bytes),
            human_bytes(h.output_bytes),
            human_bytes(h.total_bytes),
            human_bytes(h.ram_bytes) if h.ram_bytes else "not set",
        ]
    ]
    if "host" in r.actual:
        a = r.actual["host"]
        host_rows.append(
            [
                "  llama.cpp says",
                human_bytes(a.weights_bytes),
                human_bytes(a.kv_bytes),
                human_bytes(a.compute_bytes),
                human_bytes(a.output_bytes),
                human_bytes(a.total_bytes),
                "",
            ]
        )
    lines += [
        "",
        table(["", "weights", "KV", "compute", "output", "total", "RAM"], host_rows, right=[False] + [True] * 6),
    ]
    lines += [
        "",
        f"predicted: {p.predicted_tg_tokens_per_s:.2f} tokens/s generation (memory-bandwidth bound, "
        f"at the profiles' efficiency), up to {p.predicted_pp_tokens_per_s:.0f} tokens/s prompt processing "
        "(compute / PCIe bound)",
    ]
    o = getattr(r, "other", None)
    if o is not None:

        def how(x) -> str:
            moe = f" and --n-cpu-moe {x.n_cpu_moe}" if x.n_cpu_moe else ""
            fit = "" if x.devices_fit else ", does not fit"
            return f"n_gpu_layers {x.n_gpu_layers}{moe}: {x.predicted_tg_tokens_per_s:.2f} tokens/s{fit}"

        lines.append(f"strategy: {p.strategy} ({how(p)}), chosen over {o.strategy} ({how(o)})")
    if len(p.devices) > 1:
        how = (
            "in proportion to the budgets (llama.cpp's default)"
            if p.split_mode == "proportional"
            else "packed into the devices in order (--split packed)"
        )
        split = ",".join(f"{x:g}" for x in p.tensor_split)
        lines.append(f"split: layers {how}, tensor_split {split}")
        if p.n_copies > 1:
            lines.append(
                f"pipeline parallelism: llama.cpp keeps {p.n_copies} copies of each device's graph inputs "
                "(every layer offloaded over several devices), counted in compute"
            )
    if r.n_layers_offloaded_actual is not None:
        lines.append(f"llama.cpp offloaded {r.n_layers_offloaded_actual}/{p.n_layers_total} layers")
    if not p.fits_fully and not p.host.fits:
        lines.append(f"the host lacks {gib(h.needed_bytes - h.ram_bytes)} of RAM for its share")
    for s in r.suggestions:
        lines.append(f"suggestion: {s}")
    for n in r.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)
