"""`harness rpc-server`: lend this host's CPU memory to a planner as a llama.cpp RPC device."""

from __future__ import annotations

import click

from harness.cli.options import PORT, THREADS
from harness.llama.rpc import serve


@click.command("rpc-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=50052, show_default=True, type=PORT)
@click.option("--threads", type=THREADS, default=None, help="CPU threads (default: llama.cpp's, half the cores).")
def rpc_server(host: str, port: int, threads: int | None) -> None:
    """Serve this host's CPU backend over llama.cpp's RPC protocol (lend its memory to a planner).

    Stops promptly on Ctrl-C or SIGTERM. Anyone who can reach the port can use it: keep it on
    loopback or a trusted network.
    """
    serve(host, port, threads)
