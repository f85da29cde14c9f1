"""CLI start-up, side by side in one run: each command as a whole process against a bare Python start.

Goal (issue "One house with visible floors"): `harness inspect smollm2-135m-q4_1 --json` within 4x of
`python -c pass`. For scale, the same file through gguf-inspect (a stdlib-only reader from PyPI, which
`make bench-cli` installs) when it is there. Runs are interleaved (one of each per round) so drift on
a shared machine hits all alike; the figure is the median of each command's wall times, and the ratio
is to the bare start's median from the same rounds. A benchmark, not a test: it prints whether the goal
is met and exits 0 either way.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROUNDS = 15
GOAL_RATIO = 4.0

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "harness --help": [sys.executable, "-m", "harness", "--help"],
    "harness inspect smollm2-135m-q4_1 --json": [
        sys.executable,
        "-m",
        "harness",
        "inspect",
        "smollm2-135m-q4_1",
        "--json",
    ],
    "harness sizes smollm2-135m-q4_1 --quant Q4_K_M --json": [
        sys.executable,
        "-m",
        "harness",
        "sizes",
        "smollm2-135m-q4_1",
        "--quant",
        "Q4_K_M",
        "--json",
    ],
    "harness plan 8b-q4_k_m --json": [sys.executable, "-m", "harness", "plan", "8b-q4_k_m", "--json"],
    "python -c 'import gguf'": [sys.executable, "-c", "import gguf"],
}


def _smollm2_path() -> str:
    from harness.models.registry import model_path

    return str(model_path("smollm2-135m-q4_1"))


if importlib.util.find_spec("gguf_inspect") is not None:
    COMMANDS["gguf-inspect SmolLM2-135M-Instruct.Q4_1.gguf --json"] = [
        str(Path(sys.executable).with_name("gguf-inspect")),
        _smollm2_path(),
        "--json",
    ]


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()[-400:]}")
    return elapsed


def main() -> int:
    # a wheel install carries bytecode; an editable checkout has it only once written (not at all where
    # PYTHONDONTWRITEBYTECODE is set, as on CI machines): compile first, or every start compiles the package
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "harness")], check=True
    )
    for cmd in COMMANDS.values():  # warm the page cache and bytecode caches
        _time(cmd)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(ROUNDS):
        for name, cmd in COMMANDS.items():
            samples[name].append(_time(cmd))
    base = statistics.median(samples["python -c pass"])
    width = max(map(len, COMMANDS))
    print(f"| {'command':<{width}} | median ms |   min ms | x bare python |")
    print(f"|{'-' * (width + 2)}|----------:|---------:|--------------:|")
    for name, times in samples.items():
        med = statistics.median(times)
        print(f"| {name:<{width}} | {med * 1e3:9.1f} | {min(times) * 1e3:8.1f} | {med / base:13.2f} |")
    ratio = statistics.median(samples["harness inspect smollm2-135m-q4_1 --json"]) / base
    verdict = "met" if ratio <= GOAL_RATIO else "MISSED"
    print(
        f"\ngoal: inspect within {GOAL_RATIO:.0f}x a bare Python start: {ratio:.2f}x, {verdict} "
        f"({ROUNDS} interleaved rounds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
