"""What every command shares on the way out: JSON on stdout, byte progress on stderr."""

from __future__ import annotations

import json
import sys

import click


def echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2))


class Progress:
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
