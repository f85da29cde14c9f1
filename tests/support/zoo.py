"""A zoo of tiny synthetic models, one per memory type and weight layout llama.cpp has, written with
gguf-py's GGUFWriter.

Each loads in the llama.cpp of llama-cpp-python 0.3.36 (tensor lists from its src/models/*.cpp
load_arch_tensors). Float weights are zeros, quantized ones random bytes: these models are for memory,
not for text. Shapes are in ggml order (ne0 first); widths are multiples of 32 so that a q8_0 KV cache is
allowed. The helpers at the end read llama.cpp's model buffer lines and print a placement the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf import GGUFWriter

from harness.offload.placement import Placement
from tests.support.writer import add_raw_tensor

N_VOCAB = 64
# llama.cpp's vocabulary loader looks these up by text in a model named like Phi-3 (llama-vocab.cpp, per token
# attributes), and SentencePiece's ids for <unk>, <s>, </s> are 0, 1, 2
_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|endoftext|>"]


def _write(
    path: Path,
    arch: str,
    kvs: dict[str, object],
    tensors: dict[str, tuple[int, ...]],
    types: dict[str, T] | None = None,
    n_vocab: int = N_VOCAB,
) -> Path:
    """kvs: key without the "<arch>." prefix -> an int (UINT32), a float (FLOAT32), a bool, a str, or a list
    of ints / bools (an array). types: tensor name -> its ggml type (F32 unless named); quantized tensors
    hold random bytes of their exact size."""
    w = GGUFWriter(path, arch)
    w.add_name(f"zoo {arch}")
    w.add_file_type(0)  # ALL_F32
    w.add_context_length(32768)
    w.add_tokenizer_model("llama")
    w.add_token_list(_SPECIAL_TOKENS + [f"tok{i}" for i in range(len(_SPECIAL_TOKENS), n_vocab)])
    w.add_token_scores([float(-i) for i in range(n_vocab)])
    for key, value in kvs.items():
        full = key if key.startswith("general.") else f"{arch}.{key}"
        if isinstance(value, bool):
            w.add_key_value(full, value, V.BOOL)
        elif isinstance(value, int):
            w.add_key_value(full, value, V.UINT32)
        elif isinstance(value, float):
            w.add_key_value(full, value, V.FLOAT32)
        elif isinstance(value, str):
            w.add_key_value(full, value, V.STRING)
        elif isinstance(value, list) and value and isinstance(value[0], bool):
            w.add_key_value(full, value, V.ARRAY, V.BOOL)
        else:
            w.add_key_value(full, value, V.ARRAY, V.UINT32)
    types = types or {}
    for i, (name, shape) in enumerate(tensors.items()):
        add_raw_tensor(w, name, shape, types.get(name, T.F32), seed=i)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _matrices(tensors: dict[str, tuple[int, ...]], ttype: T, *names: str) -> dict[str, T]:
    """``ttype`` for every tensor whose name ends with one of ``names`` (e.g. "attn_q.weight")."""
    return {n: ttype for n in tensors if n.endswith(names)}


def _common(n_layer: int, n_embd: int, n_ff: int = 0, eps: str = "attention.layer_norm_rms_epsilon") -> dict:
    kvs: dict[str, object] = {"block_count": n_layer, "embedding_length": n_embd, eps: 1e-5}
    if n_ff:
        kvs["feed_forward_length"] = n_ff
    return kvs


def _io(n_embd: int, output: bool = True, norm: str = "output_norm.weight") -> dict[str, tuple[int, ...]]:
    t = {"token_embd.weight": (n_embd, N_VOCAB), norm: (n_embd,)}
    if output:
        t["output.weight"] = (n_embd, N_VOCAB)
    return t


def _attn(i: int, n_embd: int, n_q: int, n_kv: int, out_in: int | None = None) -> dict[str, tuple[int, ...]]:
    return {
        f"blk.{i}.attn_q.weight": (n_embd, n_q),
        f"blk.{i}.attn_k.weight": (n_embd, n_kv),
        f"blk.{i}.attn_v.weight": (n_embd, n_kv),
        f"blk.{i}.attn_output.weight": (out_in or n_q, n_embd),
    }


def _ffn(i: int, n_embd: int, n_ff: int, norm: bool = True) -> dict[str, tuple[int, ...]]:
    t = {
        f"blk.{i}.ffn_gate.weight": (n_embd, n_ff),
        f"blk.{i}.ffn_down.weight": (n_ff, n_embd),
        f"blk.{i}.ffn_up.weight": (n_embd, n_ff),
    }
    if norm:
        t[f"blk.{i}.ffn_norm.weight"] = (n_embd,)
    return t


def _experts(i: int, n_embd: int, n_ff_exp: int, n_expert: int) -> dict[str, tuple[int, ...]]:
    return {
        f"blk.{i}.ffn_gate_inp.weight": (n_embd, n_expert),
        f"blk.{i}.ffn_gate_exps.weight": (n_embd, n_ff_exp, n_expert),
        f"blk.{i}.ffn_down_exps.weight": (n_ff_exp, n_embd, n_expert),
        f"blk.{i}.ffn_up_exps.weight": (n_embd, n_ff_exp, n_expert),
    }


def _shared_expert(i: int, n_embd: int, n_ff: int) -> dict[str, tuple[int, ...]]:
    return {
        f"blk.{i}.ffn_gate_shexp.weight": (n_embd, n_ff),
        f"blk.{i}.ffn_down_shexp.weight": (n_ff, n_embd),
        f"blk.{i}.ffn_up_shexp.weight": (n_embd, n_ff),
    }


# --- standard attention -------------------------------------------------------------------------------------------


def write_qwen2(path: Path) -> Path:
    """Standard GQA: 4 layers, 4 query heads, 2 KV heads of 32."""
    n_layer, n_embd, n_ff, head = 4, 128, 256, 32
    kvs = _common(n_layer, n_embd, n_ff) | {"attention.head_count": 4, "attention.head_count_kv": 2}
    t = _io(n_embd)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | _attn(i, n_embd, n_embd, 2 * head) | _ffn(i, n_embd, n_ff)
    return _write(path, "qwen2", kvs, t)


# --- MLA -----------------------------------------------------------------------------------------------------------


def write_deepseek2(path: Path) -> Path:
    """MLA (kv_lora_rank 64, rope 32): a latent K row of 96 per cell, no V; one dense layer, then MoE."""
    n_layer, n_embd, n_ff, n_head = 3, 128, 256, 4
    rank, rope, nope, v_mla, n_ff_exp, n_expert = 64, 32, 32, 32, 64, 4
    kvs = _common(n_layer, n_embd, n_ff) | {
        "attention.head_count": n_head,
        "attention.head_count_kv": 1,
        "attention.key_length": rank + rope,
        "attention.value_length": rank,
        "attention.key_length_mla": nope + rope,
        "attention.value_length_mla": v_mla,
        "attention.q_lora_rank": 0,
        "attention.kv_lora_rank": rank,
        "rope.dimension_count": rope,
        "leading_dense_block_count": 1,
        "expert_feed_forward_length": n_ff_exp,
        "expert_count": n_expert,
        "expert_used_count": 2,
        "expert_shared_count": 1,
    }
    t = _io(n_embd)
    for i in range(n_layer):
        t |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_kv_a_norm.weight": (rank,),
            f"blk.{i}.attn_q.weight": (n_embd, n_head * (nope + rope)),
            f"blk.{i}.attn_kv_a_mqa.weight": (n_embd, rank + rope),
            f"blk.{i}.attn_k_b.weight": (nope, rank, n_head),
            f"blk.{i}.attn_v_b.weight": (rank, v_mla, n_head),
            f"blk.{i}.attn_output.weight": (n_head * v_mla, n_embd),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
        }
        if i < 1:
            t |= _ffn(i, n_embd, n_ff, norm=False)
        else:
            t |= _experts(i, n_embd, n_ff_exp, n_expert) | _shared_expert(i, n_embd, n_ff_exp)
    return _write(path, "deepseek2", kvs, t)


# --- sliding windows -----------------------------------------------------------------------------------------------


def write_gpt_oss(path: Path, expert_type: T = T.F32) -> Path:
    """gpt-oss without a pattern key: llama.cpp's default alternates sliding (even) and full layers."""
    n_layer, n_embd, n_head, n_head_kv, head, n_ff_exp, n_expert = 4, 128, 4, 2, 32, 64, 4
    kvs = _common(n_layer, n_embd, 256) | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.key_length": head,
        "attention.value_length": head,
        "rope.dimension_count": head,
        "attention.sliding_window": 128,
        "expert_feed_forward_length": n_ff_exp,
        "expert_count": n_expert,
        "expert_used_count": 2,
    }
    t = _io(n_embd)
    for i in range(n_layer):
        t |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.post_attention_norm.weight": (n_embd,),
            f"blk.{i}.attn_sinks.weight": (n_head,),
            f"blk.{i}.attn_output.bias": (n_embd,),
            f"blk.{i}.ffn_gate_inp.bias": (n_expert,),
            f"blk.{i}.ffn_gate_exps.bias": (n_ff_exp, n_expert),
            f"blk.{i}.ffn_down_exps.bias": (n_embd, n_expert),
            f"blk.{i}.ffn_up_exps.bias": (n_ff_exp, n_expert),
        }
        t |= _attn(i, n_embd, n_head * head, n_head_kv * head) | _experts(i, n_embd, n_ff_exp, n_expert)
    return _write(path, "gpt-oss", kvs, t, _matrices(t, expert_type, "_exps.weight"))


def write_gpt_oss_mxfp4(path: Path) -> Path:
    """gpt-oss as published: MXFP4 experts (ggml type MXFP4, 17 bytes per 32), which an AVX2 or NEON CPU
    repacks where the host holds them."""
    return write_gpt_oss(path, T.MXFP4)


def write_llama4(path: Path) -> Path:
    """llama4 without a window key: chunked attention, 8192-token chunks on 3 of every 4 layers."""
    n_layer, n_embd, n_ff, n_head, n_head_kv, n_expert = 4, 128, 256, 4, 2, 4
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff) | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "expert_feed_forward_length": 64,
        "expert_count": n_expert,
        "expert_used_count": 1,
        "interleave_moe_layer_step": 2,
    }
    t = _io(n_embd)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,), f"blk.{i}.ffn_norm.weight": (n_embd,)}
        t |= _attn(i, n_embd, n_embd, n_head_kv * head)
        if (i + 1) % 2 == 0:
            t |= _experts(i, n_embd, 64, n_expert) | _shared_expert(i, n_embd, 64)
        else:
            t |= _ffn(i, n_embd, n_ff, norm=False)
    return _write(path, "llama4", kvs, t)


def write_cohere2(path: Path) -> Path:
    """cohere2 without a pattern key: 3 sliding layers then a full one."""
    n_layer, n_embd, n_ff, n_head, n_head_kv = 8, 128, 256, 4, 1
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff, eps="attention.layer_norm_epsilon") | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.sliding_window": 256,
        "logit_scale": 1.0,
    }
    t = _io(n_embd, output=False)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)}
        t |= _attn(i, n_embd, n_embd, n_head_kv * head) | _ffn(i, n_embd, n_ff, norm=False)
    return _write(path, "cohere2", kvs, t)


def write_qwen3(path: Path) -> Path:
    """Q/K norms, tied output, Q4_0 matrices and embeddings (a 2048-token vocabulary, so that the output's
    repacked copy of token_embd, made where the host holds the output layer, shows in the printed MiB)."""
    n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab = 4, 128, 256, 4, 2, 2048
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff) | {"attention.head_count": n_head, "attention.head_count_kv": n_head_kv}
    t = {"token_embd.weight": (n_embd, n_vocab), "output_norm.weight": (n_embd,)}
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | _attn(i, n_embd, n_embd, n_head_kv * head)
        t |= {f"blk.{i}.attn_q_norm.weight": (head,), f"blk.{i}.attn_k_norm.weight": (head,)} | _ffn(i, n_embd, n_ff)
    types = _matrices(t, T.Q4_0, "token_embd.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight")
    types |= _matrices(t, T.Q4_0, "attn_output.weight", "ffn_gate.weight", "ffn_down.weight", "ffn_up.weight")
    return _write(path, "qwen3", kvs, t, types, n_vocab=n_vocab)


def write_qwen3moe(path: Path) -> Path:
    """MoE on every layer: 8 IQ4_NL experts of 64 (repacked on an AVX2 or NEON host), Q8_0 attention (not
    repacked on x86), untied Q8_0 output."""
    n_layer, n_embd, n_head, n_head_kv, n_ff_exp, n_expert = 3, 128, 4, 2, 64, 8
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, 256) | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "expert_feed_forward_length": n_ff_exp,
        "expert_count": n_expert,
        "expert_used_count": 2,
    }
    t = _io(n_embd)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,), f"blk.{i}.ffn_norm.weight": (n_embd,)}
        t |= _attn(i, n_embd, n_embd, n_head_kv * head) | _experts(i, n_embd, n_ff_exp, n_expert)
        t |= {f"blk.{i}.attn_q_norm.weight": (head,), f"blk.{i}.attn_k_norm.weight": (head,)}
    types = _matrices(t, T.IQ4_NL, "_exps.weight")
    types |= _matrices(t, T.Q8_0, "output.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight")
    return _write(path, "qwen3moe", kvs, t, types)


def write_gemma2(path: Path) -> Path:
    """A per-layer sliding pattern in the file (not gemma2's default of every other layer), soft-capping keys,
    post-norms, tied output, F16 matrices."""
    n_layer, n_embd, n_ff, n_head, n_head_kv = 4, 128, 256, 4, 2
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff) | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.sliding_window": 256,
        "attention.sliding_window_pattern": [True, True, False, True],
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
    }
    t = _io(n_embd, output=False)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,), f"blk.{i}.post_attention_norm.weight": (n_embd,)}
        t |= _attn(i, n_embd, n_embd, n_head_kv * head) | _ffn(i, n_embd, n_ff)
        t |= {f"blk.{i}.post_ffw_norm.weight": (n_embd,)}
    types = _matrices(t, T.F16, "token_embd.weight", "_q.weight", "_k.weight", "_v.weight", "attn_output.weight")
    return _write(path, "gemma2", kvs, t, types | _matrices(t, T.F16, "ffn_gate.weight", "ffn_up.weight"))


def write_phi3(path: Path) -> Path:
    """Fused QKV, longrope factors (rope_factors_long/short, per layer in llama.cpp), a sliding_window key
    that this llama.cpp ignores for phi3 (full attention everywhere), Q4_K matrices and output."""
    n_layer, n_embd, n_ff, n_head, n_head_kv = 3, 256, 256, 4, 2
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff) | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.sliding_window": 128,
        "rope.dimension_count": head,
    }
    t = _io(n_embd) | {"rope_factors_long.weight": (head // 2,), "rope_factors_short.weight": (head // 2,)}
    for i in range(n_layer):
        t |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_qkv.weight": (n_embd, n_embd + 2 * n_head_kv * head),
            f"blk.{i}.attn_output.weight": (n_embd, n_embd),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_down.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": (n_embd, 2 * n_ff),
        }
    types = _matrices(t, T.Q4_K, "output.weight", "attn_qkv.weight", "attn_output.weight", "ffn_down.weight")
    return _write(path, "phi3", kvs, t, types | _matrices(t, T.Q4_K, "ffn_up.weight"))


def write_command_r(path: Path) -> Path:
    """Layer norms with an epsilon key, logit scale, no FFN norm, output always tied (a duplicated tensor)."""
    n_layer, n_embd, n_ff, n_head, n_head_kv = 3, 128, 256, 4, 1
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff, eps="attention.layer_norm_epsilon") | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "logit_scale": 0.0625,
    }
    t = _io(n_embd, output=False)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)}
        t |= _attn(i, n_embd, n_embd, n_head_kv * head) | _ffn(i, n_embd, n_ff, norm=False)
    return _write(path, "command-r", kvs, t)


def write_starcoder2(path: Path) -> Path:
    """Biases everywhere (norms, Q/K/V/output, FFN), no gate; Q4_0 matrices, whose ffn_up has 228 rows: not
    a multiple of 8, so no CPU repacks it (its ffn_down, 228 wide, is F32: Q4_0 rows take 32s)."""
    n_layer, n_embd, n_ff, n_head, n_head_kv = 3, 128, 228, 4, 2
    head = n_embd // n_head
    n_kv = n_head_kv * head
    kvs = _common(n_layer, n_embd, n_ff, eps="attention.layer_norm_epsilon") | {
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
    }
    t = _io(n_embd) | {"output_norm.bias": (n_embd,)}
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,), f"blk.{i}.attn_norm.bias": (n_embd,)}
        t |= _attn(i, n_embd, n_embd, n_kv)
        t |= {f"blk.{i}.attn_q.bias": (n_embd,), f"blk.{i}.attn_k.bias": (n_kv,), f"blk.{i}.attn_v.bias": (n_kv,)}
        t |= {f"blk.{i}.attn_output.bias": (n_embd,)}
        t |= {f"blk.{i}.ffn_norm.weight": (n_embd,), f"blk.{i}.ffn_norm.bias": (n_embd,)}
        t |= {f"blk.{i}.ffn_down.weight": (n_ff, n_embd), f"blk.{i}.ffn_down.bias": (n_embd,)}
        t |= {f"blk.{i}.ffn_up.weight": (n_embd, n_ff), f"blk.{i}.ffn_up.bias": (n_ff,)}
    types = _matrices(t, T.Q4_0, "output.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight")
    return _write(path, "starcoder2", kvs, t, types | _matrices(t, T.Q4_0, "attn_output.weight", "ffn_up.weight"))


def write_llama(path: Path) -> Path:
    """Llama 3.1 style rope_freqs (per layer in llama.cpp) with a head of 4096 (attention.key_length), so
    that the further device's copy (8 KiB) shows in the printed MiB; Q4_K matrices, embeddings and output."""
    n_layer, n_embd, n_ff, head = 2, 256, 256, 4096
    kvs = _common(n_layer, n_embd, n_ff) | {
        "attention.head_count": 1,
        "attention.head_count_kv": 1,
        "attention.key_length": head,
        "attention.value_length": head,
        "rope.dimension_count": head,
    }
    t = _io(n_embd) | {"rope_freqs.weight": (head // 2,)}
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | _attn(i, n_embd, head, head) | _ffn(i, n_embd, n_ff)
    types = _matrices(t, T.Q4_K, "token_embd.weight", "output.weight", "_q.weight", "_k.weight", "_v.weight")
    types |= _matrices(t, T.Q4_K, "attn_output.weight", "ffn_gate.weight", "ffn_down.weight", "ffn_up.weight")
    return _write(path, "llama", kvs, t, types)


def write_mistral3(path: Path) -> Path:
    """Llama-like, Q2_K matrices: repacked only by an AVX-512 CPU."""
    n_layer, n_embd, n_ff, n_head, n_head_kv = 3, 256, 256, 4, 2
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff) | {"attention.head_count": n_head, "attention.head_count_kv": n_head_kv}
    t = _io(n_embd)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | _attn(i, n_embd, n_embd, n_head_kv * head)
        t |= _ffn(i, n_embd, n_ff)
    types = _matrices(t, T.Q2_K, "output.weight", "_q.weight", "_k.weight", "_v.weight", "attn_output.weight")
    return _write(path, "mistral3", kvs, t, types | _matrices(t, T.Q2_K, "ffn_gate.weight", "ffn_down.weight"))


# --- recurrent and hybrid ------------------------------------------------------------------------------------------

_SSM = {"conv_kernel": 4, "inner_size": 512, "state_size": 64, "time_step_rank": 8, "group_count": 2}


def _mamba2_layer(i: int, n_embd: int) -> dict[str, tuple[int, ...]]:
    d_conv, d_inner, d_state = _SSM["conv_kernel"], _SSM["inner_size"], _SSM["state_size"]
    n_head, n_group = _SSM["time_step_rank"], _SSM["group_count"]
    conv_dim = d_inner + 2 * n_group * d_state
    d_in_proj = d_inner + conv_dim + n_head
    return {
        f"blk.{i}.ssm_in.weight": (n_embd, d_in_proj),
        f"blk.{i}.ssm_conv1d.weight": (d_conv, conv_dim),
        f"blk.{i}.ssm_conv1d.bias": (conv_dim,),
        f"blk.{i}.ssm_dt.bias": (n_head,),
        f"blk.{i}.ssm_a": (1, n_head),
        f"blk.{i}.ssm_d": (1, n_head),
        f"blk.{i}.ssm_norm.weight": (d_inner // n_group, n_group),
        f"blk.{i}.ssm_out.weight": (d_inner, n_embd),
    }


def write_mamba2(path: Path) -> Path:
    """Pure recurrent: 3 Mamba-2 layers (conv kernel 4, inner 512, state 64, 2 groups)."""
    n_layer, n_embd = 3, 128
    kvs = _common(n_layer, n_embd) | {f"ssm.{k}": v for k, v in _SSM.items()} | {"attention.head_count": 0}
    t = _io(n_embd)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | _mamba2_layer(i, n_embd)
    return _write(path, "mamba2", kvs, t)


def write_granitehybrid(path: Path) -> Path:
    """Hybrid: Mamba-2 layers, and attention where head_count_kv (an array) is not 0."""
    heads_kv = [0, 0, 2, 0, 0, 2]
    n_layer, n_embd, n_ff, n_head = len(heads_kv), 256, 256, 8  # granite's Mamba-2 wants d_inner = 2 n_embd
    head = n_embd // n_head
    kvs = (
        _common(n_layer, n_embd, n_ff)
        | {f"ssm.{k}": v for k, v in _SSM.items()}
        | {"attention.head_count": n_head, "attention.head_count_kv": heads_kv}
    )
    t = _io(n_embd)
    for i, h in enumerate(heads_kv):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | _ffn(i, n_embd, n_ff)
        t |= _attn(i, n_embd, n_embd, h * head) if h else _mamba2_layer(i, n_embd)
    return _write(path, "granitehybrid", kvs, t)


def write_lfm2(path: Path) -> Path:
    """Hybrid: LFM2's short convolutions (l_cache 3) and attention where head_count_kv is not 0."""
    heads_kv = [0, 0, 2, 0, 2]
    n_layer, n_embd, n_ff, n_head = len(heads_kv), 512, 256, 16
    head = n_embd // n_head
    kvs = _common(n_layer, n_embd, n_ff) | {
        "attention.head_count": n_head,
        "attention.head_count_kv": heads_kv,
        "shortconv.l_cache": 3,
    }
    t = _io(n_embd, norm="token_embd_norm.weight")
    for i, h in enumerate(heads_kv):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | _ffn(i, n_embd, n_ff)
        if h:
            t |= _attn(i, n_embd, n_embd, h * head)
            t |= {f"blk.{i}.attn_q_norm.weight": (head,), f"blk.{i}.attn_k_norm.weight": (head,)}
        else:
            t |= {
                f"blk.{i}.shortconv.conv.weight": (3, n_embd),
                f"blk.{i}.shortconv.in_proj.weight": (n_embd, 3 * n_embd),
                f"blk.{i}.shortconv.out_proj.weight": (n_embd, n_embd),
            }
    return _write(path, "lfm2", kvs, t)


ZOO: dict[str, Callable[[Path], Path]] = {
    "qwen2": write_qwen2,
    "qwen3": write_qwen3,
    "qwen3moe": write_qwen3moe,
    "llama": write_llama,
    "mistral3": write_mistral3,
    "phi3": write_phi3,
    "command-r": write_command_r,
    "starcoder2": write_starcoder2,
    "deepseek2": write_deepseek2,
    "gpt-oss": write_gpt_oss,
    "gpt-oss-mxfp4": write_gpt_oss_mxfp4,
    "llama4": write_llama4,
    "gemma2": write_gemma2,
    "cohere2": write_cohere2,
    "mamba2": write_mamba2,
    "granitehybrid": write_granitehybrid,
    "lfm2": write_lfm2,
}


# --- what llama.cpp printed, and what a placement predicts it prints -------------------------------------------

_MODEL_LINE = re.compile(r"^load_tensors: +(?P<name>\S+) model buffer size = +(?P<mib>\d+\.\d+) MiB$")


def mib_printed(n_bytes: int) -> str:
    """Bytes as llama.cpp prints a buffer: "%8.2f" of bytes / 1024.0 / 1024.0."""
    return f"{n_bytes / 1024.0 / 1024.0:.2f}"


def printed_weights(log_lines) -> dict[str, str]:
    """Model buffer ("RPC", "CPU_Mapped", "CPU_REPACK" or "CPU") -> the MiB llama.cpp printed for it."""
    out: dict[str, str] = {}
    for line in log_lines:
        if m := _MODEL_LINE.match(line.rstrip()):
            kind = "RPC" if m["name"].startswith("RPC") else m["name"]
            assert kind not in out, line  # one file: one buffer of each kind
            out[kind] = m["mib"]
    return out


def planned_weights(p: Placement) -> dict[str, str]:
    """The model buffers a placement on one RPC device predicts, printed as llama.cpp prints them."""
    out = {"RPC": p.weights_bytes.get(0, 0), "CPU_Mapped": p.mapped_bytes, "CPU_REPACK": p.repack_bytes}
    out["CPU"] = p.weights_bytes.get(-1, 0) - p.mapped_bytes - p.repack_bytes
    return {kind: mib_printed(n) for kind, n in out.items() if n}
