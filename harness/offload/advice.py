"""What to change when a model does not fit fully: the smallest changes that would make it fit."""

from __future__ import annotations

from dataclasses import replace

from harness.errors import HarnessError
from harness.gguf import ggml_types
from harness.gguf.header import ModelHeader
from harness.offload.placement import ContextParams
from harness.offload.solver import MAX_GPUS, Device, Host, Plan, gpus_to_fit, solve
from harness.quant.sizes import at_quant
from harness.text import gib, human_bytes


def every_layer_plan(
    header: ModelHeader, devices: list[Device], host: Host, cp: ContextParams, margin_fraction: float
) -> Plan:
    """The plan with every layer on the devices, whether or not they hold it."""
    return solve(header, devices, host, cp, n_gpu_layers=header.arch.n_layer + 1, margin_fraction=margin_fraction)


def shortfall_bytes(full: Plan) -> int:
    """How many bytes the devices lack to hold ``full`` (0 when they can), counted device by device."""
    return sum(max(0, -d.headroom_bytes) for d in full.devices)


def suggest(
    header: ModelHeader,
    plan: Plan,
    devices: list[Device],
    host: Host,
    cp: ContextParams,
    margin_fraction: float,
    gpu_profile: str | None = None,
    alternatives: dict[str, ModelHeader] | None = None,
) -> list[str]:
    """Changes that make everything fit on the devices, smallest first in spirit: context, KV type,
    more GPUs of the same kind, a smaller quant of the same model, a smaller model."""
    if plan.fits_fully or not devices:
        return []
    out: list[str] = []

    def fits(h: ModelHeader, devs: list[Device], c: ContextParams) -> Plan | None:
        """The plan with every layer on ``devs`` when they hold it (device totals grow with the layers, so
        one evaluation answers what a whole solve would)."""
        p = every_layer_plan(h, devs, host, c, margin_fraction)
        return p if p.devices_fit else None

    short = shortfall_bytes(every_layer_plan(header, devices, host, cp, margin_fraction))
    out.append(f"all {plan.n_layers_total} layers need {gib(short)} more than the devices have at --ctx {cp.n_ctx}")
    ctx = cp.n_ctx // 2
    while ctx >= 512:
        if fits(header, devices, replace(cp, n_ctx=ctx)):
            out.append(f"--ctx {ctx}: every layer fits")
            break
        ctx //= 2
    for kv in ("q8_0", "q4_0"):
        if (cp.type_k, cp.type_v) != (kv, kv):
            p = fits(header, devices, replace(cp, type_k=kv, type_v=kv, flash_attn=True))
            if p:
                out.append(f"--kv-type {kv}: every layer fits (flash attention on)")
                break
    if gpu_profile:
        found = gpus_to_fit(header, devices[0], host, cp, margin_fraction, start=len(devices) + 1)
        if found:
            n, p = found
            out.append(
                f"--gpus {n}: {n} x {gpu_profile} hold every layer, predicted "
                f"{p.predicted_tg_tokens_per_s:.1f} tokens/s generation"
            )
        else:
            out.append(f"even {MAX_GPUS} x {gpu_profile} do not hold every layer")
    out.extend(_smaller_quant(header, devices, host, cp, margin_fraction, fits))
    for name, h in (alternatives or {}).items():
        p = fits(h, devices, cp)
        if p:
            out.append(
                f"a smaller model: {name} ({gib(h.tensor_bytes)}) fits fully, predicted "
                f"{p.predicted_tg_tokens_per_s:.1f} tokens/s"
            )
            break
    return out


# ALL_QUANTS runs from the largest to the smallest: this many at its end are sized first, since when the
# smallest of them does not fit, no quant will (and the other 28 need not be built)
_SMALLEST_FIRST = 4


def _smaller_quant(
    header: ModelHeader, devices: list[Device], host: Host, cp: ContextParams, margin_fraction: float, fits
) -> list[str]:
    current = header.tensor_bytes
    built: dict[str, ModelHeader | None] = {}

    def smaller(q: str) -> ModelHeader | None:
        if q not in built:
            try:
                h = at_quant(header, q)
            except HarnessError:
                h = None
            built[q] = h if h is not None and h.tensor_bytes < current else None
        return built[q]

    def smallest() -> tuple[str, ModelHeader] | None:
        sized = [(q, h) for q, h in built.items() if h is not None]
        return min(sized, key=lambda qh: qh[1].tensor_bytes) if sized else None

    for q in ggml_types.ALL_QUANTS[-_SMALLEST_FIRST:]:
        smaller(q)
    least = smallest()
    if least is None or fits(least[1], devices, cp):
        for q in ggml_types.ALL_QUANTS:
            h = smaller(q)
            if h is not None and fits(h, devices, cp):
                return [f"a smaller quant: {q} ({gib(h.tensor_bytes)}) fits fully (`harness sizes` for all)"]
        least = smallest()
    if least:
        q, h = least
        return [_why_smallest_does_not_fit(q, h, devices, host, cp, margin_fraction)]
    return []


def _why_smallest_does_not_fit(
    quant: str, header: ModelHeader, devices: list[Device], host: Host, cp: ContextParams, margin_fraction: float
) -> str:
    """Why even the smallest quant does not fit, naming what does not: its weights, or (when they would
    fit) the KV cache, compute buffers and reserve that every layer on the devices brings, and by how much."""
    full = every_layer_plan(header, devices, host, cp, margin_fraction)
    usable = sum(d.budget_bytes - d.margin_bytes for d in full.devices)
    weights = sum(d.weights_bytes for d in full.devices)
    parts = [
        (f"KV cache (--ctx {cp.n_ctx}, {cp.type_k})", sum(d.kv_bytes for d in full.devices)),
        ("compute buffers", sum(d.compute_bytes for d in full.devices)),
        ("runtime reserve", sum(d.reserve_bytes for d in full.devices)),
    ]
    named = [f"{human_bytes(n)} of {what}" for what, n in parts if n]
    rest = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
    room = f"the devices' {human_bytes(usable)} (budget less margin)"
    if weights <= usable and named:
        short = shortfall_bytes(full)
        each = ", counted device by device" if len(full.devices) > 1 else ""
        return (
            f"no quant of this model fits fully, and its weights are not what is short: at the smallest, {quant}, "
            f"every layer's weights ({human_bytes(weights)}) fit {room}; the {rest} on top leave them "
            f"{human_bytes(short)} short{each}"
        )
    out = f"no quant of this model fits fully: the smallest, {quant}, is {gib(header.tensor_bytes)} of weights"
    if sum(n for _, n in parts) > usable:
        out += f", and {room} would not hold even the {rest} that every layer brings besides"
    return out
