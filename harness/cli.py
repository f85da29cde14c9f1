"""The command line: thin wrappers over library functions. Errors are mapped to messages here only."""

from __future__ import annotations

import json
import logging
import sys
import traceback

import click

from . import settings
from .errors import HarnessError


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
def inspect(model: str, json_: bool, tensors: bool) -> None:
    """Header facts of MODEL: exact bytes per tensor, layer and type.

    MODEL is a registry name (see `harness models`), a path, or any shard of a split model.
    Only the header is read, so this is instant even for a 243 GB model.

    \b
    Examples:
      harness inspect gemma3-270m-q4_k_m
      harness inspect ./Llama-3.1-405B-Q4_K_M-00001-of-00005.gguf --json
    """
    from .inspect import render, summary
    from .registry import resolve_path
    from .split import read_header

    header = read_header(resolve_path(model))
    if json_:
        _echo_json(summary(header, with_tensors=tensors))
    else:
        click.echo(render(header, with_tensors=tensors))


@cli.command()
@click.option("--json", "json_", is_flag=True, help="Print a JSON list instead of a table.")
def models(json_: bool) -> None:
    """List the registry (models.toml): name, quant, size and local state."""
    from .registry import load_registry
    from .report import human_bytes, table

    reg = load_registry()
    rows = [{"name": e.name, "quant": e.quant, "size_bytes": e.size_bytes,
             "source": "pypi" if e.pypi else ("hf" if e.hf else "none"),
             "state": "downloaded" if e.is_installed() else ("architecture only" if e.file is None else "absent"),
             "path": str(e.local_path()), "default": e.name == reg.default, "description": e.description}
            for e in reg.entries.values()]
    if json_:
        _echo_json(rows)
        return
    click.echo(table(["name", "quant", "size", "source", "state", "description"],
                     [[r["name"] + (" (default)" if r["default"] else ""), r["quant"] or "",
                       human_bytes(r["size_bytes"]) if r["size_bytes"] else "?", r["source"], r["state"],
                       r["description"]] for r in rows]))


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every registry entry that has a download source.")
def download(names: tuple[str, ...], all_: bool) -> None:
    """Fetch registry models into the cache, verifying size and sha256.

    Files are written under a temporary name and renamed only once verified.
    """
    from .assets import install
    from .registry import load_registry

    reg = load_registry()
    entries = [e for e in reg.entries.values() if e.pypi] if all_ else [reg.get(n) for n in names]
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
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
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
