"""Models described by their published architecture alone (no file): the tensor list llama.cpp's
converter would write, as a ModelHeader, so that inspect, sizes and plan work without a download.

The tensors come out in the converter's source precision (BF16/F16 matrices, F32 norms); the sizes
module turns them into any quant. Only the llama family is described so far.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from harness.errors import RegistryError
from harness.gguf import ggml_types
from harness.gguf.format import GGMLQuantizationType as T
from harness.gguf.format import GGUFValueType as V
from harness.gguf.format import Keys
from harness.gguf.header import ModelHeader, model_header
from harness.gguf.reader import GGUFFile, KeyValue, TensorInfo


@dataclass(frozen=True)
class ArchSpec:
    """A published configuration (config.json), in the registry's words."""

    name: str
    family: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    context_length: int
    tied_output: bool = False
    rope_freqs: bool = False  # llama 3.1's rope scaling factors, a [head_dim/2] F32 tensor
    source_type: str = "BF16"
    # config.json's rope_theta and rms_norm_eps; the defaults are Llama 3/3.1's (every entry of models.toml).
    # Neither changes a size: llama.cpp only refuses to load a llama model without the epsilon.
    rope_freq_base: float = 500000.0
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        """Refuse what no converter writes, before anything is built: a spec is data from models.toml."""

        def bad(why: str) -> RegistryError:
            return RegistryError(f"architecture {self.name!r}: {why}")

        if self.family not in _BUILDERS:
            raise bad(f"family {self.family!r} is not described; known: {', '.join(_BUILDERS)}")
        if self.source_type not in SOURCE_TYPES:
            raise bad(f"source_type {self.source_type!r} is not one of {', '.join(SOURCE_TYPES)}")
        for key, most in _MOST.items():
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise bad(f"{key} must be an integer in 1..{most:,} ({_WHY_MOST[most]}), not {value!r}")
        for key in ("rope_freq_base", "rms_norm_eps"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= _FLOAT32_MAX:
                raise bad(f"{key} must be a positive number (a GGUF FLOAT32 key), not {value!r}")
        if self.n_head % self.n_head_kv:
            raise bad(
                f"n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv}: every KV head serves "
                "a whole group of query heads (ggml's matrix product broadcasts only whole groups)"
            )


# What the converter writes matrices in (convert_hf_to_gguf.py --outtype): the sizes module quantizes from there.
SOURCE_TYPES = ("BF16", "F16", "F32")
_UINT32 = 2**32 - 1
_FLOAT32_MAX = 3.4028234663852886e38
LLAMA_MAX_LAYERS = 512  # llama.cpp's src/llama-hparams.h: per-layer arrays hold this many
_WHY_MOST = {
    LLAMA_MAX_LAYERS: "llama.cpp's LLAMA_MAX_LAYERS",
    _UINT32: "a GGUF UINT32 key",
}
# every integer a spec holds, and its largest value: each is written as a UINT32 key of the header
_MOST = {
    "n_embd": _UINT32,
    "n_layer": LLAMA_MAX_LAYERS,
    "n_head": _UINT32,
    "n_head_kv": _UINT32,
    "head_dim": _UINT32,
    "n_ff": _UINT32,
    "n_vocab": _UINT32,
    "context_length": _UINT32,
}


def _llama_tensors(s: ArchSpec, wtype: int) -> list[tuple[str, tuple[int, ...], int]]:
    """Names and ggml-order shapes as convert_hf_to_gguf.py writes a LlamaForCausalLM."""
    f32 = int(T.F32)
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out = [("token_embd.weight", (s.n_embd, s.n_vocab), wtype)]
    if s.rope_freqs:
        out.append(("rope_freqs.weight", (s.head_dim // 2,), f32))
    for i in range(s.n_layer):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (s.n_embd,), f32),
            (b + "ffn_down.weight", (s.n_ff, s.n_embd), wtype),
            (b + "ffn_gate.weight", (s.n_embd, s.n_ff), wtype),
            (b + "ffn_up.weight", (s.n_embd, s.n_ff), wtype),
            (b + "ffn_norm.weight", (s.n_embd,), f32),
            (b + "attn_k.weight", (s.n_embd, kv), wtype),
            (b + "attn_output.weight", (q, s.n_embd), wtype),
            (b + "attn_q.weight", (s.n_embd, q), wtype),
            (b + "attn_v.weight", (s.n_embd, kv), wtype),
        ]
    out.append(("output_norm.weight", (s.n_embd,), f32))
    if not s.tied_output:
        out.append(("output.weight", (s.n_embd, s.n_vocab), wtype))
    return out


_BUILDERS = {"llama": _llama_tensors}
_F32 = struct.Struct("<f")


def _float32(value: float) -> float:
    """``value`` as a FLOAT32 key holds it (1e-5 reads back as 9.99999974738e-06 from any file)."""
    return _F32.unpack(_F32.pack(value))[0]


def build_header(spec: ArchSpec) -> ModelHeader:
    """The header of the model the converter would produce from ``spec``, at its source precision."""
    builder = _BUILDERS[spec.family]  # ArchSpec checked both on creation
    wtype = ggml_types.type_by_name(spec.source_type)
    tensors = []
    offset = 0
    for name, shape, ttype in builder(spec, wtype):
        n_bytes = ggml_types.tensor_nbytes(shape, ttype)
        tensors.append(TensorInfo(name, shape, ttype, offset, n_bytes))
        offset += ggml_types.pad(n_bytes, 32)
    arch = spec.family
    file_type = ggml_types.file_type_by_name(spec.source_type)
    # what convert_hf_to_gguf.py writes for a LlamaForCausalLM (conversion/base.py TextModel and
    # conversion/llama.py set_gguf_parameters), in its order; llama.cpp's load_hparams requires block_count,
    # context_length, embedding_length and (llama) the RMS epsilon, and defaults the rest
    kvs = [
        (Keys.General.ARCHITECTURE, V.STRING, arch),
        (Keys.General.NAME, V.STRING, spec.name),
        (Keys.LLM.BLOCK_COUNT.format(arch=arch), V.UINT32, spec.n_layer),
        (Keys.LLM.CONTEXT_LENGTH.format(arch=arch), V.UINT32, spec.context_length),
        (Keys.LLM.EMBEDDING_LENGTH.format(arch=arch), V.UINT32, spec.n_embd),
        (Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch), V.UINT32, spec.n_ff),
        (Keys.Attention.HEAD_COUNT.format(arch=arch), V.UINT32, spec.n_head),
        (Keys.Attention.HEAD_COUNT_KV.format(arch=arch), V.UINT32, spec.n_head_kv),
        (Keys.Rope.FREQ_BASE.format(arch=arch), V.FLOAT32, _float32(spec.rope_freq_base)),
        (Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch), V.FLOAT32, _float32(spec.rms_norm_eps)),
    ]
    if spec.head_dim * spec.n_head != spec.n_embd:
        # the converter writes these when config.json has head_dim (Llama 3.1's has none); llama.cpp's
        # default, n_embd / n_head, is right unless the heads are narrower or wider than that
        kvs += [
            (Keys.Attention.KEY_LENGTH.format(arch=arch), V.UINT32, spec.head_dim),
            (Keys.Attention.VALUE_LENGTH.format(arch=arch), V.UINT32, spec.head_dim),
        ]
    kvs += [
        (Keys.General.FILE_TYPE, V.UINT32, int(file_type)),
        (Keys.LLM.VOCAB_SIZE.format(arch=arch), V.UINT32, spec.n_vocab),
        # llama.cpp checks n_rot == head size for llama; the converter writes it from head_dim or n_embd / n_head
        (Keys.Rope.DIMENSION_COUNT.format(arch=arch), V.UINT32, spec.head_dim),
    ]
    metadata = {k: KeyValue(k, t, 0, v) for k, t, v in kvs}
    virtual = GGUFFile(
        name=f"architecture:{spec.name}",
        version=3,
        file_bytes=offset,
        header_bytes=0,
        alignment=32,
        data_offset=0,
        data_bytes=offset,
        metadata=metadata,
        tensors=tuple(tensors),
    )
    return model_header([virtual])
