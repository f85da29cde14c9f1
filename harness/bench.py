"""`harness bench` as a library call: plan for this machine, load that way, time it (harness.llama.bench_loop),
and report llama-bench-style records with the prediction beside each measurement; for a model that cannot
run here, the exact plan on the target and what it would take."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from harness import settings
from harness.errors import CannotRunHere, EngineError, ModelNotFoundError, UsageError, WontFitError
from harness.gguf import ggml_types
from harness.gguf.header import ModelHeader
from harness.gguf.roles import embedding_bytes_not_read, routed_expert_bytes, unread_expert_share
from harness.llama.bench_loop import TestResult, peak_rss_bytes, run_bench
from harness.llama.engine import EngineReport
from harness.llama.session import open_session
from harness.models.assets import atomic_output
from harness.models.hub import (
    DOWNLOADS,
    cached_name,
    matches_pattern,
    parse_uri,
    registry_uri,
    repo_folder,
    shard_files,
)
from harness.models.hub import download as hub_download
from harness.models.resolve import ResolvedModel, resolve_model
from harness.offload.hardware import host_ram_bytes, measure_host_read_bandwidth
from harness.offload.solver import Plan, solve
from harness.plan import context_of, make_plan, target_devices, target_host
from harness.run import check_runnable, predicted_memory_bytes
from harness.text import gib, render_plan, table


@dataclass(frozen=True)
class BenchResult:
    model: str
    path: str
    plan: Plan
    report: EngineReport
    n_threads: int
    tests: tuple[TestResult, ...]
    load_s: float
    peak_rss_bytes: int
    host_read_bytes_per_s: float  # measured (numpy sum over 256 MiB)
    bytes_per_token: int  # read per generated token where the weights live (embedding rows excluded)
    header: ModelHeader


def bytes_per_token(plan: Plan, header) -> int:
    """What generation reads per token: every weight once, except the token_embd rows not looked up (a
    model with tied embeddings reads the whole matrix anyway, as its output layer) and the experts a token
    does not use (a mixture of experts reads expert_used_count of expert_count)."""
    host = plan.host.weights_bytes if plan.host.resident_weights_bytes is None else plan.host.resident_weights_bytes
    weights = host + sum(d.weights_bytes for d in plan.devices)
    unused_experts = int(sum(routed_expert_bytes(header)) * unread_expert_share(header))
    return weights - embedding_bytes_not_read(header, not any(d.holds_output for d in plan.devices)) - unused_experts


def records(b: BenchResult) -> list[dict]:
    """llama-bench's record fields (json/jsonl output) plus the harness's own."""
    header = b.header
    out = []
    fa = b.plan.context.flash_attn
    bound = b.host_read_bytes_per_s / b.bytes_per_token if b.bytes_per_token and not b.plan.devices else None
    for t in b.tests:
        rec = {
            "model_filename": b.path,
            "model_type": f"{header.arch.name} {header.file_type}",
            "model_size": header.tensor_bytes,
            "model_n_params": header.n_params,
            "n_batch": b.plan.context.n_batch,
            "n_ubatch": b.plan.context.n_ubatch,
            "n_threads": b.n_threads,
            "type_k": b.plan.context.type_k,
            "type_v": b.plan.context.type_v,
            "n_gpu_layers": b.plan.n_gpu_layers,
            "n_cpu_moe": b.plan.n_cpu_moe,
            "flash_attn": fa,
            "n_prompt": t.n_prompt,
            "n_gen": t.n_gen,
            "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "avg_ns": int(statistics.fmean(t.samples_s) * 1e9),
            "stddev_ns": int((statistics.stdev(t.samples_s) if len(t.samples_s) > 1 else 0.0) * 1e9),
            "avg_ts": round(t.avg_ts, 3),
            "stddev_ts": round(t.stddev_ts, 3),
            "samples_ns": [int(x * 1e9) for x in t.samples_s],
            "samples_ts": [round(x, 3) for x in t.samples_ts],
            # the harness's own fields
            "harness_model": b.model,
            "n_layers_offloaded": b.report.n_layers_on_devices,
            "strategy": b.plan.strategy,
            "baseline_avg_ts": round(t.baseline_avg_ts, 3),
            "overhead_ratio": round(t.overhead_ratio, 4),
            "load_s": round(b.load_s, 4),
            "peak_rss_bytes": b.peak_rss_bytes,
            "predicted_tg_tokens_per_s": round(b.plan.predicted_tg_tokens_per_s, 3),
            "host_read_bytes_per_s": int(b.host_read_bytes_per_s),
            "bytes_per_token": b.bytes_per_token,
            "bound_tg_tokens_per_s": round(bound, 3) if bound else None,
            "bound_fraction": round(t.avg_ts / bound, 4) if bound and t.n_gen else None,
            "memory_predicted": predicted_memory_bytes(b.plan),
            "memory_actual": {x.name: x.total_bytes for x in b.report.buffers},
        }
        out.append(rec)
    return out


def bench_model(
    req,
    reps: int,
    n_prompt: int,
    n_gen: int,
    n_threads: int | None,
    force: bool,
    progress: Callable[[str], None],
    download: bool = False,
    download_progress: Callable[[int, int], None] | None = None,
) -> BenchResult:
    """Plan ``req`` (a harness.plan.PlanRequest) for this machine, load it that way, and bench it.

    A model with no file here (a registry entry known by its architecture only, an hf:// name not
    downloaded) is benched when it would run here and ``download`` fetches it from the Hub first;
    otherwise the error says what it would take (CannotRunHere) or which download makes it runnable
    (ModelNotFoundError)."""

    check_tests(reps, n_prompt, n_gen)
    resolved = resolve_model(req.model)
    if resolved.virtual:
        resolved = _download_to_bench(req, resolved, force, download, progress, download_progress)
    check_tests(reps, n_prompt, n_gen, context_of(req, resolved.header).n_ctx)
    progress("measuring this host's memory bandwidth")
    host_bw = measure_host_read_bandwidth()
    result = make_plan(replace(req, local=True, host_profile="this"), resolved)
    plan = result.plan
    try:
        check_runnable(plan, force)
    except WontFitError as exc:
        raise CannotRunHere(f"{exc}\n\n{what_it_would_take(req, resolved)}") from None
    path = resolved.header.paths[0]
    threads = n_threads or os.cpu_count() or 1
    moe = f", n_cpu_moe {plan.n_cpu_moe}" if plan.n_cpu_moe else ""
    progress(f"loading {path} with n_gpu_layers {plan.n_gpu_layers}{moe}")
    with open_session(path, plan, plan.context, result.rpc_endpoints, threads) as s:
        tests = run_bench(s, n_prompt, n_gen, reps, progress)
        report = s.report()
        load_s = s.lm.load_s
    return BenchResult(
        req.model,
        path,
        plan,
        report,
        threads,
        tuple(tests),
        load_s,
        peak_rss_bytes(),
        host_bw,
        bytes_per_token(plan, resolved.header),
        resolved.header,
    )


def check_tests(reps: int, n_prompt: int, n_gen: int, n_ctx: int | None = None) -> None:
    """Refuse a bench that cannot run, before anything is loaded: no test, no repetition, or a test longer
    than the context (llama.cpp pads n_ctx up to a multiple of 256, and each test starts from an empty one)."""
    if reps < 1:
        raise UsageError(f"--reps {reps}: each test runs at least once (after its warm-up)")
    if n_prompt < 0 or n_gen < 0:
        raise UsageError(f"--pp {n_prompt} --tg {n_gen}: token counts are 0 (skip the test) or more")
    if n_prompt == n_gen == 0:
        raise UsageError("--pp 0 --tg 0: nothing to bench; give --pp or --tg more than 0 tokens")
    longest = max(n_prompt, n_gen)
    if n_ctx is not None and longest > ggml_types.pad(n_ctx, 256):
        raise UsageError(f"a test of {longest} tokens does not fit --ctx {n_ctx}: raise --ctx, or lower --pp/--tg")


def _download_to_bench(
    req, resolved: ResolvedModel, force: bool, download: bool, progress, download_progress
) -> ResolvedModel:
    """A model with no file here (a registry entry known by its architecture, an hf:// header read over
    HTTP): when it would run here, the download that makes it runnable, fetched when ``download`` (the
    downloaded file is then what is benched); when it would not, what it would take."""
    try:
        local = make_plan(replace(req, local=True), resolved).plan
        check_runnable(local, force)
    except (WontFitError, EngineError):  # too big for this machine, or no engine here to run anything
        raise CannotRunHere(what_it_would_take(req, resolved)) from None
    here = (
        f"{local.verdict}, n_gpu_layers {local.n_gpu_layers} of {local.n_layers_total}, the host holding "
        f"{gib(local.host.needed_bytes)} of its {gib(local.host.ram_bytes)} RAM"
    )
    entry = resolved.entry
    if req.model.startswith("hf://"):
        n_bytes = resolved.header.file_bytes
        source = f"{req.model}: {n_bytes:,} bytes ({gib(n_bytes)})"
        hub_file = parse_uri(req.model)
        repo = hub_file.repo
        names = {cached_name(f.filename) for f in shard_files(hub_file)}

        def is_ours(name: str) -> bool:
            return name in names

        what = "is not downloaded"
    elif entry is not None and entry.hf is not None:
        n_bytes = resolved.header.tensor_bytes
        source = (
            f"hf://{entry.hf.repo}, the file matching {entry.hf.pattern!r}: {n_bytes:,} bytes of tensors "
            f"({gib(n_bytes)}) plus its header"
        )
        repo = entry.hf.repo

        def is_ours(name: str) -> bool:
            return matches_pattern(name, entry.hf.pattern)

        what = "is known by its architecture only and not downloaded"
    else:
        raise ModelNotFoundError(
            f"{req.model} would run here ({here}), but it is known by its architecture only and the registry "
            f"names no download for it: give its entry an hf source, or bench a GGUF file by its path"
        )
    if not download:
        raise ModelNotFoundError(
            f"{req.model} {what}, but it would run here ({here}): `harness bench {req.model} --download` "
            f"fetches it from {source}, then benches it"
        )
    _check_disk_for(req.model, repo, is_ours, n_bytes)
    progress(f"downloading {req.model} from {source}")
    uri = req.model if req.model.startswith("hf://") else registry_uri(entry)
    files = hub_download(uri, progress=download_progress)
    return resolve_model(os.fspath(files[0].path))


def _check_disk_for(name: str, repo: str, is_ours: Callable[[str], bool], n_bytes: int) -> None:
    """Refuse a download the cache's disk cannot hold; what is already there of it, whole or partial
    (``is_ours`` of its name in the cache), counts."""
    folder = repo_folder(DOWNLOADS, repo)
    have = sum(p.stat().st_size for p in folder.glob("*/*") if p.is_file() and is_ours(p.name.removesuffix(".part")))
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if n_bytes - have > free:
        raise WontFitError(
            f"{name} needs {gib(n_bytes - have)} more on the disk of {settings.cache_dir()}, which has "
            f"{gib(free)} free (HARNESS_CACHE_DIR moves the cache)"
        )


def what_it_would_take(req, resolved) -> str:
    """For a model that cannot run here: the exact plan on the target GPU, the alternatives, the download."""

    target_req = replace(req, local=False, host_ram_bytes=req.host_ram_bytes or 0)
    target = make_plan(target_req, resolved)
    host, cp = target_host(target_req), context_of(target_req, resolved.header)
    lines = [f"{req.model} cannot run on this machine. On the target:", "", render_plan(target), ""]
    rows = []
    for n in (1, 2, 4, 8, 16):
        devices = target_devices(replace(target_req, gpus=n))[0]
        alt = solve(
            resolved.header,
            devices,
            host,
            cp,
            margin_fraction=req.margin_fraction,
            n_cpu_moe=req.n_cpu_moe,
            strategy=req.strategy,
            split_mode=req.split_mode,
        )
        rows.append(
            [
                f"{n} x {target.gpu_profile or 'gpu'}",
                f"{alt.n_gpu_layers}/{alt.n_layers_total}",
                alt.verdict,
                gib(alt.host.needed_bytes),
                f"{alt.predicted_tg_tokens_per_s:.2f}",
            ]
        )
    lines.append(
        table(
            ["GPUs", "layers on GPUs", "verdict", "host RAM needed", "predicted tg tokens/s"],
            rows,
            right=[False, True, False, True, True],
        )
    )
    lines += [
        "",
        f"download: {gib(resolved.header.tensor_bytes)} of tensors (plus a few MiB of headers); this machine has "
        f"{gib(host_ram_bytes())} of RAM.",
    ]
    return "\n".join(lines)


def write_results(out_dir: str, recs: list[dict], md: str) -> None:
    """results.json, results.jsonl (one record a line) and results.md (``md``, the CLI's table) in ``out_dir``."""
    d = Path(out_dir)
    try:
        with atomic_output(d / "results.json") as f:
            f.write(json.dumps(recs, indent=2).encode())
        with atomic_output(d / "results.jsonl") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs).encode())
        with atomic_output(d / "results.md") as f:
            f.write((md + "\n").encode())
    except OSError as exc:  # the disk filled, the folder went away while the bench ran
        raise UsageError(f"--out {out_dir}: cannot write the results: {exc.strerror or exc}") from None
