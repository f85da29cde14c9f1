"""`harness plan`: the n_gpu_layers solver's answer for one model and budget, as text or JSON."""

from __future__ import annotations

from typing import Any

import click

from harness.cli.charts import check_path, plan_chart
from harness.cli.options import SIZE, FiniteFloatRange, kv_type_option, moe_options
from harness.cli.output import echo_json
from harness.models.resolve import resolve_model
from harness.offload.solver import MAX_GPUS
from harness.plan import COMPUTE_SOURCES, MAX_N_CTX, MAX_N_UBATCH, PlanRequest, PlanResult, make_plan
from harness.text import render_plan


@click.command()
@click.argument("model")
@click.option(
    "--gpu", "gpu", default=None, metavar="PROFILE", help="GPU profile (default a100-40gb; see hardware.toml)."
)
@click.option(
    "--budget", type=SIZE, default=None, metavar="SIZE", help="A bare memory budget per GPU instead of a profile."
)
@click.option(
    "--gpus", default=1, show_default=True, type=click.IntRange(1, MAX_GPUS), help="How many GPUs of that kind."
)
@click.option("--rpc", "rpcs", multiple=True, metavar="HOST:PORT=SIZE", help="A llama.cpp RPC host as a device.")
@click.option(
    "--ctx",
    "n_ctx",
    default=4096,
    show_default=True,
    type=click.IntRange(0, MAX_N_CTX),
    help="Context length (tokens); 0: the model's training context, as llama.cpp takes it.",
)
@kv_type_option
@click.option(
    "--ubatch",
    "n_ubatch",
    default=512,
    show_default=True,
    type=click.IntRange(1, MAX_N_UBATCH),
    help="Micro-batch size.",
)
@click.option("--no-flash-attn", is_flag=True, help="Plan without flash attention (larger compute buffers).")
@click.option("--host-ram", type=SIZE, default=None, metavar="SIZE", help="Host RAM (default: this machine's).")
@click.option(
    "--host",
    "host_profile",
    default="ddr5-2ch",
    show_default=True,
    help="Host memory profile for speed; 'this' measures this machine now.",
)
@click.option(
    "--reserve", type=SIZE, default=None, metavar="SIZE", help="Runtime reserve per GPU (default: the profile's)."
)
@click.option(
    "--margin",
    default=0.02,
    show_default=True,
    type=FiniteFloatRange(0, 1, max_open=True),
    help="Safety margin, a fraction of each budget.",
)
@click.option(
    "--n-gpu-layers",
    "n_gpu_layers",
    type=click.IntRange(min=0),
    default=None,
    help="Evaluate this value instead of solving.",
)
@click.option(
    "--local",
    is_flag=True,
    help="Plan for the GPUs llama.cpp sees here (each card's memory; --budget: that budget on each of --gpus).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Load it with llama.cpp on the planned devices (--rpc; --local: this machine's GPUs, with nvidia-smi's "
    "used memory; --budget alone: loopback RPC servers it starts) and compare.",
)
@click.option("--remote", is_flag=True, help="For a registry entry with a Hub source: read its real header remotely.")
@click.option(
    "--compute",
    type=click.Choice(COMPUTE_SOURCES),
    default="auto",
    show_default=True,
    help="Compute buffers from llama.cpp's own dry run ('llama'), the fitted formula, or llama when installed.",
)
@moe_options
@click.option(
    "--plot",
    "plot_file",
    default=None,
    metavar="FILE.png",
    help="Write a PNG chart: each device's memory stacked against its budget, the host's against its RAM.",
)
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of tables.")
def plan(
    model: str,
    gpu: str | None,
    budget: int | None,
    gpus: int,
    rpcs: tuple[str, ...],
    n_ctx: int,
    kv_type: str,
    n_ubatch: int,
    no_flash_attn: bool,
    host_ram: int | None,
    host_profile: str,
    reserve: int | None,
    margin: float,
    n_gpu_layers: int | None,
    local: bool,
    verify: bool,
    remote: bool,
    compute: str,
    strategy: str,
    n_cpu_moe: int | None,
    split_mode: str,
    plot_file: str | None,
    json_: bool,
) -> None:
    """How many layers of MODEL fit the GPU budget, what stays on the host, how fast, and what to change.

    \b
    Examples:
      harness plan 405b-q4_k_m --ctx 8192                 # one A100 40GB, the default
      harness plan 70b-q4_k_m --gpu rtx-4090 --gpus 2
      harness plan smollm2-135m-q4_1 --rpc 127.0.0.1:50052=60MiB --verify
      harness plan smollm2-135m-q4_1 --budget 150MiB --verify    # on a loopback RPC server
      harness plan smollm2-135m-q4_1 --local --verify            # on this machine's GPUs
    """
    req = PlanRequest(
        model=model,
        gpu=gpu,
        budget_bytes=budget,
        gpus=gpus,
        rpc=tuple(rpcs),
        n_ctx=n_ctx,
        kv_type=kv_type,
        n_ubatch=n_ubatch,
        flash_attn=not no_flash_attn,
        host_ram_bytes=host_ram,
        host_profile=host_profile,
        reserve_bytes=reserve,
        margin_fraction=margin,
        n_gpu_layers=n_gpu_layers,
        verify=verify,
        local=local,
        remote=remote,
        compute=compute,
        strategy=strategy,
        n_cpu_moe=n_cpu_moe,
        split_mode=split_mode,
    )
    if plot_file:
        check_path(plot_file)
        # the chart names the model's quant: the header is read here once and handed to the planner
        resolved = resolve_model(model, remote)
        result = make_plan(req, resolved)
        plan_chart(result, resolved.header.file_type, plot_file)
        click.echo(f"chart written to {plot_file}", err=True)
    else:
        result = make_plan(req)
    if json_:
        echo_json(plan_json(result))
    else:
        click.echo(render_plan(result))


def plan_json(r: PlanResult) -> dict[str, Any]:
    """The JSON object of `harness plan --json`."""
    p = r.plan

    def dev(d) -> dict[str, Any]:
        out = {
            "name": d.name,
            "budget_bytes": d.budget_bytes,
            "weights_bytes": d.weights_bytes,
            "kv_bytes": d.kv_bytes,
            "compute_bytes": d.compute_bytes,
            "reserve_bytes": d.reserve_bytes,
            "margin_bytes": d.margin_bytes,
            "total_bytes": d.total_bytes,
            "headroom_bytes": d.headroom_bytes,
            "n_layers": d.n_layers,
            "holds_output": d.holds_output,
        }
        if d.name in r.actual:
            a = r.actual[d.name]
            out["actual"] = {
                "weights_bytes": a.weights_bytes,
                "kv_bytes": a.kv_bytes,
                "compute_bytes": a.compute_bytes,
                "total_bytes": a.total_bytes,
            }
            if a.gpu_used_before_bytes is not None or a.gpu_used_after_bytes is not None:
                out["actual"] |= {
                    "gpu_used_before_bytes": a.gpu_used_before_bytes,  # nvidia-smi, every process on the GPU
                    "gpu_used_after_bytes": a.gpu_used_after_bytes,
                    "gpu_used_delta_bytes": a.gpu_used_delta_bytes,
                    "measured_reserve_bytes": a.measured_reserve_bytes,
                }
        return out

    host = {
        "weights_bytes": p.host.weights_bytes,
        "kv_bytes": p.host.kv_bytes,
        "compute_bytes": p.host.compute_bytes,
        "output_bytes": p.host.output_bytes,
        "total_bytes": p.host.total_bytes,
        "ram_bytes": p.host.ram_bytes,
    }
    if "host" in r.actual:
        a = r.actual["host"]
        host["actual"] = {
            "weights_bytes": a.weights_bytes,
            "kv_bytes": a.kv_bytes,
            "compute_bytes": a.compute_bytes,
            "output_bytes": a.output_bytes,
            "total_bytes": a.total_bytes,
        }
    return {
        "model": r.model,
        "verdict": p.verdict,
        "n_gpu_layers": p.n_gpu_layers,
        "n_layers_total": p.n_layers_total,
        "fits_fully": p.fits_fully,
        "tensor_split": list(p.tensor_split),
        "split_mode": p.split_mode,
        "n_copies": p.n_copies,
        "packed_split": None
        if r.packed is None
        else {
            "n_gpu_layers": r.packed.n_gpu_layers,
            "n_cpu_moe": r.packed.n_cpu_moe,
            "tensor_split": list(r.packed.tensor_split),
            "predicted_tg_tokens_per_s": round(r.packed.predicted_tg_tokens_per_s, 3),
        },
        "n_cpu_moe": p.n_cpu_moe,
        "strategy": p.strategy,
        "other_strategy": None
        if r.other is None
        else {
            "strategy": r.other.strategy,
            "n_gpu_layers": r.other.n_gpu_layers,
            "n_cpu_moe": r.other.n_cpu_moe,
            "devices_fit": r.other.devices_fit,
            "predicted_tg_tokens_per_s": round(r.other.predicted_tg_tokens_per_s, 3),
            "predicted_pp_tokens_per_s": round(r.other.predicted_pp_tokens_per_s, 3),
        },
        "sources": {
            "weights": "header",
            "kv": "llama.cpp's rules, ported",
            "compute": p.compute_source,
            "reserve": "profile" if r.gpu_profile else "given",
        },
        "n_ctx": p.context.n_ctx,
        "kv_type": p.context.type_k,
        "flash_attn": p.context.flash_attn,
        "n_ubatch": p.context.n_ubatch,
        "devices": [dev(d) for d in p.devices],
        "host": host,
        "predicted_tg_tokens_per_s": round(p.predicted_tg_tokens_per_s, 3),
        "predicted_pp_tokens_per_s": round(p.predicted_pp_tokens_per_s, 3),
        "suggestions": list(r.suggestions),
        "notes": list(r.notes),
        "n_layers_offloaded_actual": r.n_layers_offloaded_actual,
    }
