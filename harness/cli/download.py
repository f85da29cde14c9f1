"""`harness download`: registry models and Hub files into the cache, verified."""

from __future__ import annotations

import click

from harness.cli.output import Progress
from harness.models.assets import install
from harness.models.hub import download as hub_download
from harness.models.hub import registry_uri
from harness.models.registry import load_registry


@click.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every registry entry that has a download source.")
def download(names: tuple[str, ...], all_: bool) -> None:
    """Fetch registry models into the cache, verifying size and sha256.

    Files are written under a temporary name and renamed only once verified.
    """
    hub_uris = [n for n in names if n.startswith("hf://")]
    if hub_uris:
        for uri in hub_uris:
            for d in hub_download(uri, progress=Progress(uri)):
                note = f" (resumed from byte {d.resumed_from})" if d.resumed_from else ""
                check = (
                    f"sha256 {d.sha256}"
                    if d.verified
                    else "unverified: the Hub gave no sha256 to check it against"
                    + (f" (sha256 of what was written: {d.sha256})" if d.sha256 else "")
                )
                click.echo(str(d.path))
                click.echo(f"{d.path.name}: {d.size_bytes} bytes, {check}{note}", err=True)
        names = tuple(n for n in names if not n.startswith("hf://"))
        if not names and not all_:
            return
    reg = load_registry()
    entries = [e for e in reg.entries.values() if e.pypi] if all_ else [reg.get(n) for n in names]
    hub_entries = [e for e in entries if not e.pypi and e.hf]
    if hub_entries:
        for e in hub_entries:
            for d in hub_download(registry_uri(e), progress=Progress(e.name)):
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
            install(e, progress=Progress(e.name))
        click.echo(str(e.local_path()))
