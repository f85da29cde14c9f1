"""`harness models`: the registry, with each entry's size and local state."""

from __future__ import annotations

import click

from harness.cli.output import echo_json
from harness.models.hub import header_cached
from harness.models.registry import load_registry
from harness.models.resolve import architecture_header
from harness.text import human_bytes, table


@click.command()
@click.option("--json", "json_", is_flag=True, help="Print a JSON list instead of a table.")
def models(json_: bool) -> None:
    """List the registry (models.toml): name, quant, size and local state."""
    reg = load_registry()

    def size_of(e) -> int | None:
        if e.size_bytes is None and e.architecture:  # predicted tensor bytes at the entry's quant
            return architecture_header(reg, e).tensor_bytes
        return e.size_bytes

    rows = [
        {
            "name": e.name,
            "quant": e.quant,
            "size_bytes": size_of(e),
            "source": "pypi" if e.pypi else ("hf" if e.hf else "none"),
            "state": _state_of(e),
            "path": str(e.local_path()),
            "default": e.name == reg.default,
            "description": e.description,
        }
        for e in reg.entries.values()
    ]
    if json_:
        echo_json(rows)
        return
    click.echo(
        table(
            ["name", "quant", "size", "source", "state", "description"],
            [
                [
                    r["name"] + (" (default)" if r["default"] else ""),
                    r["quant"] or "",
                    human_bytes(r["size_bytes"]) if r["size_bytes"] else "?",
                    r["source"],
                    r["state"],
                    r["description"],
                ]
                for r in rows
            ],
        )
    )


def _state_of(entry) -> str:
    if entry.is_installed():
        return "downloaded"
    if header_cached(entry):
        return "header cached"
    return "architecture only" if entry.file is None else "absent"
