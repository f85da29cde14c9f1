"""`harness bench`: llama-bench's method through the planned split, as a markdown table or JSON records."""

from __future__ import annotations

import json

import click

from harness.bench import BenchResult, bench_model, records, write_results
from harness.cli.options import check_writable_dir, moe_options, plan_options
from harness.cli.output import Progress
from harness.cli.run import strategy_text
from harness.plan import MAX_N_CTX, PlanRequest
from harness.text import human_bytes, table


@click.command()
@click.argument("model", default="gemma3-270m-q4_k_m")
@click.option(
    "--reps",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Repetitions of each test (after a warm-up).",
)
@click.option(
    "--pp", "n_prompt", default=512, show_default=True, type=click.IntRange(min=0), help="Prompt tokens (0: skip)."
)
@click.option(
    "--tg", "n_gen", default=128, show_default=True, type=click.IntRange(min=0), help="Generated tokens (0: skip)."
)
@click.option(
    "--ctx", "n_ctx", default=None, type=click.IntRange(0, MAX_N_CTX), help="Context (default: enough for pp + tg)."
)
@plan_options
@moe_options
@click.option(
    "--download", is_flag=True, help="A model not here (architecture-only entry, hf:// name): download it, then bench."
)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Write results.json/.md here.")
@click.option("--json", "json_", is_flag=True, help="Print llama-bench-style JSON records instead of a table.")
def bench(
    model: str,
    reps: int,
    n_prompt: int,
    n_gen: int,
    n_ctx: int | None,
    gpu: str | None,
    budget: int | None,
    rpcs: tuple[str, ...],
    n_gpu_layers: int | None,
    kv_type: str,
    threads: int | None,
    force: bool,
    strategy: str,
    n_cpu_moe: int | None,
    split_mode: str,
    download: bool,
    out_dir: str | None,
    json_: bool,
) -> None:
    """Benchmark MODEL the way llama-bench does, with the planned split.

    Prints a markdown table (progress on stderr): pp and tg tokens/s (mean ± stddev over --reps after
    a warm-up), against a bare llama-cpp-python decode loop measured in the same run; load time, peak
    RSS, memory per device predicted vs actual, and generation speed against this host's measured
    bandwidth bound. A model that cannot run here (too big for this machine) prints what it would take
    and exits with status 10. A model with no file here that would run here (a registry entry known by
    its architecture only, an hf:// name) names its download and exits with status 3; --download
    fetches it from the Hub, then benches it.
    """
    if out_dir:
        check_writable_dir(out_dir, "--out")
    req = PlanRequest(
        model=model,
        gpu=gpu,
        budget_bytes=budget,
        rpc=rpcs,
        n_ctx=n_ctx or max(512, n_prompt + n_gen),
        kv_type=kv_type,
        n_gpu_layers=n_gpu_layers,
        strategy=strategy,
        n_cpu_moe=n_cpu_moe,
        split_mode=split_mode,
    )
    result = bench_model(
        req,
        reps,
        n_prompt,
        n_gen,
        threads,
        force,
        lambda m: click.echo(m, err=True),
        download=download,
        download_progress=Progress(model),
    )
    recs = records(result)
    md = markdown(result, recs)
    if out_dir:
        write_results(out_dir, recs, md)
        click.echo(f"results written to {out_dir}/results.{{json,jsonl,md}}", err=True)
    click.echo(json.dumps(recs, indent=2) if json_ else md)


def markdown(result: BenchResult, recs: list[dict]) -> str:
    """The table bench prints (and writes to results.md): tokens/s per test, then load, bound and memory."""
    r0 = recs[0]
    rows = [
        [
            result.model,
            human_bytes(r0["model_size"]),
            f"{r0['model_n_params'] / 1e6:.0f} M",
            r0["n_gpu_layers"],
            r0["n_threads"],
            t.test,
            f"{t.avg_ts:.2f} ± {t.stddev_ts:.2f}",
            f"{t.baseline_avg_ts:.2f}",
            f"{100 * t.overhead_ratio:.1f}%",
        ]
        for t in result.tests
    ]
    lines = [
        table(
            [
                "model",
                "size",
                "params",
                "ngl",
                "threads",
                "test",
                "t/s",
                "bare loop t/s",
                "harness/bare (paired median)",
            ],
            rows,
            right=[False, True, True, True, True, False, True, True, True],
        )
    ]
    lines.append("")
    lines.append(
        f"load {result.load_s:.2f} s; peak RSS {human_bytes(result.peak_rss_bytes)}; llama.cpp offloaded "
        f"{result.report.n_layers_on_devices}/{result.plan.n_layers_total} layers (planned "
        f"{strategy_text(result.plan)})"
    )
    tg = next((r for r in recs if r["n_gen"]), None)
    if tg:
        bound = tg["bound_tg_tokens_per_s"]
        lines.append(
            f"generation: predicted {tg['predicted_tg_tokens_per_s']:.1f} t/s, measured {tg['avg_ts']:.1f} t/s"
            + (
                f"; bandwidth bound {bound:.1f} t/s ({human_bytes(tg['bytes_per_token'])} read per token at "
                f"{tg['host_read_bytes_per_s'] / 1e9:.1f} GB/s, numpy sums over 256 MiB on every core), "
                f"measured = {100 * tg['bound_fraction']:.0f}% of it"
                if bound
                else ""
            )
        )
    mem = [
        [name, human_bytes(pred), human_bytes(result.report.actual_bytes(name))]
        for name, pred in r0["memory_predicted"].items()
    ]
    lines.append("")
    lines.append(table(["memory", "predicted", "llama.cpp"], mem, right=[False, True, True]))
    return "\n".join(lines)
