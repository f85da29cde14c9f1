"""`harness inspect`: what a model header says, as plain data (--json) and as text."""

from __future__ import annotations

import os
from typing import Any

import click

from harness.cli.output import echo_json
from harness.gguf.header import LayerTotal, ModelHeader
from harness.gguf.memory_layout import attention_window, layer_memory
from harness.models.resolve import resolve_model
from harness.text import gib, human_bytes, table


@click.command()
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
        echo_json(summary(header, with_tensors=tensors))
    else:
        click.echo(render(header, with_tensors=tensors))


def _per_layer(values: tuple[int, ...] | None) -> int | list[int] | None:
    if values is None:
        return None
    return values[0] if len(set(values)) == 1 else list(values)


def summary(h: ModelHeader, with_tensors: bool = False) -> dict[str, Any]:
    """The JSON object of `harness inspect --json`."""
    a = h.arch
    out: dict[str, Any] = {}
    if len(h.shards) == 1:
        out["path"] = h.paths[0]
    else:
        out["paths"] = list(h.paths)
    out.update(
        {
            "architecture": a.name,
            "name": h.name,
            "file_type": h.file_type,
            "gguf_version": h.version,
            "n_tensors": len(h.tensors),
            "n_params": h.n_params,
            "tensor_bytes": h.tensor_bytes,
            "data_offset": h.data_offset,
            "file_bytes": h.file_bytes,
            "bits_per_weight": round(h.bits_per_weight, 4),
            "n_layer": a.n_layer,
            "context_length": a.context_length,
            "n_embd": a.n_embd,
            "n_ff": _per_layer(a.n_ff),
            "n_head": _per_layer(a.n_head),
            "n_head_kv": _per_layer(a.n_head_kv),
            "key_length": a.key_length,
            "value_length": a.value_length,
            "sliding_window": a.sliding_window,
            "sliding_window_pattern": (
                list(a.sliding_window_pattern)
                if isinstance(a.sliding_window_pattern, tuple)
                else a.sliding_window_pattern
            ),
            "n_expert": a.n_expert,
            "n_expert_used": a.n_expert_used,
            "n_vocab": a.n_vocab,
            **memory_facts(h),
            "types": {t.type_name: {"count": t.n_tensors, "bytes": t.n_bytes} for t in h.type_totals()},
            "layers": [{"index": lt.index, "bytes": lt.n_bytes, "n_tensors": lt.n_tensors} for lt in h.layer_totals()],
            "non_layer": [{"name": t.name, "type": t.type_name, "bytes": t.n_bytes} for t in h.non_layer_tensors()],
            "truncated": h.truncated,
            "shards": [
                {
                    "path": s.name,
                    "file_bytes": s.file_bytes,
                    "data_offset": s.data_offset,
                    "alignment": s.alignment,
                    "n_tensors": len(s.tensors),
                    "tensor_bytes": sum(t.n_bytes for t in s.tensors),
                    "truncated": s.truncated,
                }
                for s in h.shards
            ],
            "warnings": list(h.warnings),
        }
    )
    if with_tensors:
        out["tensors"] = [
            {
                "name": t.name,
                "shape": list(t.shape),
                "type": t.type_name,
                "offset": t.offset_bytes,
                "bytes": t.n_bytes,
                "shard": t.shard,
            }
            for t in h.tensors
        ]
    return out


def memory_facts(h: ModelHeader) -> dict[str, Any]:
    """What decides the KV cache and recurrent state: MLA ranks, experts, SSM sizes, the window llama.cpp
    applies (its per-architecture default when the file has no pattern), which layers hold what."""
    a = h.arch
    w = attention_window(h)
    mem = layer_memory(h)
    ssm = {
        "conv_kernel": a.ssm_conv_kernel,
        "inner_size": a.ssm_inner_size,
        "state_size": a.ssm_state_size,
        "time_step_rank": a.ssm_time_step_rank,
        "group_count": a.ssm_group_count,
    }
    return {
        "key_length_mla": a.key_length_mla,
        "value_length_mla": a.value_length_mla,
        "kv_lora_rank": a.kv_lora_rank,
        "q_lora_rank": a.q_lora_rank,
        "n_ff_expert": _per_layer(a.n_ff_expert),
        "n_expert_shared": a.n_expert_shared,
        "ssm": ssm if any(v is not None for v in ssm.values()) else None,
        "shortconv_l_cache": a.shortconv_l_cache,
        "wkv_head_size": a.wkv_head_size,
        "attention_window": None
        if w.kind == "none"
        else {"kind": w.kind, "size": w.size, "period": w.period, "layers": list(w.layers), "source": w.source},
        "kv_cache_layers": [il for il, m in enumerate(mem) if m.has_kv],
        "recurrent_layers": [il for il, m in enumerate(mem) if m.has_rs],
    }


def _memory_lines(h: ModelHeader, s: dict[str, Any]) -> list[str]:
    """The text of memory_facts; ``s`` is the summary that holds them."""
    a = h.arch
    lines = []
    if a.is_mla:
        lines.append(
            f"MLA            kv_lora_rank {a.kv_lora_rank}   q_lora_rank {a.q_lora_rank}   "
            f"head size k/v {a.key_length_mla}/{a.value_length_mla} (cache: one latent K row, no V)"
        )
    w = s["attention_window"]
    if w is not None:
        what = "chunked attention" if w["kind"] == "chunked" else "sliding window"
        source = "llama.cpp's default" if w["source"] == "default" else "from the file"
        periodic = w["period"] and (w["source"] == "default" or w["period"] < len(w["layers"]))
        period = f"period {w['period']}, " if periodic else ""
        lines.append(f"{what} {w['size']} on {sum(w['layers'])} of {len(w['layers'])} layers ({period}{source})")
    elif a.sliding_window:
        lines.append(f"sliding window {a.sliding_window} (in the file; llama.cpp applies none to {a.name})")
    n_rs = len(s["recurrent_layers"])
    if n_rs:
        ssm = ", ".join(
            f"{k} {v}"
            for k, v in (
                ("conv kernel", a.ssm_conv_kernel),
                ("inner", a.ssm_inner_size),
                ("state", a.ssm_state_size),
                ("dt rank", a.ssm_time_step_rank),
                ("groups", a.ssm_group_count),
                ("short conv cache", a.shortconv_l_cache),
                ("wkv head", a.wkv_head_size),
            )
            if v
        )
        lines.append(f"recurrent      {n_rs} of {a.n_layer} layers, KV cache on {len(s['kv_cache_layers'])} ({ssm})")
    return lines


def _runs(layers: list[LayerTotal]) -> list[list[LayerTotal]]:
    """Consecutive layers of identical size, grouped: the per-layer summary stays short for 126 blocks."""
    runs: list[list[LayerTotal]] = []
    for lt in layers:
        if (
            runs
            and runs[-1][-1].n_bytes == lt.n_bytes
            and runs[-1][-1].n_tensors == lt.n_tensors
            and runs[-1][-1].index + 1 == lt.index
        ):
            runs[-1].append(lt)
        else:
            runs.append([lt])
    return runs


def render(h: ModelHeader, with_tensors: bool = False) -> str:
    a = h.arch
    s = summary(h)
    lines = [
        f"model          {', '.join(os.path.basename(p) for p in h.paths)}",
        f"architecture   {a.name}" + (f"  ({h.name})" if h.name else ""),
        f"quant          {h.file_type or 'not declared'}",
        f"parameters     {h.n_params:,}",
        f"tensor bytes   {h.tensor_bytes:,} ({gib(h.tensor_bytes)})",
        f"bits/weight    {h.bits_per_weight:.3f}",
        f"file bytes     {h.file_bytes:,}  (data at byte {h.data_offset:,}, GGUF v{h.version})",
        f"layers         {a.n_layer}",
        f"context        {a.context_length}",
        f"embedding      {a.n_embd}   ffn {s['n_ff']}",
        f"heads          {s['n_head']}   kv heads {s['n_head_kv']}   head size k/v {a.key_length}/{a.value_length}",
    ]
    lines += _memory_lines(h, s)
    if a.n_expert:
        width = f", expert ffn {s['n_ff_expert']}" if a.n_ff_expert else ""
        shared = f", {a.n_expert_shared} shared" if a.n_expert_shared else ""
        lines.append(f"experts        {a.n_expert} ({a.n_expert_used} used per token{shared}{width})")
    lines.append(f"vocabulary     {a.n_vocab}")
    lines.append("")
    lines.append(
        table(
            ["type", "tensors", "bytes", "size", "share"],
            [
                [
                    t.type_name,
                    t.n_tensors,
                    f"{t.n_bytes:,}",
                    human_bytes(t.n_bytes),
                    f"{100 * t.n_bytes / max(h.tensor_bytes, 1):.1f}%",
                ]
                for t in h.type_totals()
            ],
            right=[False, True, True, True, True],
        )
    )
    layers = h.layer_totals()
    if layers:
        lines.append("")
        lines.append(
            table(
                ["layers", "tensors", "bytes each", "size each"],
                [
                    [
                        f"blk.{r[0].index}" + (f"-{r[-1].index}" if len(r) > 1 else ""),
                        r[0].n_tensors,
                        f"{r[0].n_bytes:,}",
                        human_bytes(r[0].n_bytes),
                    ]
                    for r in _runs(layers)
                ],
                right=[False, True, True, True],
            )
        )
        rest = h.non_layer_tensors()
        lines.append(
            "outside the blocks: " + ", ".join(f"{t.name} {t.type_name} {human_bytes(t.n_bytes)}" for t in rest)
        )
    if len(h.shards) > 1:
        lines.append("")
        lines.append(
            table(
                ["shard", "tensors", "tensor bytes", "file bytes"],
                [
                    [os.path.basename(sh["path"]), sh["n_tensors"], f"{sh['tensor_bytes']:,}", f"{sh['file_bytes']:,}"]
                    for sh in s["shards"]
                ],
                right=[False, True, True, True],
            )
        )
    if with_tensors:
        lines.append("")
        lines.append(
            table(
                ["tensor", "shape", "type", "offset", "bytes"],
                [
                    [t.name, "x".join(map(str, t.shape)), t.type_name, f"{t.offset_bytes:,}", f"{t.n_bytes:,}"]
                    for t in h.tensors
                ],
                right=[False, False, False, True, True],
            )
        )
    for w in h.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
