"""`harness plan` on the textbook case, cold and warm, with compute buffers from llama.cpp's dry run.

Goal (issue "Exact on every architecture"): `harness plan 405b-q4_k_m` within 3 s cold (an empty cache:
the stand-in file is written, llama.cpp is asked) and 0.5 s warm (its answers cached). Each round runs
the command as a whole process in a fresh cache directory (cold), then again in the same one (warm);
for scale, the formula-only plan (`--compute formula`) in the same round. The figures are medians of the
rounds. A benchmark, not a test: it prints whether the goals are met and exits 0 either way.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = 5
GOAL_COLD_S, GOAL_WARM_S = 3.0, 0.5
MODEL = os.environ.get("MODEL", "405b-q4_k_m")


def timed(args: list[str], cache: str) -> tuple[float, dict]:
    env = {**os.environ, "HARNESS_CACHE_DIR": cache}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "harness", "plan", MODEL, "--json", *args], env=env, capture_output=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"harness plan {MODEL} {' '.join(args)} failed: {r.stderr.decode(errors='replace')[-800:]}")
    return elapsed, json.loads(r.stdout)


def main() -> int:
    times: dict[str, list[float]] = {"cold": [], "warm": [], "formula": []}
    plans = {}
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="harness-bench-plan-") as cache:
            for kind, args in (("cold", []), ("warm", []), ("formula", ["--compute", "formula"])):
                t, plans[kind] = timed(args, cache)
                times[kind].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"harness plan {MODEL} (one A100 40GB, ctx 4096), median of {ROUNDS} rounds, each a whole process:")
    for kind, goal in (("cold", GOAL_COLD_S), ("warm", GOAL_WARM_S), ("formula", None)):
        p = plans[kind]
        dev = p["devices"][0]
        verdict = "" if goal is None else (f"  goal <= {goal} s: " + ("met" if med[kind] <= goal else "MISSED"))
        print(
            f"  {kind:8s} {med[kind]:6.2f} s  (min {min(times[kind]):.2f}, max {max(times[kind]):.2f})  "
            f"n_gpu_layers {p['n_gpu_layers']}, device compute {dev['compute_bytes'] / 2**20:.2f} MiB "
            f"[{p['sources']['compute']}]{verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
