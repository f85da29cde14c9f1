"""An open model with llama.cpp exactly as planned: load with the plan's split, decode, stream.

Drives llama-cpp-python's low-level API (llama_decode, llama's sampler chain) directly, so the
per-token cost is llama.cpp's plus a few Python calls; harness.bench measures that overhead against a
bare decode loop. What llama.cpp reports while loading (buffers per device, layers offloaded) is
kept, never assumed.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from harness.errors import HarnessError, UsageError
from harness.llama.engine import EngineError, EngineReport, Loaded, context_settings, loaded_model, report_of
from harness.offload.placement import HOST, ContextParams, n_cpu_moe_patterns
from harness.offload.solver import Plan


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    prompt_s: float
    generation_s: float
    stopped: str  # "eog", "max_tokens", "interrupted", "context"
    token_ids: tuple[int, ...] = ()  # the generated tokens, in order (an end-of-generation token not included)

    @property
    def pp_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def tg_tokens_per_s(self) -> float:
        # the first generated token comes out of the prompt's decode: count the rest
        n = self.completion_tokens - 1
        return n / self.generation_s if n > 0 and self.generation_s > 0 else 0.0


class Session:
    """An open model and context. Use `open_session`."""

    def __init__(self, lm: Loaded, cp: ContextParams, plan: Plan | None, path: str, devices: tuple[str, ...]) -> None:
        self.lm = lm
        self.api = lm.llama_cpp
        self.cp = cp
        self.plan = plan
        self.path = path
        self.devices = devices
        self.vocab = self.api.llama_model_get_vocab(lm.model)
        self.n_vocab = self.api.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = self.api.llama_n_ctx(lm.ctx)
        self.n_batch = self.api.llama_n_batch(lm.ctx)

    def report(self) -> EngineReport:
        """llama.cpp's own account of the load so far (buffers per device, layers offloaded)."""
        return report_of(
            self.path,
            self.lm.capture,
            n_gpu_layers=self.plan.n_gpu_layers if self.plan else 0,
            devices=self.devices,
            type_k=self.cp.type_k,
            type_v=self.cp.type_v,
            no_alloc=False,
            load_s=self.lm.load_s,
        )

    # -- tokens ------------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, max_tokens: int | None = None) -> list[int]:
        """``text`` as tokens. With ``max_tokens``, a text that cannot be that short is refused from its
        beginning alone: llama_tokenize took 11 GB for a 100 MB prompt."""
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: bytes that were not UTF-8 where the text came from
            raise UsageError(f"the prompt is not UTF-8 text (at character {exc.start})") from None
        if max_tokens is not None and len(raw) > (max_tokens + 1) * _BYTES_PER_TOKEN_AT_MOST:
            head = raw[: (max_tokens + 1) * _BYTES_PER_TOKEN_AT_MOST].decode("utf-8", "ignore").encode()  # whole chars
            n = len(self._tokenize(head, add_special))
            # the cut can change how the last few tokens of the head merge, never the count by more
            if n > max_tokens + _TOKENS_CHANGED_BY_A_CUT:
                raise HarnessError(
                    f"the prompt ({len(raw):,} bytes) has more than {max_tokens} tokens in its first "
                    f"{len(head):,} bytes; the context holds {self.n_ctx}: raise --ctx or shorten the prompt"
                )
        return self._tokenize(raw, add_special)

    def _tokenize(self, raw: bytes, add_special: bool) -> list[int]:
        cap = len(raw) + 16
        buf = (self.api.llama_token * cap)()
        n = self.api.llama_tokenize(self.vocab, raw, len(raw), buf, cap, add_special, True)
        if n < 0:
            cap = -n
            buf = (self.api.llama_token * cap)()
            n = self.api.llama_tokenize(self.vocab, raw, len(raw), buf, cap, add_special, True)
        if n < 0:
            raise EngineError(f"llama.cpp could not tokenize the prompt ({n})")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.api.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.api.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def is_end(self, token: int) -> bool:
        return bool(self.api.llama_vocab_is_eog(self.vocab, token))

    # -- decoding ----------------------------------------------------------------------------------

    def clear(self) -> None:
        self.api.llama_memory_clear(self.api.llama_get_memory(self.lm.ctx), True)

    def decode(self, tokens: list[int], pos0: int = 0) -> None:
        """Decode tokens in batches of n_batch after what the context holds (pos0 is where they start:
        llama.cpp places them itself, after the sequence's last position); logits for the last token.

        llama_batch_get_one is the cheapest call there is: the per-token cost is llama.cpp's own."""
        api = self.api
        arr = (api.llama_token * len(tokens))(*tokens)
        base = ctypes.addressof(arr)
        size = ctypes.sizeof(api.llama_token)
        for start in range(0, len(tokens), self.n_batch):
            n = min(self.n_batch, len(tokens) - start)
            ptr = ctypes.cast(base + start * size, ctypes.POINTER(api.llama_token))
            status = api.llama_decode(self.lm.ctx, api.llama_batch_get_one(ptr, n))
            self.lm.capture.check_interrupt()
            if status != 0:
                raise EngineError(
                    f"llama_decode failed with status {status}" + (" (the context is full)" if status == 1 else "")
                )

    def sampler(self, s: Sampling) -> int:
        chain = self.api.llama_sampler_chain_init(self.api.llama_sampler_chain_default_params())
        if s.temperature <= 0:
            self.api.llama_sampler_chain_add(chain, self.api.llama_sampler_init_greedy())
        else:
            if s.top_p < 1.0:
                self.api.llama_sampler_chain_add(chain, self.api.llama_sampler_init_top_p(s.top_p, 1))
            self.api.llama_sampler_chain_add(chain, self.api.llama_sampler_init_temp(s.temperature))
            self.api.llama_sampler_chain_add(chain, self.api.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        return chain

    def generate(
        self,
        prompt_tokens: list[int],
        max_tokens: int,
        sampling: Sampling = Sampling(),
        on_piece: Callable[[str], None] | None = None,
    ) -> Generation:
        """Prompt, then up to max_tokens tokens one at a time. Ctrl-C stops cleanly with what was made."""
        if not prompt_tokens:  # llama.cpp would sample with no logits: GGML_ASSERT(logits != nullptr), an abort
            raise UsageError("the prompt is empty (no tokens): give some text to answer")
        if len(prompt_tokens) >= self.n_ctx:
            raise HarnessError(
                f"the prompt has {len(prompt_tokens)} tokens; the context holds {self.n_ctx}: raise --ctx"
            )
        self.clear()
        chain = self.sampler(sampling)
        pieces: list[bytes] = []
        ids: list[int] = []
        emitted = 0  # bytes of `pieces` already handed to on_piece (UTF-8 may split across tokens)
        stopped = "max_tokens"
        n_gen = 0
        t0 = time.perf_counter()
        prompt_s = gen_s = 0.0
        try:
            self.decode(prompt_tokens, 0)
            prompt_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            pos = len(prompt_tokens)
            while n_gen < max_tokens:
                token = self.api.llama_sampler_sample(chain, self.lm.ctx, -1)
                if self.is_end(token):
                    stopped = "eog"
                    break
                n_gen += 1
                ids.append(token)
                pieces.append(self.piece(token))
                if on_piece is not None:
                    text = b"".join(pieces)
                    good = _utf8_prefix(text)
                    if good > emitted:
                        on_piece(text[emitted:good].decode("utf-8"))
                        emitted = good
                if n_gen >= max_tokens:
                    break
                if pos >= self.n_ctx:
                    stopped = "context"
                    break
                self.decode([token], pos)
                pos += 1
            gen_s = time.perf_counter() - t1
        except KeyboardInterrupt:
            stopped = "interrupted"
            gen_s = time.perf_counter() - t0 - prompt_s
        finally:
            self.api.llama_sampler_free(chain)
        text = b"".join(pieces).decode("utf-8", errors="replace")
        if on_piece is not None and len(b"".join(pieces)) > emitted:
            on_piece(b"".join(pieces)[emitted:].decode("utf-8", errors="replace"))
        return Generation(text, len(prompt_tokens), n_gen, prompt_s, gen_s, stopped, tuple(ids))


# Text tokenizes to far fewer bytes per token than this (the longest token text is 48 bytes in gemma3's
# vocabulary, 81 in SmolLM2's, special tokens included), so a prompt's first (n + 1) * 64 bytes hold more
# than n tokens unless it is made of such rarities, and then it is tokenized whole. Cutting the text
# changes how the tokens at the cut merge, not the count by more than a few.
_BYTES_PER_TOKEN_AT_MOST = 64
_TOKENS_CHANGED_BY_A_CUT = 16


def _utf8_prefix(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that is complete UTF-8 (a token may end mid-character)."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            data[:cut].decode("utf-8")
            return cut
        except UnicodeDecodeError:
            continue
    return 0


def tensor_overrides(plan: Plan | None) -> tuple[tuple[str, str], ...]:
    """The plan's tensor overrides as llama_model_params.tensor_buft_overrides takes them: the routed experts
    of blocks 0..n_cpu_moe-1 to the host (llama.cpp's --n-cpu-moe), the same patterns the plan was placed with."""
    return tuple((p, HOST) for p in n_cpu_moe_patterns(plan.n_cpu_moe)) if plan else ()


@contextmanager
def open_session(
    path: str, plan: Plan | None, cp: ContextParams, devices: tuple[str, ...] = (), n_threads: int | None = None
) -> Iterator[Session]:
    """Load ``path`` with the plan's n_gpu_layers, split and tensor overrides (its experts kept on the host)
    on ``devices`` (RPC endpoints; none: local GPUs where the engine has CUDA) and yield a Session."""
    ngl = plan.n_gpu_layers if plan else 0
    split = plan.tensor_split if plan and len(devices) > 1 else ()
    with loaded_model(
        path,
        ngl,
        cp.n_ctx,
        devices,
        **context_settings(cp),
        n_threads=n_threads,
        tensor_split=split,
        tensor_overrides=tensor_overrides(plan),
    ) as lm:
        yield Session(lm, cp, plan, path, devices)
