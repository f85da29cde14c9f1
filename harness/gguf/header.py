"""ModelHeader: one model's header facts, whether it lives in one GGUF file or in split shards.

Sizes are exact: every tensor's bytes come from its shape and ggml block layout. Architecture
facts are read through typed accessors that reject values of the wrong type with the key, the
byte offset and the type found.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.errors import GGUFError
from harness.gguf import ggml_types
from harness.gguf.format import GGUFValueType, Keys
from harness.gguf.reader import GGUFFile, KeyValue, LazyArray, TensorInfo

_INT_TYPES = {
    GGUFValueType.UINT8,
    GGUFValueType.INT8,
    GGUFValueType.UINT16,
    GGUFValueType.INT16,
    GGUFValueType.UINT32,
    GGUFValueType.INT32,
    GGUFValueType.UINT64,
    GGUFValueType.INT64,
}


@dataclass(frozen=True)
class Architecture:
    """The hyperparameters a planner needs. Per-layer values are tuples of length n_layer."""

    name: str | None
    n_layer: int
    context_length: int | None
    n_embd: int | None
    n_ff: tuple[int, ...] | None
    n_head: tuple[int, ...] | None
    n_head_kv: tuple[int, ...] | None
    key_length: int | None  # per head; llama.cpp defaults it to n_embd / n_head
    value_length: int | None
    sliding_window: int | None
    sliding_window_pattern: int | tuple[bool, ...] | None  # period, or a per-layer flag array
    n_expert: int
    n_expert_used: int
    n_vocab: int | None
    # head sizes of sliding-window layers where they differ (gemma3n/gemma4); None: key_length/value_length
    key_length_swa: int | None = None
    value_length_swa: int | None = None
    # multi-head latent attention (deepseek2 family): the decompressed head sizes; with both set llama.cpp
    # caches one latent K row (key_length x n_head_kv = kv_lora_rank + rope dims) and no V at all
    key_length_mla: int | None = None
    value_length_mla: int | None = None
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    n_ff_expert: tuple[int, ...] | None = None  # per layer: one expert's FFN width
    n_expert_shared: int = 0
    n_layer_nextn: int = 0  # trailing multi-token-prediction blocks (no KV cache in the main context)
    # recurrent state: Mamba/Mamba-2 (conv kernel, inner size, state size, dt rank, groups), LFM2's
    # short convolution (l_cache), RWKV (wkv head size, token shifts)
    ssm_conv_kernel: int | None = None
    ssm_inner_size: int | None = None
    ssm_state_size: int | None = None
    ssm_time_step_rank: int | None = None
    ssm_group_count: int | None = None
    shortconv_l_cache: int | None = None
    wkv_head_size: int | None = None
    token_shift_count: int | None = None

    @property
    def is_mla(self) -> bool:
        """llama_hparams::is_mla: both MLA head sizes set (then the KV cache holds no V)."""
        return bool(self.key_length_mla) and bool(self.value_length_mla)


@dataclass(frozen=True)
class TypeTotal:
    type_name: str
    n_tensors: int
    n_bytes: int
    n_elements: int


def totals_by_type(tensors: Iterable[tuple[int, int, int]]) -> list[TypeTotal]:
    """(ggml type, bytes, elements) of each tensor, totalled per ggml type, largest share of bytes first."""
    count: Counter[int] = Counter()
    nbytes: Counter[int] = Counter()
    nelem: Counter[int] = Counter()
    for ggml_type, n_bytes, n_elements in tensors:
        count[ggml_type] += 1
        nbytes[ggml_type] += n_bytes
        nelem[ggml_type] += n_elements
    return sorted(
        (TypeTotal(ggml_types.type_name(k), count[k], nbytes[k], nelem[k]) for k in count),
        key=lambda r: (-r.n_bytes, r.type_name),
    )


@dataclass(frozen=True)
class LayerTotal:
    index: int
    n_tensors: int
    n_bytes: int


@dataclass(frozen=True)
class ModelHeader:
    shards: tuple[GGUFFile, ...]
    tensors: tuple[TensorInfo, ...]  # every shard's, in shard order; TensorInfo.shard says which
    arch: Architecture
    warnings: tuple[str, ...]

    @property
    def metadata(self) -> dict[str, KeyValue]:
        """The model's key/values: those of the first shard (where llama.cpp reads them)."""
        return self.shards[0].metadata

    def get(self, key: str, default: Any = None) -> Any:
        kv = self.metadata.get(key)
        return default if kv is None else kv.value

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.shards)

    @property
    def version(self) -> int:
        return self.shards[0].version

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        return self.tensor_bytes * 8 / self.n_params if self.tensors else 0.0

    @property
    def file_bytes(self) -> int:
        return sum(s.file_bytes for s in self.shards)

    @property
    def data_offset(self) -> int:
        return self.shards[0].data_offset

    @property
    def truncated(self) -> bool:
        """True when some tensor data lies beyond the end of the bytes stored (a header-only prefix)."""
        return any(s.truncated for s in self.shards)

    @property
    def file_type(self) -> str | None:
        value = self.get(Keys.General.FILE_TYPE)
        return None if value is None else ggml_types.file_type_name(value)

    @property
    def name(self) -> str | None:
        return self.get(Keys.General.NAME)

    def type_totals(self) -> list[TypeTotal]:
        """Per ggml type, largest share of bytes first."""
        return totals_by_type((t.ggml_type, t.n_bytes, t.n_elements) for t in self.tensors)

    def layer_totals(self) -> list[LayerTotal]:
        """Per repeating block (``blk.N``), in index order; other tensors are not in any layer."""
        count: Counter[int] = Counter()
        nbytes: Counter[int] = Counter()
        for t in self.tensors:
            if t.layer is not None:
                count[t.layer] += 1
                nbytes[t.layer] += t.n_bytes
        return [LayerTotal(i, count[i], nbytes[i]) for i in sorted(count)]

    def non_layer_tensors(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.layer is None]

    def tensor(self, name: str) -> TensorInfo | None:
        return next((t for t in self.tensors if t.name == name), None)


# -- typed metadata accessors ------------------------------------------------------------------------


class _Accessor:
    """Reads architecture keys from one file's metadata, failing on wrong types with the key's offset."""

    def __init__(self, shard: GGUFFile) -> None:
        self.shard = shard
        self.md = shard.metadata

    def fail(self, kv: KeyValue, problem: str) -> GGUFError:
        return GGUFError(f"{self.shard.name}: key {kv.key!r} at byte {kv.offset}: {problem}")

    def string(self, key: str) -> str | None:
        kv = self.md.get(key)
        if kv is None:
            return None
        if kv.value_type != GGUFValueType.STRING:
            raise self.fail(kv, f"has type {kv.value_type.name}, expected STRING")
        return kv.value

    def uint(self, key: str) -> int | None:
        kv = self.md.get(key)
        if kv is None:
            return None
        if kv.value_type not in _INT_TYPES:
            raise self.fail(kv, f"has type {kv.value_type.name}, expected an unsigned integer")
        if kv.value < 0:
            raise self.fail(kv, f"is {kv.value}, must not be negative")
        return kv.value

    def per_layer(self, key: str, n_layer: int) -> tuple[int, ...] | None:
        """A scalar applies to every layer; an array must hold one non-negative integer per layer."""
        kv = self.md.get(key)
        if kv is None:
            return None
        if kv.value_type != GGUFValueType.ARRAY:
            return (self.uint(key) or 0,) * n_layer
        arr: LazyArray = kv.value
        if arr.element_type not in _INT_TYPES:
            raise self.fail(kv, f"is an array of {arr.element_type.name}, expected integers")
        if arr.count != n_layer:
            raise self.fail(kv, f"has {arr.count} entries but the model has {n_layer} layers")
        values = tuple(arr.decode())
        if any(v < 0 for v in values):
            raise self.fail(kv, f"has a negative entry {min(values)}")
        return values

    def pattern(self, key: str, n_layer: int) -> int | tuple[bool, ...] | None:
        kv = self.md.get(key)
        if kv is None or kv.value_type != GGUFValueType.ARRAY:
            return self.uint(key)
        arr: LazyArray = kv.value
        if arr.element_type != GGUFValueType.BOOL or arr.count != n_layer:
            raise self.fail(
                kv,
                f"is an array of {arr.count} {arr.element_type.name}, "
                f"expected {n_layer} BOOL (one per layer) or an integer period",
            )
        return tuple(arr.decode())


def architecture_of(shard: GGUFFile, tensors: tuple[TensorInfo, ...]) -> tuple[Architecture, list[str]]:
    a = _Accessor(shard)
    warnings: list[str] = []
    name = a.string(Keys.General.ARCHITECTURE)
    if name is None:
        warnings.append("no general.architecture key: architecture facts are unknown")

    def key(template: str) -> str:
        return template.format(arch=name)

    layer_indices = [t.layer for t in tensors if t.layer is not None]
    n_layer = a.uint(key(Keys.LLM.BLOCK_COUNT)) if name else None
    if n_layer is None:
        n_layer = max(layer_indices, default=-1) + 1
        if name:
            warnings.append(f"no {key(Keys.LLM.BLOCK_COUNT)} key: {n_layer} layers inferred from tensor names")
    elif layer_indices and max(layer_indices) >= n_layer:
        raise GGUFError(
            f"{shard.name}: tensor blk.{max(layer_indices)}.* lies beyond {key(Keys.LLM.BLOCK_COUNT)} = {n_layer}"
        )
    if not name:
        return Architecture(None, n_layer, None, None, None, None, None, None, None, None, None, 0, 0, None), warnings

    n_embd = a.uint(key(Keys.LLM.EMBEDDING_LENGTH))
    n_head = a.per_layer(key(Keys.Attention.HEAD_COUNT), n_layer)
    n_head_kv = a.per_layer(key(Keys.Attention.HEAD_COUNT_KV), n_layer) or n_head
    head0 = n_head[0] if n_head else 0
    default_head_len = n_embd // head0 if n_embd and head0 else None
    key_length = a.uint(key(Keys.Attention.KEY_LENGTH))
    key_length = default_head_len if key_length is None else key_length
    value_length = a.uint(key(Keys.Attention.VALUE_LENGTH))
    value_length = default_head_len if value_length is None else value_length

    n_vocab = a.uint(key(Keys.LLM.VOCAB_SIZE))
    tokens = shard.metadata.get(Keys.Tokenizer.LIST)
    if n_vocab is None and tokens is not None and isinstance(tokens.value, LazyArray):
        n_vocab = tokens.value.count  # the count is known without decoding 262k strings
    if n_vocab is None:
        embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
        n_vocab = embd.shape[1] if embd is not None and len(embd.shape) > 1 else None

    return Architecture(
        name=name,
        n_layer=n_layer,
        context_length=a.uint(key(Keys.LLM.CONTEXT_LENGTH)),
        n_embd=n_embd,
        n_ff=a.per_layer(key(Keys.LLM.FEED_FORWARD_LENGTH), n_layer),
        n_head=n_head,
        n_head_kv=n_head_kv,
        key_length=key_length,
        value_length=value_length,
        sliding_window=a.uint(key(Keys.Attention.SLIDING_WINDOW)),
        sliding_window_pattern=a.pattern(key(Keys.Attention.SLIDING_WINDOW_PATTERN), n_layer),
        n_expert=a.uint(key(Keys.LLM.EXPERT_COUNT)) or 0,
        n_expert_used=a.uint(key(Keys.LLM.EXPERT_USED_COUNT)) or 0,
        n_vocab=n_vocab,
        key_length_swa=a.uint(key(Keys.Attention.KEY_LENGTH_SWA)),
        value_length_swa=a.uint(key(Keys.Attention.VALUE_LENGTH_SWA)),
        key_length_mla=a.uint(key(Keys.Attention.KEY_LENGTH_MLA)),
        value_length_mla=a.uint(key(Keys.Attention.VALUE_LENGTH_MLA)),
        kv_lora_rank=a.uint(key(Keys.Attention.KV_LORA_RANK)),
        q_lora_rank=a.uint(key(Keys.Attention.Q_LORA_RANK)),
        n_ff_expert=a.per_layer(key(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH), n_layer),
        n_expert_shared=a.uint(key(Keys.LLM.EXPERT_SHARED_COUNT)) or 0,
        n_layer_nextn=a.uint(key(Keys.LLM.NEXTN_PREDICT_LAYERS)) or 0,
        ssm_conv_kernel=a.uint(key(Keys.SSM.CONV_KERNEL)),
        ssm_inner_size=a.uint(key(Keys.SSM.INNER_SIZE)),
        ssm_state_size=a.uint(key(Keys.SSM.STATE_SIZE)),
        ssm_time_step_rank=a.uint(key(Keys.SSM.TIME_STEP_RANK)),
        ssm_group_count=a.uint(key(Keys.SSM.GROUP_COUNT)),
        shortconv_l_cache=a.uint(key(Keys.ShortConv.L_CACHE)),
        wkv_head_size=a.uint(key(Keys.WKV.HEAD_SIZE)),
        token_shift_count=a.uint(key(Keys.LLM.TOKEN_SHIFT_COUNT)),
    ), warnings


def model_header(shards: list[GGUFFile]) -> ModelHeader:
    """Join validated shards into one model (see harness.split for the shard checks)."""
    tensors = tuple(
        TensorInfo(t.name, t.shape, t.ggml_type, t.offset_bytes, t.n_bytes, shard=i)
        for i, shard in enumerate(shards)
        for t in shard.tensors
    )
    arch, warnings = architecture_of(shards[0], tensors)
    a = _Accessor(shards[0])
    file_type = a.uint(Keys.General.FILE_TYPE)
    if file_type is None:
        warnings.append("no general.file_type key: the quant is not declared")
    for s in shards:
        if s.truncated:
            warnings.append(
                f"{os.path.basename(s.name)} holds {s.file_bytes} of {s.data_end} bytes: "
                "tensor data is missing (header-only or truncated file)"
            )
    return ModelHeader(tuple(shards), tensors, arch, tuple(warnings))
