"""`harness run`: one prompt through the planned split, streamed, with a summary on stderr."""

from __future__ import annotations

import sys

import click

from harness.cli.options import FiniteFloatRange, moe_options, plan_options
from harness.cli.output import echo_json
from harness.errors import UsageError
from harness.llama.session import Sampling
from harness.offload.solver import Plan
from harness.plan import MAX_N_CTX, PlanRequest
from harness.run import predicted_memory_bytes, run_prompt
from harness.text import human_bytes


def strategy_text(plan: Plan) -> str:
    """How the plan splits the model, in the words of llama.cpp's options: "n_gpu_layers 5" or
    "n_gpu_layers 5, n_cpu_moe 2: the routed experts of blocks 0..1 on the host"."""
    if not plan.n_cpu_moe:
        return f"n_gpu_layers {plan.n_gpu_layers}"
    return (
        f"n_gpu_layers {plan.n_gpu_layers}, n_cpu_moe {plan.n_cpu_moe}: the routed experts of blocks "
        f"0..{plan.n_cpu_moe - 1} on the host"
    )


@click.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(min=0))
@click.option("--temperature", default=0.0, show_default=True, type=FiniteFloatRange(min=0), help="0 is greedy.")
@click.option("--top-p", default=1.0, show_default=True, type=FiniteFloatRange(0, 1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1))  # llama.cpp's is a uint32
@click.option(
    "--ctx",
    "n_ctx",
    default=4096,
    show_default=True,
    type=click.IntRange(0, MAX_N_CTX),
    help="0: the model's training context, as llama.cpp takes it.",
)
@click.option("--chat", is_flag=True, help="Apply the model's chat template (rendered in a sandbox).")
@click.option("--system", default=None, help="A system message (with --chat).")
@plan_options
@moe_options
@click.option("--json", "json_", is_flag=True, help="Print one JSON object at the end instead of streaming.")
def run(
    model: str,
    prompt: str,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    n_ctx: int,
    chat: bool,
    system: str | None,
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
    json_: bool,
) -> None:
    """Answer PROMPT with MODEL, loaded with the planned split; tokens stream to stdout.

    PROMPT "-" reads standard input. A summary (tokens/s, layers offloaded as llama.cpp reports them,
    memory per device predicted vs actual) follows on stderr. Ctrl-C stops and still summarises.

    \b
    Examples:
      harness run gemma3-270m-q4_k_m "The capital of France is" --chat
      echo "Write a haiku" | harness run smollm2-135m-q4_1 - --chat --temperature 0.7
    """
    if prompt == "-":
        prompt = read_stdin()
    req = PlanRequest(
        model=model,
        gpu=gpu,
        budget_bytes=budget,
        rpc=rpcs,
        n_ctx=n_ctx,
        kv_type=kv_type,
        n_gpu_layers=n_gpu_layers,
        strategy=strategy,
        n_cpu_moe=n_cpu_moe,
        split_mode=split_mode,
    )

    def stream(piece: str) -> None:
        click.echo(piece, nl=False)

    result = run_prompt(
        req,
        prompt,
        max_tokens,
        Sampling(temperature, top_p, seed),
        chat,
        system,
        force,
        threads,
        None if json_ else stream,
    )
    g = result.generation
    if json_:
        echo_json(
            {
                "text": g.text,
                "prompt_tokens": g.prompt_tokens,
                "completion_tokens": g.completion_tokens,
                "n_gpu_layers": result.plan.n_gpu_layers,
                "n_cpu_moe": result.plan.n_cpu_moe,
                "strategy": result.plan.strategy,
                "n_layers_offloaded": result.n_layers_offloaded,
                "stopped": g.stopped,
                "timings": {
                    "load_s": round(result.load_s, 4),
                    "prompt_s": round(g.prompt_s, 4),
                    "generation_s": round(g.generation_s, 4),
                    "pp_tokens_per_s": round(g.pp_tokens_per_s, 2),
                    "tg_tokens_per_s": round(g.tg_tokens_per_s, 2),
                },
                "memory": _memory_json(result.plan, result.report),
            }
        )
        return
    click.echo()

    mem = "; ".join(
        f"{name} {human_bytes(n)} predicted / {human_bytes(result.report.actual_bytes(name))} actual"
        for name, n in predicted_memory_bytes(result.plan).items()
    )
    click.echo(
        f"[{g.prompt_tokens} prompt tokens at {g.pp_tokens_per_s:.1f}/s, {g.completion_tokens} generated at "
        f"{g.tg_tokens_per_s:.1f}/s, stopped: {g.stopped}; llama.cpp offloaded "
        f"{result.n_layers_offloaded}/{result.plan.n_layers_total} layers (planned {strategy_text(result.plan)})"
        + ("" if result.plan.devices else "; no offload device here: everything on the CPU")
        + f"; memory: {mem}]",
        err=True,
    )


# No context holds more: a million tokens are a few MiB of text. Bounds `run - < /dev/zero`.
MAX_STDIN_BYTES = 64 << 20


def read_stdin() -> str:
    """PROMPT "-": standard input, which must be open and hold UTF-8 text."""
    stream = sys.stdin
    if stream is None:
        raise UsageError('PROMPT "-" reads standard input, which is closed')
    try:
        source = getattr(stream, "buffer", stream)
        data = source.read(MAX_STDIN_BYTES + 1)
    except (OSError, ValueError) as exc:  # a directory, a closed file
        raise UsageError(f'PROMPT "-": cannot read standard input: {getattr(exc, "strerror", None) or exc}') from None
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > MAX_STDIN_BYTES:
        raise UsageError(
            f'PROMPT "-": standard input holds more than {human_bytes(MAX_STDIN_BYTES)}; no context holds that'
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f'PROMPT "-": standard input is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})'
        ) from None


def _memory_json(plan, report) -> dict:
    totals = predicted_memory_bytes(plan)
    predicted = {
        d.name: {
            "weights_bytes": d.weights_bytes,
            "kv_bytes": d.kv_bytes,
            "compute_bytes": d.compute_bytes,
            "total_bytes": totals[d.name],
        }
        for d in plan.devices
    }
    predicted["host"] = {
        "weights_bytes": plan.host.weights_bytes,
        "kv_bytes": plan.host.kv_bytes,
        "compute_bytes": plan.host.compute_bytes,
        "output_bytes": plan.host.output_bytes,
        "total_bytes": totals["host"],
    }
    actual = {
        b.name: {
            "weights_bytes": b.model_bytes,
            "kv_bytes": b.kv_bytes,
            "compute_bytes": b.compute_bytes,
            "output_bytes": b.output_bytes,
            "total_bytes": b.total_bytes,
        }
        for b in report.buffers
    }
    return {"predicted": predicted, "actual": actual}
