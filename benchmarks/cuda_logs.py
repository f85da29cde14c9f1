"""The published CUDA load logs (../shared/data/cuda-logs-published.json) replayed by the planner: each log's model
built from the registry or its published config.json, planned exactly as logged (n_gpu_layers, split, context,
micro-batch, flash attention, KV types) on CUDA devices with compute buffers from llama.cpp's dry run, and every
buffer the log printed set beside the prediction (weights, KV, compute on each device and CUDA_Host), with the
difference in MiB and % and, where they differ, why (tests/support/cuda_logs.py; tests/test_cuda_logs.py holds the
figures). `make cuda-logs`.

    python benchmarks/cuda_logs.py             # a table per log
    python benchmarks/cuda_logs.py --json      # the same rows as JSON
    python benchmarks/cuda_logs.py --markdown  # README's table, causes as numbered notes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cuda_logs import CASES, LOGS_FILE, NOT_EXPRESSED, Row, load_logs, reproduce


def rows_of_all() -> list[tuple[str, list[Row]]]:
    """(model, rows) per log, in the data file's order; progress on stderr (a dry run per log, ~1 s each)."""
    out = []
    for log_id, log in load_logs().items():
        case = CASES.get(log_id)
        if case is None:
            continue
        t0 = time.perf_counter()
        rows = reproduce(case, log)
        print(f"{log_id}: {case.model}: {len(rows)} buffers in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        out.append((case.model, rows))
    return out


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _diff(r: Row) -> tuple[str, str]:
    if r.predicted_bytes is None:
        return "—", "—"
    if r.exact:
        return "=", "="
    pct = "—" if r.diff_pct is None else f"{r.diff_pct:+.2f}%"
    return f"{r.diff_mib:+.2f}", pct


def text_table(results: list[tuple[str, list[Row]]]) -> str:
    lines = []
    for model, rows in results:
        r0 = rows[0]
        lines.append(f"{r0.log_id}  {model}  [{r0.runtime}]")
        lines.append(f"  {'buffer':<11} {'':<8} {'predicted':>10} {'logged':>10} {'diff MiB':>9} {'diff %':>8}  why")
        for r in rows:
            d_mib, d_pct = _diff(r)
            lines.append(
                f"  {r.buffer:<11} {r.quantity:<8} {_mib(r.predicted_mib):>10} {r.logged_mib:>10.2f} "
                f"{d_mib:>9} {d_pct:>8}  {r.why or ''}"
            )
        lines.append("")
    lines += [f"{log_id}: not expressed: {why}" for log_id, why in NOT_EXPRESSED.items()]
    return "\n".join(lines)


def markdown_table(results: list[tuple[str, list[Row]]]) -> str:
    """One row per log and buffer (weights / KV / compute as columns, predicted vs logged MiB, '=' when equal to
    what llama.cpp printed); each cause once, as a numbered note."""
    notes: dict[str, int] = {}
    lines = [
        "| log | model (runtime) | buffer | weights: plan / log MiB | KV: plan / log MiB | compute: plan / log MiB |",
        "|---|---|---|---|---|---|",
    ]
    for model, rows in results:
        by_buffer: dict[str, dict[str, Row]] = {}
        for r in rows:
            by_buffer.setdefault(r.buffer, {})[r.quantity] = r
        for i, (buffer, cells) in enumerate(by_buffer.items()):
            out = []
            for quantity in ("weights", "KV", "compute"):
                r = cells.get(quantity)
                if r is None:
                    out.append("")
                    continue
                if r.exact:
                    out.append(f"= {r.logged_mib:.2f}")
                    continue
                cell = f"{_mib(r.predicted_mib)} / {r.logged_mib:.2f}"
                if r.diff_pct is not None:
                    cell += f" ({r.diff_mib:+.2f}, {r.diff_pct:+.1f}%)"
                if r.why:
                    cell += f" [{notes.setdefault(r.why, len(notes) + 1)}]"
                out.append(cell)
            first = rows[0]
            label = f"{model} ({first.runtime})" if i == 0 else ""
            lines.append(f"| {first.log_id if i == 0 else ''} | {label} | {buffer} | " + " | ".join(out) + " |")
    lines.append("")
    lines += [f"{n}. {why}" for why, n in notes.items()]
    lines += [f"\nNot expressed: {log_id}, {why}." for log_id, why in NOT_EXPRESSED.items()]
    return "\n".join(lines)


def as_json(results: list[tuple[str, list[Row]]]) -> str:
    return json.dumps(
        [
            {
                "log": r.log_id,
                "model": model,
                "runtime": r.runtime,
                "buffer": r.buffer,
                "quantity": r.quantity,
                "predicted_mib": None if r.predicted_mib is None else round(r.predicted_mib, 4),
                "logged_mib": r.logged_mib,
                "diff_mib": None if r.diff_mib is None else round(r.diff_mib, 4),
                "diff_pct": None if r.diff_pct is None else round(r.diff_pct, 4),
                "exact": r.exact,
                "why": r.why,
            }
            for model, rows in results
            for r in rows
        ],
        indent=1,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", dest="json_", action="store_true", help="the rows as JSON")
    form.add_argument("--markdown", action="store_true", help="README's table")
    args = parser.parse_args(argv)
    if not LOGS_FILE.is_file():
        print(f"{LOGS_FILE}: not found (the published logs live beside the checkout, in shared/data)", file=sys.stderr)
        return 2
    results = rows_of_all()
    print(as_json(results) if args.json_ else markdown_table(results) if args.markdown else text_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
