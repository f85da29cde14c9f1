"""A zoo of tiny synthetic models, one per memory type llama.cpp has, written with gguf-py's GGUFWriter.

Each loads in the llama.cpp of llama-cpp-python 0.3.36 (tensor lists from its src/models/*.cpp
load_arch_tensors). Weights are zeros: these models are for memory, not for text. Shapes are in ggml
order (ne0 first); widths are multiples of 32 so that a q8_0 KV cache is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf import GGUFWriter

from tests.support.writer import add_raw_tensor

N_VOCAB = 64


def _write(path: Path, arch: str, kvs: dict[str, object], tensors: dict[str, tuple[int, ...]]) -> Path:
    """kvs: key without the "<arch>." prefix -> an int (UINT32), a float (FLOAT32), a bool, or a list of
    ints / bools (an array)."""
    w = GGUFWriter(path, arch)
    w.add_name(f"zoo {arch}")
    w.add_file_type(0)  # ALL_F32
    w.add_context_length(32768)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(N_VOCAB)])
    w.add_token_scores([float(-i) for i in range(N_VOCAB)])
    for key, value in kvs.items():
        full = key if key.startswith("general.") else f"{arch}.{key}"
        if isinstance(value, bool):
            w.add_key_value(full, value, V.BOOL)
        elif isinstance(value, int):
            w.add_key_value(full, value, V.UINT32)
        elif isinstance(value, float):
            w.add_key_value(full, value, V.FLOAT32)
        elif isinstance(value, list) and value and isinstance(value[0], bool):
            w.add_key_value(full, value, V.ARRAY, V.BOOL)
        else:
            w.add_key_value(full, value, V.ARRAY, V.UINT32)
    for i, (name, shape) in enumerate(tensors.items()):
        add_raw_tensor(w, name, shape, T.F32, seed=i)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


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


def write_gpt_oss(path: Path) -> Path:
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
    return _write(path, "gpt-oss", kvs, t)


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
    "deepseek2": write_deepseek2,
    "gpt-oss": write_gpt_oss,
    "llama4": write_llama4,
    "cohere2": write_cohere2,
    "mamba2": write_mamba2,
    "granitehybrid": write_granitehybrid,
    "lfm2": write_lfm2,
}
