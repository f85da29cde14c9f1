"""`harness run` as a library call: plan for the devices here, load that way, answer one prompt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from harness.errors import UsageError, WontFitError
from harness.llama.chat import render
from harness.llama.engine import EngineReport
from harness.llama.session import Generation, Sampling, open_session
from harness.models.resolve import resolve_model
from harness.offload.solver import Plan
from harness.plan import PlanRequest, make_plan


@dataclass(frozen=True)
class RunResult:
    model: str
    generation: Generation
    plan: Plan
    report: EngineReport
    load_s: float

    @property
    def n_layers_offloaded(self) -> int:
        return self.report.n_layers_on_devices


def predicted_memory_bytes(plan: Plan) -> dict[str, int]:
    """What llama.cpp should report for each planned device (EngineReport.actual_bytes), by name: the
    weights, KV cache and compute buffer of each device (a runtime reserve is no buffer llama.cpp
    reports), and for "host" the plan's host total, output buffer included: llama.cpp allocates the
    logits in a host buffer and reports it ("CPU output buffer size"). run and bench print this one figure."""
    out = {d.name: d.weights_bytes + d.kv_bytes + d.compute_bytes for d in plan.devices}
    out["host"] = plan.host.total_bytes
    return out


def check_runnable(plan: Plan, force: bool) -> None:
    if force:
        return
    if not plan.devices_fit:
        raise WontFitError(
            f"n_gpu_layers {plan.n_gpu_layers} does not fit the devices' budgets "
            "(see `harness plan`); pass --force to try anyway"
        )
    if not plan.host.fits:
        raise WontFitError(
            f"cannot run here: the host needs {plan.host.total_bytes / 2**30:.1f} GiB for its "
            f"share but has {plan.host.ram_bytes / 2**30:.1f} GiB (see `harness plan`); "
            "pass --force to try anyway"
        )


def check_prompt(prompt: str, system: str | None = None, chat: bool = False) -> None:
    """Refuse, before anything loads, a prompt llama.cpp cannot take: empty (it would sample from no logits
    and abort) or not text (bytes that were not UTF-8 where it came from, kept as lone surrogates)."""
    if not prompt and not chat:
        raise UsageError('the prompt is empty: give some text (PROMPT "-" reads it from standard input)')
    for what, text in (("the prompt", prompt), ("--system", system)):
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(f"{what} is not UTF-8 text (a byte that is not, at character {exc.start})") from None


def run_prompt(
    req: PlanRequest,
    prompt: str,
    max_tokens: int,
    sampling: Sampling,
    chat: bool = False,
    system: str | None = None,
    force: bool = False,
    n_threads: int | None = None,
    on_piece: Callable[[str], None] | None = None,
) -> RunResult:
    """Plan ``req`` for the devices really here, load it that way, answer ``prompt``."""
    check_prompt(prompt, system, chat)
    resolved = resolve_model(req.model)
    if resolved.virtual:
        raise WontFitError(_no_file_here(req.model, resolved))
    result = make_plan(replace(req, local=True), resolved)
    plan = result.plan
    check_runnable(plan, force)
    path = resolved.header.paths[0]
    with open_session(path, plan, plan.context, result.rpc_endpoints, n_threads) as s:
        if chat:
            bos, eos = (s.api.llama_vocab_bos(s.vocab), s.api.llama_vocab_eos(s.vocab))
            # a vocabulary without the token has -1, which llama_token_to_piece aborts on (std::out_of_range)
            bos = s.piece(bos).decode("utf-8", "replace") if bos >= 0 else ""
            eos = s.piece(eos).decode("utf-8", "replace") if eos >= 0 else ""
            text = render(resolved.header, prompt, system, bos, eos)
            tokens = s.tokenize(text, add_special=not (bos and text.startswith(bos)), max_tokens=s.n_ctx)
        else:
            tokens = s.tokenize(prompt, max_tokens=s.n_ctx)
        gen = s.generate(tokens, max_tokens, sampling, on_piece)
        report = s.report()
        load_s = s.lm.load_s
    return RunResult(req.model, gen, plan, report, load_s)


def _no_file_here(model: str, resolved) -> str:
    """What to do when a MODEL has a header but no file here: the download that makes it runnable."""
    if resolved.source == "hub":
        return (
            f"{model} is not downloaded: its header was read from the Hub; `harness download {model}` "
            f"fetches it ({resolved.header.file_bytes:,} bytes)"
        )
    entry = resolved.entry
    if entry is not None and entry.hf is not None:
        return (
            f"{model} is known by its architecture only: `harness download {model}` fetches "
            f"hf://{entry.hf.repo} ({entry.hf.pattern}), then it runs by name; `harness plan {model}` shows the plan"
        )
    return (
        f"{model} is known by its architecture only: there is no file to run here "
        f"(`harness plan {model}` shows what it would take)"
    )
