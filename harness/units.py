"""Plain-text rendering helpers: byte sizes and aligned tables. No I/O here."""

from __future__ import annotations

import re
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


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def parse_size(text: str) -> int:
    """'40GiB' -> 42949672960, '80GB' -> 80e9, '512' -> 512. Raises ValueError with the accepted forms."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write e.g. 40GiB, 80GB, 24000MiB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[unit])
