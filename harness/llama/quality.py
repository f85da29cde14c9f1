"""Quality of a quantized variant against a reference: perplexity, KL divergence, top-1 agreement.

The method is llama.cpp's perplexity tool's: the text is tokenized once, cut into chunks of n_ctx
tokens each starting with BOS, every chunk decoded with logits for all positions, and only the second
half of each chunk scored (so every scored token has at least n_ctx/2 tokens of context). KL divergence
and top-1 agreement compare the variant's next-token distribution with the reference's at the same
positions, both models decoding the same chunk side by side.

The text is real prose that exists on every machine with Python: the English reference documentation
that CPython ships in `pydoc_data.topics` (never generated).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.errors import EngineError, UsageError
from harness.llama.engine import decode_batch
from harness.llama.session import Session


def default_text() -> str:
    """CPython's own documentation prose (pydoc_data.topics), in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


@dataclass(frozen=True)
class Quality:
    perplexity: float
    kld: float | None  # mean KL(reference || variant), nats; None for the reference itself
    top1_agreement: float | None
    n_tokens_scored: int
    n_chunks: int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _chunk_logprobs(s: Session, tokens: list[int], first: int) -> np.ndarray:
    """Log-probabilities (float32, [n_ctx - 1 - first, n_vocab]) predicting tokens first+1.. of the chunk."""
    api, ctx = s.api, s.lm.ctx
    s.clear()
    n = len(tokens)
    if decode_batch(api, ctx, tokens, lambda i: first <= i < n - 1) != 0:
        raise EngineError(f"llama_decode failed while scoring {s.path}")
    rows = []
    for i in range(first, n - 1):
        ptr = api.llama_get_logits_ith(ctx, i)
        rows.append(np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (s.n_vocab,)).copy())
    return _log_softmax(np.stack(rows).astype(np.float64)).astype(np.float32)


def chunks_of(s: Session, text: str, n_ctx: int, max_chunks: int) -> list[list[int]]:
    """Up to ``max_chunks`` chunks of ``n_ctx`` tokens, each starting with BOS; UsageError for a text too short
    to fill one."""
    tokens = s.tokenize(text, add_special=False)
    if len(tokens) < n_ctx:
        raise UsageError(
            f"the text has {len(tokens)} tokens; scoring needs at least {n_ctx} (one chunk of "
            f"{n_ctx} tokens): give a longer text"
        )
    bos = s.api.llama_vocab_bos(s.vocab)
    out = []
    for start in range(0, len(tokens) - n_ctx + 1, n_ctx):
        chunk = tokens[start : start + n_ctx]
        if bos >= 0:
            chunk = [bos] + chunk[1:]
        out.append(chunk)
        if len(out) == max_chunks:
            break
    return out


def measure(
    reference: Session,
    variants: dict[str, Session],
    text: str,
    n_ctx: int = 512,
    max_chunks: int = 8,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Quality]:
    """Perplexity of the reference and of each variant, and each variant's KLD / top-1 agreement with it."""
    chunks = chunks_of(reference, text, n_ctx, max_chunks)
    first = n_ctx // 2
    nll = {name: 0.0 for name in ["reference", *variants]}
    kld = {name: 0.0 for name in variants}
    agree = {name: 0 for name in variants}
    n_scored = 0
    for c, chunk in enumerate(chunks):
        if progress:
            progress(f"quality: chunk {c + 1}/{len(chunks)}")
        targets = np.asarray(chunk[first + 1 :])
        ref = _chunk_logprobs(reference, chunk, first)
        idx = np.arange(len(targets))
        nll["reference"] -= float(ref[idx, targets].sum())
        p_ref = np.exp(ref)
        top_ref = ref.argmax(axis=1)
        for name, s in variants.items():
            var = _chunk_logprobs(s, chunk, first)
            nll[name] -= float(var[idx, targets].sum())
            kld[name] += float((p_ref * (ref - var)).sum())
            agree[name] += int((var.argmax(axis=1) == top_ref).sum())
        n_scored += len(targets)
    out = {"reference": Quality(math.exp(nll["reference"] / n_scored), None, None, n_scored, len(chunks))}
    for name in variants:
        out[name] = Quality(
            math.exp(nll[name] / n_scored), kld[name] / n_scored, agree[name] / n_scored, n_scored, len(chunks)
        )
    return out
