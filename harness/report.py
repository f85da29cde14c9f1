"""Plain-text rendering helpers: byte sizes and aligned tables. No I/O here."""

from __future__ import annotations

from collections.abc import Sequence

GIB = 1 << 30
MIB = 1 << 20


def gib(n_bytes: int) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def human_bytes(n_bytes: int) -> str:
    if n_bytes >= GIB:
        return f"{n_bytes / GIB:.2f} GiB"
    if n_bytes >= MIB:
        return f"{n_bytes / MIB:.2f} MiB"
    if n_bytes >= 1024:
        return f"{n_bytes / 1024:.2f} KiB"
    return f"{n_bytes} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] | None = None) -> str:
    """A markdown-compatible table with aligned columns; ``right`` marks numeric columns."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = right or [False] * len(headers)

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(r, widths, right)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if ra else ("-" * (w + 2)) for w, ra in zip(widths, right)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
