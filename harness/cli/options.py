"""Options shared by several commands, as typed click parameters."""

from __future__ import annotations

import click

from harness.offload.placement import KV_TYPES
from harness.text import parse_size


class Size(int):
    """A byte count that remembers how it was written ("40GiB"), for headers such as `fits 40GiB`."""

    text: str

    def __new__(cls, n_bytes: int, text: str) -> Size:
        self = super().__new__(cls, n_bytes)
        self.text = text
        return self


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

# The KV cache types the CLI has always offered; the library (ContextParams) takes every one in KV_TYPES.
KV_TYPE = click.Choice([t for t in KV_TYPES if t in ("f16", "q8_0", "q4_0")])


def kv_type_option(f):
    return click.option("--kv-type", default="f16", show_default=True, type=KV_TYPE)(f)


def plan_options(f):
    """The placement options shared by run and bench (plan has its own, richer set)."""
    f = click.option("--gpu", default=None, metavar="PROFILE", help="Plan for this GPU profile's speed.")(f)
    f = click.option("--budget", type=SIZE, default=None, metavar="SIZE", help="Memory budget per local GPU.")(f)
    f = click.option("--rpc", "rpcs", multiple=True, metavar="HOST:PORT=SIZE", help="A llama.cpp RPC device.")(f)
    f = click.option("--n-gpu-layers", "n_gpu_layers", type=int, default=None, help="Force this value.")(f)
    f = kv_type_option(f)
    f = click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")(f)
    f = click.option("--force", is_flag=True, help="Run even when the plan says it does not fit.")(f)
    return f
