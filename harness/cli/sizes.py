"""`harness sizes`: a model's exact size at other quant levels, as a table or JSON."""

from __future__ import annotations

import click

from harness.cli.options import SIZE, Size
from harness.cli.output import echo_json
from harness.gguf import ggml_types
from harness.models.resolve import resolve_model
from harness.quant.sizes import size_rows
from harness.text import gib, table


@click.command()
@click.argument("model")
@click.option(
    "--quant",
    "quants",
    default="",
    metavar="Q4_K_M,Q2_K,...|all",
    help="Quant levels to size (default: a common set from Q8_0 to IQ1_S).",
)
@click.option(
    "--imatrix/--no-imatrix",
    default=None,
    help="Assume an importance matrix (default: only where llama.cpp requires one).",
)
@click.option("--budget", type=SIZE, metavar="SIZE", help="Mark which quants' tensors fit, e.g. 40GiB, 80GB.")
@click.option("--remote", is_flag=True, help="For a registry entry with a Hub source: read its real header remotely.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of a table.")
def sizes(model: str, quants: str, imatrix: bool | None, budget: Size | None, remote: bool, json_: bool) -> None:
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
    if not quants:
        names = list(ggml_types.COMMON_QUANTS)
    elif quants.strip().lower() == "all":
        names = list(ggml_types.ALL_QUANTS)
    else:
        names = [q.strip().upper() for q in quants.split(",")]
    current = header.file_type
    budget_bytes = int(budget) if budget is not None else None
    rows = size_rows(header, names, imatrix, current, budget_bytes)
    warnings = list(header.warnings)
    if resolved.claimed_quant and current and resolved.claimed_quant != current:
        warnings.append(f"{model} claims {resolved.claimed_quant} but its header says {current}")
    if current in names:
        actual = next(r for r in rows if r.quant == current)
        if actual.prediction is not None and resolved.source != "architecture":
            differ = [p.name for p, t in zip(actual.prediction.tensors, header.tensors) if p.ggml_type != t.ggml_type]
            if differ:
                warnings.append(
                    f"{len(differ)} tensors are not the types llama.cpp's {current} rules give "
                    f"(e.g. {differ[0]}): made by another llama.cpp version or a custom recipe"
                )
    if json_:
        echo_json(
            {
                "model": model,
                "current_quant": current,
                "budget_bytes": budget_bytes,
                "quants": [
                    {
                        "quant": r.quant,
                        "tensor_bytes": r.prediction.tensor_bytes if r.prediction else None,
                        "bits_per_weight": round(r.prediction.bits_per_weight, 4) if r.prediction else None,
                        "types": r.prediction.type_counts if r.prediction else None,
                        "n_fallback": r.prediction.n_fallback if r.prediction else None,
                        "imatrix": r.prediction.has_imatrix if r.prediction else None,
                        "current": r.is_current,
                        "fits_budget": r.fits_budget,
                        "refused": r.refused,
                    }
                    for r in rows
                ],
                "warnings": warnings,
            }
        )
        return
    with_budget = budget is not None
    out = []
    for r in rows:
        mark = r.quant + (" *" if r.is_current else "")
        if r.prediction is None:
            out.append([mark, "-", "-", "-", f"refused: {r.refused}", "-"] + (["-"] if with_budget else []))
            continue
        p = r.prediction
        types = " ".join(f"{k}:{v}" for k, v in p.type_counts.items())
        row = [
            mark + (" (imatrix)" if p.has_imatrix else ""),
            f"{p.tensor_bytes:,}",
            gib(p.tensor_bytes),
            f"{p.bits_per_weight:.3f}",
            types,
            p.n_fallback,
        ]
        out.append(row + (["yes" if r.fits_budget else "no"] if with_budget else []))
    headers = ["quant", "tensor bytes", "size", "bits/weight", "tensors per type", "fallbacks"]
    click.echo(
        f"{model}: {header.arch.name}, {header.n_params:,} parameters, {len(header.tensors)} tensors"
        + (" (built from its architecture)" if resolved.source == "architecture" else "")
    )
    click.echo(
        table(
            headers + ([f"fits {budget.text}"] if with_budget else []),
            out,
            right=[False, True, True, True, False, True] + ([False] if with_budget else []),
        )
    )
    click.echo("* the model's current quant; tensor bytes exclude the GGUF header (a few MiB)")
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
