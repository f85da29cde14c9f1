"""`harness run` as a library call: plan for the devices here, load that way, answer one prompt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from harness.errors import WontFitError
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
    resolved = resolve_model(req.model)
    if resolved.virtual:
        raise WontFitError(
            f"{req.model} is known by its architecture only: there is no file to run here "
            f"(`harness plan {req.model}` shows what it would take)"
        )
    result = make_plan(replace(req, local=True), resolved)
    plan = result.plan
    check_runnable(plan, force)
    path = resolved.header.paths[0]
    with open_session(path, plan, plan.context, result.rpc_endpoints, n_threads) as s:
        if chat:
            bos = s.piece(s.api.llama_vocab_bos(s.vocab)).decode("utf-8", "replace")
            eos = s.piece(s.api.llama_vocab_eos(s.vocab)).decode("utf-8", "replace")
            text = render(resolved.header, prompt, system, bos, eos)
            tokens = s.tokenize(text, add_special=not (bos and text.startswith(bos)))
        else:
            tokens = s.tokenize(prompt)
        gen = s.generate(tokens, max_tokens, sampling, on_piece)
        report = s.report()
        load_s = s.lm.load_s
    return RunResult(req.model, gen, plan, report, load_s)
