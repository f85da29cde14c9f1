"""Header reader speed, side by side in one run: harness.read_header vs llama.cpp's C parser
(gguf_init_from_file with no_alloc, through ctypes on llama_cpp's libggml-base) vs gguf-py's
GGUFReader. Interleaved repetitions; the minimum and median of each are compared, as ratios,
because these machines are shared and absolute times are noisy.

Parse is compared with parse: the timer stops once each parser has handed back its result (our
ModelHeader, llama.cpp's gguf_context), and freeing it (dropping the last reference; gguf_free) is
timed apart and reported in its own columns.

Targets (issue 2): on gemma3-270m, at least 300x faster than GGUFReader and no slower than C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from harness import read_header
from harness.llama import reference_parser
from harness.models.registry import model_path
from harness.text import table


def measure(name: str, reps: int, reader_reps: int) -> dict:
    path = model_path(name)
    so = reference_parser.lib()
    ours, ours_free, c, c_free = [], [], [], []
    read_header(path)
    so.gguf_free(reference_parser.open_context(path))  # warm the page cache for both
    for _ in range(reps):
        t0 = time.perf_counter()
        header = read_header(path)
        t1 = time.perf_counter()
        del header
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        ours_free.append(t2 - t1)

        t0 = time.perf_counter()
        ctx = reference_parser.open_context(path)
        t1 = time.perf_counter()
        assert ctx, "llama.cpp rejected the file"
        t1b = time.perf_counter()
        so.gguf_free(ctx)
        t2 = time.perf_counter()
        c.append(t1 - t0)
        c_free.append(t2 - t1b)
    from gguf import GGUFReader

    print(f"{name}: GGUFReader x{reader_reps} (slow)...", file=sys.stderr, flush=True)
    ref = []
    for _ in range(reader_reps):
        t0 = time.perf_counter()
        reader = GGUFReader(path)
        ref.append(time.perf_counter() - t0)
        del reader
    return {
        "model": name,
        "reps": reps,
        "ours_s": ours,
        "ours_free_s": ours_free,
        "llama_cpp_s": c,
        "llama_cpp_free_s": c_free,
        "gguf_reader_s": ref,
    }


def _versus(ours_s: float, c_s: float) -> str:
    return f"{ours_s / c_s:.2f}x slower" if ours_s > c_s else f"{c_s / ours_s:.2f}x faster"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--reader-reps", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("models", nargs="*", default=["gemma3-270m-q4_k_m", "smollm2-135m-q4_1"])
    args = ap.parse_args()
    results = [measure(m, args.reps, args.reader_reps) for m in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    rows = []
    for r in results:
        ours_min, ours_med = min(r["ours_s"]), statistics.median(r["ours_s"])
        c_min, c_med = min(r["llama_cpp_s"]), statistics.median(r["llama_cpp_s"])
        ref_min = min(r["gguf_reader_s"], default=float("nan"))
        rows.append(
            [
                r["model"],
                f"{ours_min * 1e3:.1f} / {ours_med * 1e3:.1f}",
                f"{statistics.median(r['ours_free_s']) * 1e3:.1f}",
                f"{c_min * 1e3:.1f} / {c_med * 1e3:.1f}",
                f"{statistics.median(r['llama_cpp_free_s']) * 1e3:.1f}",
                f"{ref_min * 1e3:,.0f}",
                f"{ref_min / ours_min:.0f}x",
                f"{_versus(ours_min, c_min)} / {_versus(ours_med, c_med)}",
            ]
        )
    print(
        table(
            [
                "model",
                "harness parse ms (min / median)",
                "free ms",
                "llama.cpp C parse ms (min / median)",
                "gguf_free ms",
                "GGUFReader ms",
                "vs GGUFReader",
                "harness vs C parse (min / median)",
            ],
            rows,
            right=[False] + [True] * 7,
        )
    )
    for r in results:
        if r["model"].startswith("gemma3-270m"):
            ours = min(r["ours_s"])
            ok_ref = min(r["gguf_reader_s"], default=0.0) / ours >= 300
            ok_c = min(r["llama_cpp_s"]) / ours >= 1.0
            print(
                f"\n{r['model']}: >=300x GGUFReader: {'yes' if ok_ref else 'NO'}; "
                f"no slower than llama.cpp's C parser (parse against parse): {'yes' if ok_c else 'NO'}"
            )


if __name__ == "__main__":
    main()
