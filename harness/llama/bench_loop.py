"""llama-bench's timing loop on an open session: warm-up, repeated pp and tg, against a bare decode loop.

pp: a prompt of n_prompt random tokens decoded in n_batch batches; tg: n_gen tokens decoded one at a
time; the KV cache is cleared before each repetition; tokenization and sampling are not timed. In the
same run, a bare llama-cpp-python decode loop on the same context (the overhead baseline) is
measured interleaved with the harness's own, so their ratio survives a noisy machine.
"""

from __future__ import annotations

import ctypes
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import EngineError
from harness.llama.session import Session


@dataclass(frozen=True)
class TestResult:
    test: str  # "pp512" / "tg128"
    n_prompt: int
    n_gen: int
    samples_s: tuple[float, ...]
    baseline_samples_s: tuple[float, ...]

    @property
    def n_tokens(self) -> int:
        return self.n_prompt or self.n_gen

    @property
    def samples_ts(self) -> tuple[float, ...]:
        return tuple(self.n_tokens / s for s in self.samples_s)

    @property
    def avg_ts(self) -> float:
        return statistics.fmean(self.samples_ts)

    @property
    def stddev_ts(self) -> float:
        return statistics.stdev(self.samples_ts) if len(self.samples_ts) > 1 else 0.0

    @property
    def baseline_avg_ts(self) -> float:
        return statistics.fmean(self.n_tokens / s for s in self.baseline_samples_s) if self.baseline_samples_s else 0.0

    @property
    def overhead_ratio(self) -> float:
        """The harness's speed over the bare loop's (1.0: no overhead): the median of the per-repetition
        ratios, each repetition's pair run back to back, so that drift on a shared machine cancels."""
        if not self.baseline_samples_s:
            return 0.0
        return statistics.median(b / h for h, b in zip(self.samples_s, self.baseline_samples_s))


def _random_tokens(n_vocab: int, n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(n_vocab) for _ in range(n)]


def _bare_pp(s: Session, tokens: list[int]) -> float:
    """The baseline: llama_batch_get_one + llama_decode, nothing else."""
    api, ctx = s.api, s.lm.ctx
    api.llama_memory_clear(api.llama_get_memory(ctx), True)
    arr = (api.llama_token * len(tokens))(*tokens)
    t = time.perf_counter()
    for start in range(0, len(tokens), s.n_batch):
        n = min(s.n_batch, len(tokens) - start)
        ptr = ctypes.cast(
            ctypes.addressof(arr) + start * ctypes.sizeof(api.llama_token), ctypes.POINTER(api.llama_token)
        )
        if api.llama_decode(ctx, api.llama_batch_get_one(ptr, n)) != 0:
            raise EngineError("llama_decode failed in the baseline loop")
    api.llama_synchronize(ctx)
    return time.perf_counter() - t


def _bare_tg(s: Session, tokens: list[int]) -> float:
    api, ctx = s.api, s.lm.ctx
    api.llama_memory_clear(api.llama_get_memory(ctx), True)
    one = (api.llama_token * 1)()
    t = time.perf_counter()
    for tok in tokens:
        one[0] = tok
        if api.llama_decode(ctx, api.llama_batch_get_one(one, 1)) != 0:
            raise EngineError("llama_decode failed in the baseline loop")
    api.llama_synchronize(ctx)
    return time.perf_counter() - t


def _harness_pp(s: Session, tokens: list[int]) -> float:
    s.clear()
    t = time.perf_counter()
    s.decode(tokens, 0)
    s.api.llama_synchronize(s.lm.ctx)
    return time.perf_counter() - t


def _harness_tg(s: Session, tokens: list[int]) -> float:
    s.clear()
    t = time.perf_counter()
    for pos, tok in enumerate(tokens):
        s.decode([tok], pos)
    s.api.llama_synchronize(s.lm.ctx)
    return time.perf_counter() - t


def run_bench(s: Session, n_prompt: int, n_gen: int, reps: int, progress: Callable[[str], None]) -> list[TestResult]:
    results = []
    for test, n, harness_fn, bare_fn in (("pp", n_prompt, _harness_pp, _bare_pp), ("tg", n_gen, _harness_tg, _bare_tg)):
        if n <= 0:
            continue
        tokens = _random_tokens(s.n_vocab, n, seed=n)
        progress(f"{test}{n}: warm-up")
        harness_fn(s, tokens)
        bare_fn(s, tokens)
        ours, bare = [], []
        for r in range(reps):
            progress(f"{test}{n}: repetition {r + 1}/{reps}")
            # alternate which goes first, so drift on a shared machine hits both alike
            if r % 2:
                bare.append(bare_fn(s, tokens))
                ours.append(harness_fn(s, tokens))
            else:
                ours.append(harness_fn(s, tokens))
                bare.append(bare_fn(s, tokens))
        results.append(
            TestResult(f"{test}{n}", n if test == "pp" else 0, n if test == "tg" else 0, tuple(ours), tuple(bare))
        )
    return results


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
