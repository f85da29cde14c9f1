"""The command line: thin wrappers over library functions. Errors are mapped to messages here only."""

from __future__ import annotations

import json
import logging
import sys
import traceback

import click

from harness import settings
from harness.errors import HarnessError
from harness.cli.inspect import render, summary
from harness.models.resolve import resolve_model
from harness.gguf import ggml_types
from harness.units import gib, parse_size, table
from harness.quant.sizes import size_rows
from harness.units import parse_size
from harness.plan import PlanRequest, make_plan, plan_json, render_plan
from harness.plan import PlanRequest
from harness.llama.session import Sampling
from harness.run import run_prompt
from harness.units import human_bytes
from harness.bench import CannotRunHere, bench_model, markdown, records, write_results
from pathlib import Path
from harness.compare import compare as run_compare, plot
from harness.units import human_bytes, table
from dataclasses import asdict
from harness.offload.hardware import host_available_bytes, host_ram_bytes, load_profiles, measured_host_profile
from harness.llama.rpc import serve
from harness.models.registry import load_registry
from harness.models.resolve import architecture_header
from harness.models.hub import header_cached
from harness.models.assets import install
from harness.models.hub import download as hub_download
from harness.models.hub import download as hub_download, registry_uri


def _echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2))


class _Progress:
    """A byte progress line on stderr, redrawn in place."""
    def __init__(self, label: str) -> None:
        self.label = label
        self.last = -1
        self.tty = sys.stderr.isatty()
        self.step = 1 if self.tty else 25  # a log file gets a line per quarter, a terminal a live line

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if pct // self.step != self.last:
            self.last = pct // self.step
            line = f"{self.label}: {pct:3d}% of {total / (1 << 20):.1f} MiB"
            click.echo(("\r" + line) if self.tty else line, nl=pct == 100 or not self.tty, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="harness")
def cli() -> None:
    """Exactly whether and how a GGUF model runs on your hardware."""


@cli.command()
@click.argument("model")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of tables.")
@click.option("--tensors", is_flag=True, help="List every tensor.")
@click.option("--remote", is_flag=True, help="For a registry entry with a Hub source: read its real header remotely.")
def inspect(model: str, json_: bool, tensors: bool, remote: bool) -> None:
    """Header facts of MODEL: exact bytes per tensor, layer and type.

    MODEL is a registry name (see `harness models`), a path, or any shard of a split model.
    Only the header is read, so this is instant even for a 243 GB model.

    \b
    Examples:
      harness inspect gemma3-270m-q4_k_m
      harness inspect ./Llama-3.1-405B-Q4_K_M-00001-of-00005.gguf --json
    """
    header = resolve_model(model, remote).header
    if json_:
        _echo_json(summary(header, with_tensors=tensors))
    else:
        click.echo(render(header, with_tensors=tensors))


@cli.command()
@click.argument("model")
@click.option("--quant", "quants", default="", metavar="Q4_K_M,Q2_K,...|all",
              help="Quant levels to size (default: a common set from Q8_0 to IQ1_S).")
@click.option("--imatrix/--no-imatrix", default=None,
              help="Assume an importance matrix (default: only where llama.cpp requires one).")
@click.option("--budget", metavar="SIZE", help="Mark which quants' tensors fit, e.g. 40GiB, 80GB.")
@click.option("--remote", is_flag=True, help="For a registry entry with a Hub source: read its real header remotely.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of a table.")
def sizes(model: str, quants: str, imatrix: bool | None, budget: str | None, remote: bool, json_: bool) -> None:
    """Exact size of MODEL at other quant levels, by llama.cpp's own per-tensor rules.

    Works from any header: an F16/BF16 original, an already quantized file, or a registry entry
    known by its architecture only (no download). Each tensor gets the type llama.cpp's quantizer
    would give it, including the fallbacks for rows that do not hold whole blocks.

    \b
    Examples:
      harness sizes 405b-q4_k_m --quant Q4_K_M,Q2_K,IQ2_XXS,IQ1_S --budget 40GiB
      harness sizes ./model-f16.gguf --quant all --json
    """
    resolved = resolve_model(model, remote)
    header = resolved.header
    names = list(ggml_types.COMMON_QUANTS) if not quants else (
        list(ggml_types.ALL_QUANTS) if quants.strip().lower() == "all" else [q.strip().upper() for q in quants.split(",")])
    current = header.file_type
    try:
        budget_bytes = parse_size(budget) if budget else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from None
    rows = size_rows(header, names, imatrix, current, budget_bytes)
    warnings = list(header.warnings)
    if resolved.claimed_quant and current and resolved.claimed_quant != current:
        warnings.append(f"{model} claims {resolved.claimed_quant} but its header says {current}")
    if current in names:
        actual = next(r for r in rows if r.quant == current)
        if actual.prediction is not None and not resolved.virtual:
            differ = [p.name for p, t in zip(actual.prediction.tensors, header.tensors) if p.ggml_type != t.ggml_type]
            if differ:
                warnings.append(f"{len(differ)} tensors are not the types llama.cpp's {current} rules give "
                                f"(e.g. {differ[0]}): made by another llama.cpp version or a custom recipe")
    if json_:
        _echo_json({"model": model, "current_quant": current, "budget_bytes": budget_bytes, "quants": [
            {"quant": r.quant, "tensor_bytes": r.prediction.tensor_bytes if r.prediction else None,
             "bits_per_weight": round(r.prediction.bits_per_weight, 4) if r.prediction else None,
             "types": r.prediction.type_counts if r.prediction else None,
             "n_fallback": r.prediction.n_fallback if r.prediction else None,
             "imatrix": r.prediction.has_imatrix if r.prediction else None,
             "current": r.is_current, "fits_budget": r.fits_budget, "refused": r.refused} for r in rows],
            "warnings": warnings})
        return
    out = []
    for r in rows:
        mark = r.quant + (" *" if r.is_current else "")
        if r.prediction is None:
            out.append([mark, "-", "-", "-", f"refused: {r.refused}", "-"] + (["-"] if budget else []))
            continue
        p = r.prediction
        types = " ".join(f"{k}:{v}" for k, v in p.type_counts.items())
        row = [mark + (" (imatrix)" if p.has_imatrix else ""), f"{p.tensor_bytes:,}", gib(p.tensor_bytes),
               f"{p.bits_per_weight:.3f}", types, p.n_fallback]
        out.append(row + (["yes" if r.fits_budget else "no"] if budget else []))
    headers = ["quant", "tensor bytes", "size", "bits/weight", "tensors per type", "fallbacks"]
    click.echo(f"{model}: {header.arch.name}, {header.n_params:,} parameters, {len(header.tensors)} tensors"
               + (" (built from its architecture)" if resolved.virtual else ""))
    click.echo(table(headers + ([f"fits {budget}"] if budget else []), out,
                     right=[False, True, True, True, False, True] + ([False] if budget else [])))
    click.echo("* the model's current quant; tensor bytes exclude the GGUF header (a few MiB)")
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def _size_option(value: str | None, name: str) -> int | None:
    try:
        return parse_size(value) if value else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@cli.command()
@click.argument("model")
@click.option("--gpu", "gpu", default=None, metavar="PROFILE", help="GPU profile (default a100-40gb; see hardware.toml).")
@click.option("--budget", default=None, metavar="SIZE", help="A bare memory budget per GPU instead of a profile.")
@click.option("--gpus", default=1, show_default=True, help="How many GPUs of that kind.")
@click.option("--rpc", "rpcs", multiple=True, metavar="HOST:PORT=SIZE", help="A llama.cpp RPC host as a device.")
@click.option("--ctx", "n_ctx", default=4096, show_default=True, help="Context length (tokens).")
@click.option("--kv-type", default="f16", show_default=True, type=click.Choice(["f16", "q8_0", "q4_0"]))
@click.option("--ubatch", "n_ubatch", default=512, show_default=True, help="Micro-batch size.")
@click.option("--no-flash-attn", is_flag=True, help="Plan without flash attention (larger compute buffers).")
@click.option("--host-ram", default=None, metavar="SIZE", help="Host RAM (default: this machine's).")
@click.option("--host", "host_profile", default="ddr5-2ch", show_default=True,
              help="Host memory profile for speed; 'this' measures this machine now.")
@click.option("--reserve", default=None, metavar="SIZE", help="Runtime reserve per GPU (default: the profile's).")
@click.option("--margin", default=0.02, show_default=True, help="Safety margin, a fraction of each budget.")
@click.option("--n-gpu-layers", "n_gpu_layers", type=int, default=None, help="Evaluate this value instead of solving.")
@click.option("--verify", is_flag=True, help="Load it with llama.cpp on the planned RPC devices and compare.")
@click.option("--remote", is_flag=True, help="For a registry entry with a Hub source: read its real header remotely.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of tables.")
def plan(model: str, gpu: str | None, budget: str | None, gpus: int, rpcs: tuple[str, ...], n_ctx: int, kv_type: str,
         n_ubatch: int, no_flash_attn: bool, host_ram: str | None, host_profile: str, reserve: str | None,
         margin: float, n_gpu_layers: int | None, verify: bool, remote: bool, json_: bool) -> None:
    """How many layers of MODEL fit the GPU budget, what stays on the host, how fast, and what to change.

    \b
    Examples:
      harness plan 405b-q4_k_m --ctx 8192                 # one A100 40GB, the default
      harness plan 70b-q4_k_m --gpu rtx-4090 --gpus 2
      harness plan smollm2-135m-q4_1 --rpc 127.0.0.1:50052=60MiB --verify
    """
    req = PlanRequest(model=model, gpu=gpu, budget_bytes=_size_option(budget, "--budget"), gpus=gpus,
                      rpc=tuple(rpcs), n_ctx=n_ctx, kv_type=kv_type, n_ubatch=n_ubatch, flash_attn=not no_flash_attn,
                      host_ram_bytes=_size_option(host_ram, "--host-ram"), host_profile=host_profile,
                      reserve_bytes=_size_option(reserve, "--reserve"), margin_fraction=margin,
                      n_gpu_layers=n_gpu_layers, verify=verify, remote=remote)
    result = make_plan(req)
    if json_:
        _echo_json(plan_json(result))
    else:
        click.echo(render_plan(result))


def _plan_options(f):
    """The placement options shared by run and bench (plan has its own, richer set)."""
    f = click.option("--gpu", default=None, metavar="PROFILE", help="Plan for this GPU profile's speed.")(f)
    f = click.option("--budget", default=None, metavar="SIZE", help="Memory budget per local GPU.")(f)
    f = click.option("--rpc", "rpcs", multiple=True, metavar="HOST:PORT=SIZE", help="A llama.cpp RPC device.")(f)
    f = click.option("--n-gpu-layers", "n_gpu_layers", type=int, default=None, help="Force this value.")(f)
    f = click.option("--kv-type", default="f16", show_default=True, type=click.Choice(["f16", "q8_0", "q4_0"]))(f)
    f = click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")(f)
    f = click.option("--force", is_flag=True, help="Run even when the plan says it does not fit.")(f)
    return f


def _memory_json(plan, report) -> dict:
    predicted = {d.name: {"weights_bytes": d.weights_bytes, "kv_bytes": d.kv_bytes, "compute_bytes": d.compute_bytes,
                          "total_bytes": d.weights_bytes + d.kv_bytes + d.compute_bytes} for d in plan.devices}
    predicted["host"] = {"weights_bytes": plan.host.weights_bytes, "kv_bytes": plan.host.kv_bytes,
                         "compute_bytes": plan.host.compute_bytes, "total_bytes": plan.host.total_bytes}
    actual = {b.name: {"weights_bytes": b.model_bytes, "kv_bytes": b.kv_bytes, "compute_bytes": b.compute_bytes,
                       "output_bytes": b.output_bytes, "total_bytes": b.total_bytes} for b in report.buffers}
    return {"predicted": predicted, "actual": actual}


@cli.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--max-tokens", default=128, show_default=True)
@click.option("--temperature", default=0.0, show_default=True, help="0 is greedy.")
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--ctx", "n_ctx", default=4096, show_default=True)
@click.option("--chat", is_flag=True, help="Apply the model's chat template (rendered in a sandbox).")
@click.option("--system", default=None, help="A system message (with --chat).")
@_plan_options
@click.option("--json", "json_", is_flag=True, help="Print one JSON object at the end instead of streaming.")
def run(model: str, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int, n_ctx: int, chat: bool,
        system: str | None, gpu: str | None, budget: str | None, rpcs: tuple[str, ...], n_gpu_layers: int | None,
        kv_type: str, threads: int | None, force: bool, json_: bool) -> None:
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
    req = PlanRequest(model=model, gpu=gpu, budget_bytes=_size_option(budget, "--budget"), rpc=rpcs, n_ctx=n_ctx,
                      kv_type=kv_type, n_gpu_layers=n_gpu_layers)

    def stream(piece: str) -> None:
        click.echo(piece, nl=False)

    result = run_prompt(req, prompt, max_tokens, Sampling(temperature, top_p, seed), chat, system, force, threads,
                        None if json_ else stream)
    g = result.generation
    if json_:
        _echo_json({"text": g.text, "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                    "n_gpu_layers": result.plan.n_gpu_layers, "n_layers_offloaded": result.n_layers_offloaded,
                    "stopped": g.stopped,
                    "timings": {"load_s": round(result.load_s, 4), "prompt_s": round(g.prompt_s, 4),
                                "generation_s": round(g.generation_s, 4),
                                "pp_tokens_per_s": round(g.pp_tokens_per_s, 2),
                                "tg_tokens_per_s": round(g.tg_tokens_per_s, 2)},
                    "memory": _memory_json(result.plan, result.report)})
        return
    click.echo()

    h = result.plan.host
    predicted = [(d.name, d.weights_bytes + d.kv_bytes + d.compute_bytes) for d in result.plan.devices]
    predicted.append(("host", h.total_bytes))
    mem = "; ".join(f"{name} {human_bytes(n)} predicted / {human_bytes(result.report.actual_bytes(name))} actual"
                    for name, n in predicted)
    click.echo(f"[{g.prompt_tokens} prompt tokens at {g.pp_tokens_per_s:.1f}/s, {g.completion_tokens} generated at "
               f"{g.tg_tokens_per_s:.1f}/s, stopped: {g.stopped}; llama.cpp offloaded "
               f"{result.n_layers_offloaded}/{result.plan.n_layers_total} layers (planned {result.plan.n_gpu_layers})"
               + ("" if result.plan.devices else "; no offload device here: everything on the CPU")
               + f"; memory: {mem}]", err=True)


@cli.command()
@click.argument("model", default="gemma3-270m-q4_k_m")
@click.option("--reps", default=5, show_default=True, help="Repetitions of each test (after a warm-up).")
@click.option("--pp", "n_prompt", default=512, show_default=True, help="Prompt tokens (0: skip).")
@click.option("--tg", "n_gen", default=128, show_default=True, help="Generated tokens (0: skip).")
@click.option("--ctx", "n_ctx", default=None, type=int, help="Context (default: enough for pp + tg).")
@_plan_options
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Write results.json/.md here.")
@click.option("--json", "json_", is_flag=True, help="Print llama-bench-style JSON records instead of a table.")
def bench(model: str, reps: int, n_prompt: int, n_gen: int, n_ctx: int | None, gpu: str | None, budget: str | None,
          rpcs: tuple[str, ...], n_gpu_layers: int | None, kv_type: str, threads: int | None, force: bool,
          out_dir: str | None, json_: bool) -> None:
    """Benchmark MODEL the way llama-bench does, with the planned split.

    Prints a markdown table (progress on stderr): pp and tg tokens/s (mean ± stddev over --reps after
    a warm-up), against a bare llama-cpp-python decode loop measured in the same run; load time, peak
    RSS, memory per device predicted vs actual, and generation speed against this host's measured
    bandwidth bound. A model that cannot run here (a registry entry known by architecture only, or a
    plan that does not fit) prints what it would take and exits with status 10.
    """
    req = PlanRequest(model=model, gpu=gpu, budget_bytes=_size_option(budget, "--budget"), rpc=rpcs,
                      n_ctx=n_ctx or max(512, n_prompt + n_gen), kv_type=kv_type, n_gpu_layers=n_gpu_layers)
    try:
        result = bench_model(req, reps, n_prompt, n_gen, threads, force, lambda m: click.echo(m, err=True))
    except CannotRunHere as exc:
        click.echo(str(exc))
        sys.exit(CannotRunHere.exit_code)
    recs = records(result)
    md = markdown(result, recs)
    if out_dir:
        write_results(out_dir, recs, md)
        click.echo(f"results written to {out_dir}/results.{{json,jsonl,md}}", err=True)
    click.echo(json.dumps(recs, indent=2) if json_ else md)


@cli.command()
@click.argument("model")
@click.option("--quants", default=",".join(("Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS")), show_default=True)
@click.option("--gpu", default=None, metavar="PROFILE", help="Target GPU profile (default a100-40gb).")
@click.option("--budget", default=None, metavar="SIZE", help="A bare budget instead of a profile.")
@click.option("--ctx", "n_ctx", default=4096, show_default=True, help="Context length for the plans.")
@click.option("--text", "text_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Text for perplexity/KLD (default: CPython's pydoc topics, real prose on every machine).")
@click.option("--chunks", default=8, show_default=True, help="512-token chunks of the text to score.")
@click.option("--reps", default=3, show_default=True, help="Bench repetitions per variant.")
@click.option("--remote", is_flag=True, help="For a registry entry with a Hub source: read its real header remotely.")
@click.option("--plot", "plot_file", default=None, type=click.Path(dir_okay=False), help="Write a PNG chart.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of a table.")
def compare(model: str, quants: str, gpu: str | None, budget: str | None, n_ctx: int, text_file: str | None,
            chunks: int, reps: int, remote: bool, plot_file: str | None, json_: bool) -> None:
    """Quant levels of MODEL side by side under one budget: size, fit, speed, quality.

    A model file here: missing variants are built with llama.cpp's quantizer (cached), benchmarked
    here, and scored against the file (perplexity, KL divergence, top-1 agreement). A registry entry
    known by its architecture: exact sizes, fit and predicted speed on one GPU and how many GPUs hold
    it; nothing unmeasured is made up.

    \b
    Examples:
      harness compare smollm2-135m-q4_1 --quants Q8_0,Q4_K_M,Q2_K --plot smollm2.png
      harness compare 405b-q4_k_m --quants Q4_K_M,Q3_K_M,Q2_K,IQ2_XXS,IQ1_S --ctx 8192
    """


    req = PlanRequest(model=model, gpu=gpu, budget_bytes=_size_option(budget, "--budget"), n_ctx=n_ctx, remote=remote)
    text = Path(text_file).read_text(encoding="utf-8", errors="replace") if text_file else None
    c = run_compare(req, [q.strip().upper() for q in quants.split(",") if q.strip()], text, reps, chunks,
                    lambda m: click.echo(m, err=True))
    if plot_file:
        plot(c, Path(plot_file))
        click.echo(f"chart written to {plot_file}", err=True)
    if json_:
        _echo_json(c.to_json())
        return

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    rows = [[r.quant, human_bytes(r.tensor_bytes), f"{r.bits_per_weight:.2f}", r.n_fallback,
             f"{r.n_gpu_layers}/{r.n_layers_total}", "yes" if r.fits_fully else "no",
             "—" if r.gpus_to_fit is None else f"{r.gpus_to_fit} ({r.predicted_tg_at_fit_tokens_per_s:.1f} t/s)",
             f"{r.predicted_tg_tokens_per_s:.2f}", f(r.pp_tokens_per_s, ".1f"), f(r.tg_tokens_per_s, ".1f"),
             f(r.perplexity, ".3f"), f(r.kld, ".4f"), f(r.top1_agreement, ".3f")] for r in c.rows]
    click.echo(table(["quant", "size", "bpw", "fallbacks", "layers on 1 GPU", "fits", "GPUs to fit (tg)", "pred. tg t/s",
                      "pp t/s here", "tg t/s here", "PPL", "KLD", "top-1"], rows,
                     right=[False] + [True] * 12))
    for r in c.rows:
        if r.note and not r.note.startswith(("reference", "built", "predicted")):
            click.echo(f"{r.quant}: {r.note}")
    for n in c.notes:
        click.echo(f"note: {n}")


@cli.command()
@click.option("--measure", is_flag=True, help="Also measure this host's memory bandwidth and compute.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of tables.")
def hardware(measure: bool, json_: bool) -> None:
    """The hardware profiles plans are made for (hardware.toml), and this host's RAM."""


    prof = load_profiles()
    hosts = list(prof.hosts.values()) + ([measured_host_profile()] if measure else [])
    if json_:
        _echo_json({"gpus": [asdict(g) for g in prof.gpus.values()], "hosts": [asdict(h) for h in hosts],
                    "this_host": {"ram_bytes": host_ram_bytes(), "available_bytes": host_available_bytes()}})
        return
    click.echo(table(["gpu", "name", "memory", "bandwidth GB/s", "efficiency", "fp16 TFLOPS", "link GB/s", "reserve"],
                     [[g.key, g.name, human_bytes(g.memory_bytes), g.bandwidth_gbps, g.efficiency, g.fp16_tflops,
                       g.link_gbps, human_bytes(g.reserve_bytes)] for g in prof.gpus.values()],
                     right=[False, False, True, True, True, True, True, True]))
    click.echo()
    click.echo(table(["host", "name", "bandwidth GB/s", "efficiency", "effective GB/s"],
                     [[h.key, h.name, f"{h.bandwidth_gbps:.1f}", h.efficiency,
                       f"{h.bandwidth_gbps * h.efficiency:.1f}"] for h in hosts],
                     right=[False, False, True, True, True]))
    click.echo(f"\nthis host: {human_bytes(host_ram_bytes())} RAM, {human_bytes(host_available_bytes())} available")


@cli.command("rpc-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=50052, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's, half the cores).")
def rpc_server(host: str, port: int, threads: int | None) -> None:
    """Serve this host's CPU backend over llama.cpp's RPC protocol (lend its memory to a planner).

    Stops promptly on Ctrl-C or SIGTERM. Anyone who can reach the port can use it: keep it on
    loopback or a trusted network.
    """
    serve(host, port, threads)


@cli.command()
@click.option("--json", "json_", is_flag=True, help="Print a JSON list instead of a table.")
def models(json_: bool) -> None:
    """List the registry (models.toml): name, quant, size and local state."""


    reg = load_registry()

    def size_of(e) -> int | None:
        if e.size_bytes is None and e.architecture:  # predicted tensor bytes at the entry's quant
            return architecture_header(reg, e).tensor_bytes
        return e.size_bytes

    rows = [{"name": e.name, "quant": e.quant, "size_bytes": size_of(e),
             "source": "pypi" if e.pypi else ("hf" if e.hf else "none"),
             "state": _state_of(e),
             "path": str(e.local_path()), "default": e.name == reg.default, "description": e.description}
            for e in reg.entries.values()]
    if json_:
        _echo_json(rows)
        return
    click.echo(table(["name", "quant", "size", "source", "state", "description"],
                     [[r["name"] + (" (default)" if r["default"] else ""), r["quant"] or "",
                       human_bytes(r["size_bytes"]) if r["size_bytes"] else "?", r["source"], r["state"],
                       r["description"]] for r in rows]))


def _state_of(entry) -> str:
    if entry.is_installed():
        return "downloaded"
    if header_cached(entry):
        return "header cached"
    return "architecture only" if entry.file is None else "absent"


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every registry entry that has a download source.")
def download(names: tuple[str, ...], all_: bool) -> None:
    """Fetch registry models into the cache, verifying size and sha256.

    Files are written under a temporary name and renamed only once verified.
    """
    hub_uris = [n for n in names if n.startswith("hf://")]
    if hub_uris:

        for uri in hub_uris:
            for d in hub_download(uri, progress=_Progress(uri)):
                note = f" (resumed from byte {d.resumed_from})" if d.resumed_from else ""
                click.echo(str(d.path))
                click.echo(f"{d.path.name}: {d.size_bytes} bytes, sha256 {d.sha256}{note}", err=True)
        names = tuple(n for n in names if not n.startswith("hf://"))
        if not names and not all_:
            return
    reg = load_registry()
    entries = [e for e in reg.entries.values() if e.pypi] if all_ else [reg.get(n) for n in names]
    hub_entries = [e for e in entries if not e.pypi and e.hf]
    if hub_entries:

        for e in hub_entries:
            for d in hub_download(registry_uri(e), progress=_Progress(e.name)):
                click.echo(str(d.path))
        entries = [e for e in entries if e not in hub_entries]
        if not entries:
            return
    if not entries:
        raise click.UsageError("name at least one model, or pass --all")
    for e in entries:
        if e.is_installed():
            click.echo(f"{e.name}: already at {e.local_path()}", err=True)
        else:
            install(e, progress=_Progress(e.name))
        click.echo(str(e.local_path()))


def main() -> None:
    """Entry point: map HarnessError to one line on stderr and its exit code; no tracebacks."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("harness").setLevel(logging.INFO)  # our progress; libraries' chatter stays quiet
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HarnessError as exc:
        if settings.debug():
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug of ours: say so in one line unless debugging
        if settings.debug():
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (HARNESS_DEBUG=1 shows the traceback)",
                   err=True)
        sys.exit(70)
