"""The command line: one module per command, loaded when that command runs, and the one error boundary.

`harness inspect` imports inspect's module and nothing else's: the planner, llama.cpp, the Hub client and
matplotlib load only with the commands that use them. The group maps every HarnessError to one line on
stderr and its exit code (harness.errors.EXIT_CODES), so CliRunner and a shell see the same codes.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import sys
import traceback

import click

from harness import settings
from harness.errors import INTERNAL_ERROR_EXIT_CODE, INTERRUPTED_EXIT_CODE, CannotRunHere, HarnessError

# name -> (module under harness.cli defining a command of the module's name, the first paragraph of its
# docstring): `harness --help` lists the commands from here without importing them.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect", "Header facts of MODEL: exact bytes per tensor, layer and type."),
    "sizes": ("sizes", "Exact size of MODEL at other quant levels, by llama.cpp's own per-tensor rules."),
    "plan": (
        "plan",
        "How many layers of MODEL fit the GPU budget, what stays on the host, how fast, and what to change.",
    ),
    "run": ("run", "Answer PROMPT with MODEL, loaded with the planned split; tokens stream to stdout."),
    "bench": ("bench", "Benchmark MODEL the way llama-bench does, with the planned split."),
    "compare": ("compare", "Quant levels of MODEL side by side under one budget: size, fit, speed, quality."),
    "hardware": ("hardware", "The hardware profiles plans are made for (hardware.toml), and this host's RAM."),
    "rpc-server": (
        "rpc_server",
        "Serve this host's CPU backend over llama.cpp's RPC protocol (lend its memory to a planner).",
    ),
    "models": ("models", "List the registry (models.toml): name, quant, size and local state."),
    "download": ("download", "Fetch registry models into the cache, verifying size and sha256."),
}


class HarnessGroup(click.Group):
    """Commands imported on first use, and errors mapped to one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = entry[0]
        return getattr(importlib.import_module(f"harness.cli.{module}"), module)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click.Group's own listing, from the stored summaries (click shortens them as it would the docstrings)
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [
            (name, click.Command(name, help=summary).get_short_help_str(limit))
            for name, (_, summary) in sorted(COMMANDS.items())
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        # the group's own --help and --version print while parsing, before invoke
        try:
            return super().make_context(info_name, args, parent, **extra)
        except OSError as exc:
            raise click.exceptions.Exit(_report(exc)) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            ctx.exit(_report(exc))


def _report(exc: BaseException) -> int:
    """Say what ended the command, in one line, and return its exit code."""
    if isinstance(exc, CannotRunHere):  # a result, not a failure: what it would take, on stdout
        _say(str(exc))
        return exc.exit_code
    if isinstance(exc, HarnessError):
        if settings.debug():
            traceback.print_exc()
        _say(f"error: {exc}", err=True)
        return exc.exit_code
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        _say("interrupted", err=True)
        return INTERRUPTED_EXIT_CODE
    if isinstance(exc, BrokenPipeError):  # the reader (head, less) is gone: nothing left to say to it
        _discard_stdout()
        return 0
    if isinstance(exc, OSError) and _writing_stdout(exc):  # > /dev/full, a full disk
        _discard_stdout()
        _say(f"error: cannot write to standard output: {exc.strerror or exc}", err=True)
        return HarnessError.exit_code
    if settings.debug():  # a bug of ours: one line unless debugging
        traceback.print_exc()
    _say(f"internal error: {type(exc).__name__}: {exc} (HARNESS_DEBUG=1 shows the traceback)", err=True)
    return INTERNAL_ERROR_EXIT_CODE


def _say(line: str, err: bool = False) -> None:
    """click.echo, where failing to write is no new error: stdout's is reported once on stderr, stderr's
    cannot be."""
    try:
        click.echo(line, err=err)
    except OSError as exc:
        _discard_stdout()
        if not err and not isinstance(exc, BrokenPipeError):
            _say(f"error: cannot write to standard output: {exc.strerror or exc}", err=True)


def _writing_stdout(exc: OSError) -> bool:
    """Whether ``exc`` came from a write to stdout: the frame it was raised in holds stdout (click.echo's
    ``file``), rather than a file or socket of the library's."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return any(_is_stdout(value) for value in tb.tb_frame.f_locals.values())


def _is_stdout(obj: object) -> bool:
    if obj is sys.stdout or obj is sys.__stdout__:
        return obj is not None
    if not isinstance(obj, io.IOBase) or sys.stdout is None:
        return False
    try:
        return obj.fileno() == sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # not a file descriptor (CliRunner's capture)
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the closed pipe."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (CliRunner's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="harness")
def cli() -> None:
    """Exactly whether and how a GGUF model runs on your hardware."""


def main() -> None:
    """The console entry point (`harness`): log to stderr, then run the group."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("harness").setLevel(logging.INFO)  # our progress; libraries' chatter stays quiet
    try:
        cli()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    # what is still buffered is written now, not by the interpreter at exit, where a closed pipe or a
    # full disk would be Python's "Exception ignored" noise
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as exc:
        _discard_stdout()
        if not isinstance(exc, BrokenPipeError):
            _say(f"error: cannot write to standard output: {exc.strerror or exc}", err=True)
            code = code or HarnessError.exit_code
    sys.exit(code)
