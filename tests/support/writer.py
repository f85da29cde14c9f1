"""Valid synthetic models written with gguf-py's own GGUFWriter (an independent writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFWriter
from gguf import GGMLQuantizationType as T


def add_raw_tensor(w: GGUFWriter, name: str, shape: tuple[int, ...], ttype: T, seed: int = 0) -> None:
    """A tensor of any ggml type: random bytes of exactly the size ggml gives it (shape in ggml order)."""
    block, size = GGML_QUANT_SIZES[ttype]
    n = int(np.prod(shape)) // block * size
    data = np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8)
    if ttype in (T.F32, T.F16):  # keep floats finite
        data = np.zeros(n, dtype=np.uint8)
    # with uint8 data, gguf-py takes the shape in bytes (numpy order: the row last)
    byte_shape = tuple(reversed(shape[1:])) + (shape[0] // block * size,)
    w.add_tensor(name, data.reshape(byte_shape), raw_shape=byte_shape, raw_dtype=ttype)


def write_llama(
    path: Path,
    n_layer: int = 3,
    n_embd: int = 256,
    n_head: int = 8,
    n_head_kv: int = 2,
    n_ff: int = 512,
    n_vocab: int = 64,
    qtype: T = T.Q4_K,
    split_max_tensors: int = 0,
    extra_kv: dict | None = None,
) -> list[Path]:
    """A llama-shaped model; returns the file(s) written (several with split_max_tensors)."""
    w = GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    w.add_name("synthetic llama")
    w.add_block_count(n_layer)
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_file_type(15)
    w.add_token_list([f"tok{i}" for i in range(n_vocab)])
    w.add_token_scores([float(-i) for i in range(n_vocab)])
    for k, v in (extra_kv or {}).items():
        w.add_key_value(k, *v)
    head = n_embd // n_head
    add_raw_tensor(w, "token_embd.weight", (n_embd, n_vocab), T.Q8_0 if n_embd % 32 == 0 else T.F16)
    for i in range(n_layer):
        add_raw_tensor(w, f"blk.{i}.attn_norm.weight", (n_embd,), T.F32)
        add_raw_tensor(w, f"blk.{i}.attn_q.weight", (n_embd, n_embd), qtype, seed=i)
        add_raw_tensor(w, f"blk.{i}.attn_k.weight", (n_embd, head * n_head_kv), qtype, seed=i + 1)
        add_raw_tensor(w, f"blk.{i}.attn_v.weight", (n_embd, head * n_head_kv), T.Q6_K, seed=i + 2)
        add_raw_tensor(w, f"blk.{i}.ffn_down.weight", (n_ff, n_embd), T.Q6_K, seed=i + 3)
    add_raw_tensor(w, "output_norm.weight", (n_embd,), T.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if split_max_tensors:
        return sorted(path.parent.glob(path.stem + "-*-of-*.gguf"))
    return [path]
