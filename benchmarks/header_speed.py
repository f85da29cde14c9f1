"""Header reader speed, side by side in one run: harness.read_header vs llama.cpp's C parser
(gguf_init_from_file with no_alloc, through ctypes on llama_cpp's libggml-base) vs gguf-py's
GGUFReader. Interleaved repetitions; the minimum and median of each are compared, as ratios,
because these machines are shared and absolute times are noisy.

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
from harness.models.registry import resolve_path
from harness.text import table


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(name: str, reps: int, reader_reps: int) -> dict:
    path = resolve_path(name)
    so = reference_parser.lib()

    def c_parser() -> None:
        ctx = reference_parser.open_context(path)
        assert ctx, "llama.cpp rejected the file"
        so.gguf_free(ctx)

    ours, c = [], []
    read_header(path)
    c_parser()  # warm the page cache for both
    for _ in range(reps):
        ours.append(_time(lambda: read_header(path)))
        c.append(_time(c_parser))
    from gguf import GGUFReader

    print(f"{name}: GGUFReader x{reader_reps} (slow)...", file=sys.stderr, flush=True)
    ref = [_time(lambda: GGUFReader(path)) for _ in range(reader_reps)]
    return {"model": name, "reps": reps, "ours_s": ours, "llama_cpp_s": c, "gguf_reader_s": ref}


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
                f"{c_min * 1e3:.1f} / {c_med * 1e3:.1f}",
                f"{ref_min * 1e3:.0f}",
                f"{ref_min / ours_min:.0f}x",
                f"{c_min / ours_min:.2f}x / {c_med / ours_med:.2f}x",
            ]
        )
    print(
        table(
            [
                "model",
                "harness ms (min / median)",
                "llama.cpp C ms (min / median)",
                "GGUFReader ms",
                "vs GGUFReader",
                "vs C (min / median)",
            ],
            rows,
            right=[False, True, True, True, True, True],
        )
    )
    for r in results:
        if r["model"].startswith("gemma3-270m"):
            ours = min(r["ours_s"])
            ok_ref = min(r["gguf_reader_s"], default=0.0) / ours >= 300
            ok_c = min(r["llama_cpp_s"]) / ours >= 1.0
            print(
                f"\n{r['model']}: >=300x GGUFReader: {'yes' if ok_ref else 'NO'}; "
                f"no slower than llama.cpp's C parser: {'yes' if ok_c else 'NO'}"
            )


if __name__ == "__main__":
    main()
