"""`harness compare`: quant levels side by side under one budget, as a table, JSON or a chart."""

from __future__ import annotations

import click

from harness.cli.charts import check_path, compare_chart
from harness.cli.options import SIZE, TextFileType
from harness.cli.output import echo_json
from harness.compare import DEFAULT_QUANTS, Comparison, DeviceMemory, StrategyFit
from harness.compare import compare as compare_quants
from harness.plan import MAX_N_CTX, PlanRequest
from harness.text import human_bytes, table

# Scoring reads --chunks x 512 tokens (a few KiB each) and the importance matrix 16 chunks; the whole text
# is tokenized first, so a corpus is cut to this before it is read.
MAX_TEXT_BYTES = 16 << 20


@click.command()
@click.argument("model")
@click.option("--quants", default=",".join(DEFAULT_QUANTS), show_default=True)
@click.option("--gpu", default=None, metavar="PROFILE", help="Target GPU profile (default a100-40gb).")
@click.option("--budget", type=SIZE, default=None, metavar="SIZE", help="A bare budget instead of a profile.")
@click.option("--host-ram", type=SIZE, default=None, metavar="SIZE", help="Host RAM (default: this machine's).")
@click.option(
    "--rpc",
    "rpcs",
    multiple=True,
    metavar="HOST:PORT=SIZE",
    help="A llama.cpp RPC device: each variant is planned for it and run there with its own split.",
)
@click.option("--local", is_flag=True, help="Plan for this machine's GPUs (as `run` does) and run each variant there.")
@click.option(
    "--ctx",
    "n_ctx",
    default=4096,
    show_default=True,
    type=click.IntRange(1, MAX_N_CTX),
    help="Context length for the plans (with devices, also for the runs).",
)
@click.option(
    "--text",
    default=None,
    type=TextFileType(MAX_TEXT_BYTES),
    help="Text for perplexity/KLD (default: CPython's pydoc topics, real prose on every machine).",
)
@click.option(
    "--chunks", default=8, show_default=True, type=click.IntRange(min=1), help="512-token chunks of the text to score."
)
@click.option("--reps", default=3, show_default=True, type=click.IntRange(min=1), help="Bench repetitions per variant.")
@click.option("--remote", is_flag=True, help="For a registry entry with a Hub source: read its real header remotely.")
@click.option("--plot", "plot_file", default=None, metavar="FILE.png", help="Write a PNG chart.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of a table.")
def compare(
    model: str,
    quants: str,
    gpu: str | None,
    budget: int | None,
    host_ram: int | None,
    rpcs: tuple[str, ...],
    local: bool,
    n_ctx: int,
    text: str | None,
    chunks: int,
    reps: int,
    remote: bool,
    plot_file: str | None,
    json_: bool,
) -> None:
    """Quant levels of MODEL side by side under one budget: size, fit, speed, quality.

    A model file here: missing variants are built with llama.cpp's quantizer (cached), benchmarked
    here, and scored against the file (perplexity, KL divergence, top-1 agreement). A registry entry
    known by its architecture: exact sizes, fit and predicted speed on one GPU and how many GPUs hold
    it; nothing unmeasured is made up. A mixture of experts is planned both ways (whole layers on the GPU,
    or routed experts on the host: --n-cpu-moe), the faster that fits chosen and the other shown beside it.

    With devices to run on (--rpc hosts; --local: this machine's GPUs, which --gpu/--budget then describe as
    in `run`), each variant is planned for them, run alone with its own split, and its memory per device
    printed as planned and as llama.cpp reports it; quality is still scored with every variant on the host.

    \b
    Examples:
      harness compare smollm2-135m-q4_1 --quants Q8_0,Q4_K_M,Q2_K --plot smollm2.png
      harness compare 405b-q4_k_m --quants Q4_K_M,Q3_K_M,Q2_K,IQ2_XXS,IQ1_S --ctx 8192
      harness compare qwen3-235b-a22b-q4_k_m --quants Q4_K_M,Q2_K,IQ2_XXS --host-ram 256GiB
      harness compare smollm2-135m-q4_1 --quants Q4_K_M,Q2_K --rpc 127.0.0.1:50052=200MiB --ctx 512
    """
    if plot_file:
        check_path(plot_file)
    req = PlanRequest(
        model=model,
        gpu=gpu,
        budget_bytes=budget,
        host_ram_bytes=host_ram,
        rpc=rpcs,
        local=local,
        n_ctx=n_ctx,
        remote=remote,
    )
    c = compare_quants(
        req,
        [q.strip().upper() for q in quants.split(",") if q.strip()],
        text,
        reps,
        chunks,
        lambda m: click.echo(m, err=True),
    )
    if plot_file:
        compare_chart(c, plot_file)
        click.echo(f"chart written to {plot_file}", err=True)
    if json_:
        echo_json(c.to_json())
    else:
        click.echo(render(c))


def render(c: Comparison) -> str:
    """The comparison as a table, then the rows' own notes and the comparison's."""

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    rows = [
        [
            r.quant,
            human_bytes(r.tensor_bytes),
            f"{r.bits_per_weight:.2f}",
            r.n_fallback,
            f"{r.n_gpu_layers}/{r.n_layers_total}"
            + ("" if r.n_layers_offloaded is None else f" ({r.n_layers_offloaded})"),
            "yes" if r.fits_fully else "no",
            "—" if r.gpus_to_fit is None else f"{r.gpus_to_fit} ({r.predicted_tg_at_fit_tokens_per_s:.1f} t/s)",
            f"{r.predicted_tg_tokens_per_s:.2f}",
            f(r.pp_tokens_per_s, ".1f"),
            f(r.tg_tokens_per_s, ".1f"),
            f(r.perplexity, ".3f"),
            f(r.kld, ".4f"),
            f(r.top1_agreement, ".3f"),
        ]
        for r in c.rows
    ]
    where = "split" if c.split else "here"
    headers = [
        "quant",
        "size",
        "bpw",
        "fallbacks",
        "layers on devices (llama.cpp)" if c.split else "layers on 1 GPU",
        "fits",
        "devices to fit (tg)" if c.split else "GPUs to fit (tg)",
        "pred. tg t/s",
        f"pp t/s {where}",
        f"tg t/s {where}",
        "PPL",
        "KLD",
        "top-1",
    ]
    right = [False] + [True] * 12
    moe = any(r.other is not None or r.n_cpu_moe for r in c.rows)
    if moe:  # a mixture of experts: which split each plan is, and what the other would give
        for row, r in zip(rows, c.rows):
            row[5:5] = [_strategy(r.strategy, r.n_cpu_moe), _other(r.other)]
        headers[5:5] = ["strategy", "other strategy (fit, pred. tg t/s)"]
        right[5:5] = [False, False]
    lines = [table(headers, rows, right=right)]
    if c.split and any(r.memory for r in c.rows):
        lines += ["", memory_table(c)]
    lines += [
        f"{r.quant}: {r.note}" for r in c.rows if r.note and not r.note.startswith(("reference", "built", "predicted"))
    ]
    lines += [f"note: {n}" for n in c.notes]
    if moe:
        lines.append(
            "note: a mixture of experts is planned both ways, whole layers on the GPU or every layer there with "
            "the routed experts of the first N blocks on the host (--n-cpu-moe N); each row's plan is the faster "
            "that fits, the other is shown beside it"
        )
    return "\n".join(lines)


def _strategy(strategy: str, n_cpu_moe: int) -> str:
    return f"experts (n_cpu_moe {n_cpu_moe})" if n_cpu_moe else strategy


def _other(o: StrategyFit | None) -> str:
    if o is None:
        return "—"
    how = _strategy(o.strategy, o.n_cpu_moe)
    return f"{how}: {o.n_gpu_layers} layers, {o.verdict}, {o.predicted_tg_tokens_per_s:.2f}"


def memory_table(c: Comparison) -> str:
    """Each variant run with its split: per device, the plan's buffers and, under them, llama.cpp's own."""
    rows: list[list[object]] = []

    def cells(m: DeviceMemory, side) -> list[str]:
        out = [side.weights_bytes, side.kv_bytes, side.compute_bytes, side.output_bytes, side.total_bytes]
        return [human_bytes(n) for n in out]

    for r in c.rows:
        for m in r.memory:
            budget = human_bytes(m.budget_bytes) if m.budget_bytes else "not set"
            rows.append([r.quant, m.name, m.n_layers, *cells(m, m.predicted), budget])
            rows.append(["", "  llama.cpp says", "", *cells(m, m.actual), ""])
    headers = ["quant", "device", "layers", "weights", "KV", "compute", "output", "total", "budget / RAM"]
    return table(headers, rows, right=[False, False] + [True] * 7)
