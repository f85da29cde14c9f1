"""Options shared by several commands, as typed click parameters."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import click

from harness.errors import UsageError
from harness.gguf.source import file_kind
from harness.offload.hardware import GGML_MAX_N_THREADS
from harness.offload.placement import KV_TYPES
from harness.offload.solver import PROPORTIONAL, SPLIT_MODES, STRATEGIES
from harness.text import parse_size


class Size(int):
    """A byte count that remembers how it was written ("40GiB"), for headers such as `fits 40GiB`."""

    text: str

    def __new__(cls, n_bytes: int, text: str) -> Size:
        self = super().__new__(cls, n_bytes)
        self.text = text
        return self

    def __getnewargs__(self) -> tuple[int, str]:  # copy and pickle rebuild it with its text
        return int(self), self.text


class SizeType(click.ParamType):
    """A byte size: 40GiB, 80GB, 24000MiB or a number of bytes (harness.text.parse_size)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Size:
        if isinstance(value, Size):
            return value
        try:
            return Size(parse_size(str(value)), str(value))
        except ValueError as exc:
            hint = param.opts[0] if param is not None and param.opts else None
            raise click.BadParameter(str(exc), ctx=ctx, param=param, param_hint=hint) from None


SIZE = SizeType()


class FiniteFloatRange(click.FloatRange):
    """A number in a range, and a number at all: click's FloatRange lets nan through (no comparison with
    nan is true), and inf where the range is open-ended."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


THREADS = click.IntRange(1, GGML_MAX_N_THREADS)
PORT = click.IntRange(1, 65535)


class TextFileType(click.ParamType):
    """A text file's contents (UTF-8, undecodable bytes replaced): a regular file of at most ``max_bytes``,
    read once with a bound. A FIFO would block the read, a device (/dev/zero) never end it."""

    name = "file"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        path = os.fspath(value)  # type: ignore[arg-type]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO opens without a writer
        except (OSError, ValueError) as exc:  # missing, too long a name, a NUL in it
            self.fail(f"{path!r}: {getattr(exc, 'strerror', None) or exc}", param, ctx)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > self.max_bytes:
            os.close(fd)
            if not stat.S_ISREG(st.st_mode):
                self.fail(f"{path!r} is {file_kind(st.st_mode)}, not a text file", param, ctx)
            self.fail(f"{path!r} is over {self.max_bytes >> 20} MiB; give a part of it", param, ctx)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            try:
                data = f.read(self.max_bytes + 1)  # bounded: the file may grow after the stat
            except OSError as exc:
                self.fail(f"{path!r}: {exc.strerror}", param, ctx)
        if len(data) > self.max_bytes:
            self.fail(f"{path!r} is over {self.max_bytes >> 20} MiB; give a part of it", param, ctx)
        return data.decode("utf-8", errors="replace")


def check_writable_dir(directory: str, option: str, value: str | None = None) -> None:
    """Refuse an output folder that cannot be written (or made), before the work rather than after it;
    ``value``: the option's own value where it names a file in that folder."""
    existing = Path(directory)
    shown = value or directory
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        ok = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    except OSError as exc:  # a name too long, a loop of links
        raise UsageError(f"{option} {shown}: {exc.strerror}") from None
    if not ok:
        raise UsageError(f"{option} {shown}: {existing} is not a folder this user can write in")


# The KV cache types the CLI has always offered; the library (ContextParams) takes every one in KV_TYPES.
KV_TYPE = click.Choice([t for t in KV_TYPES if t in ("f16", "q8_0", "q4_0")])


def kv_type_option(f):
    return click.option("--kv-type", default="f16", show_default=True, type=KV_TYPE)(f)


def moe_options(f):
    """--strategy, --n-cpu-moe and --split, as plan takes them: how a mixture of experts is split, and how layers
    spread over several devices (run and bench)."""
    f = click.option(
        "--split",
        "split_mode",
        type=click.Choice(SPLIT_MODES),
        default=PROPORTIONAL,
        show_default=True,
        help="Several devices: layers in proportion to each budget (llama.cpp's default), or packed in order.",
    )(f)
    f = click.option(
        "--n-cpu-moe",
        "n_cpu_moe",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help="Keep the routed experts of the first N blocks on the host (llama.cpp's --n-cpu-moe).",
    )(f)
    f = click.option(
        "--strategy",
        type=click.Choice(STRATEGIES),
        default="auto",
        show_default=True,
        help="Mixture-of-experts models: split whole layers, keep routed experts on the host, or the faster.",
    )(f)
    return f


def plan_options(f):
    """The placement options shared by run and bench (plan has its own, richer set)."""
    f = click.option("--gpu", default=None, metavar="PROFILE", help="Plan for this GPU profile's speed.")(f)
    f = click.option("--budget", type=SIZE, default=None, metavar="SIZE", help="Memory budget per local GPU.")(f)
    f = click.option("--rpc", "rpcs", multiple=True, metavar="HOST:PORT=SIZE", help="A llama.cpp RPC device.")(f)
    f = click.option(
        "--n-gpu-layers", "n_gpu_layers", type=click.IntRange(min=0), default=None, help="Force this value."
    )(f)
    f = kv_type_option(f)
    f = click.option("--threads", type=THREADS, default=None, help="CPU threads (default: all cores).")(f)
    f = click.option("--force", is_flag=True, help="Run even when the plan says it does not fit.")(f)
    return f
