"""`harness run`: one prompt through the planned split, streamed, with a summary on stderr."""

from __future__ import annotations

import sys

import click

from harness.cli.options import plan_options
from harness.cli.output import echo_json
from harness.llama.session import Sampling
from harness.plan import PlanRequest
from harness.run import run_prompt
from harness.text import human_bytes


@click.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--max-tokens", default=128, show_default=True)
@click.option("--temperature", default=0.0, show_default=True, help="0 is greedy.")
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--ctx", "n_ctx", default=4096, show_default=True)
@click.option("--chat", is_flag=True, help="Apply the model's chat template (rendered in a sandbox).")
@click.option("--system", default=None, help="A system message (with --chat).")
@plan_options
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
        prompt = sys.stdin.read()
    req = PlanRequest(
        model=model, gpu=gpu, budget_bytes=budget, rpc=rpcs, n_ctx=n_ctx, kv_type=kv_type, n_gpu_layers=n_gpu_layers
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

    h = result.plan.host
    predicted = [(d.name, d.weights_bytes + d.kv_bytes + d.compute_bytes) for d in result.plan.devices]
    predicted.append(("host", h.total_bytes))
    mem = "; ".join(
        f"{name} {human_bytes(n)} predicted / {human_bytes(result.report.actual_bytes(name))} actual"
        for name, n in predicted
    )
    click.echo(
        f"[{g.prompt_tokens} prompt tokens at {g.pp_tokens_per_s:.1f}/s, {g.completion_tokens} generated at "
        f"{g.tg_tokens_per_s:.1f}/s, stopped: {g.stopped}; llama.cpp offloaded "
        f"{result.n_layers_offloaded}/{result.plan.n_layers_total} layers (planned {result.plan.n_gpu_layers})"
        + ("" if result.plan.devices else "; no offload device here: everything on the CPU")
        + f"; memory: {mem}]",
        err=True,
    )


def _memory_json(plan, report) -> dict:
    predicted = {
        d.name: {
            "weights_bytes": d.weights_bytes,
            "kv_bytes": d.kv_bytes,
            "compute_bytes": d.compute_bytes,
            "total_bytes": d.weights_bytes + d.kv_bytes + d.compute_bytes,
        }
        for d in plan.devices
    }
    predicted["host"] = {
        "weights_bytes": plan.host.weights_bytes,
        "kv_bytes": plan.host.kv_bytes,
        "compute_bytes": plan.host.compute_bytes,
        "total_bytes": plan.host.total_bytes,
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
