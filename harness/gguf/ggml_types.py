"""ggml tensor types: names and exact byte sizes, from the gguf package's own tables."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.gguf.format import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

# gguf 0.19.0 on PyPI lists Q8_1 as (32, 4 + 4 + 32); ggml's block_q8_1 is two halves and 32
# int8s (36 bytes), and llama.cpp's vendored gguf-py says so too. tests/test_ggml.py checks every
# entry of the merged table against ggml_type_size/ggml_blck_size from libggml itself.
_ERRATA: dict[GGMLQuantizationType, tuple[int, int]] = {
    GGMLQuantizationType.Q8_1: (32, 2 + 2 + 32),
}

QUANT_SIZES: dict[int, tuple[int, int]] = {int(t): bs for t, bs in GGML_QUANT_SIZES.items()}
QUANT_SIZES.update({int(t): bs for t, bs in _ERRATA.items()})
F32 = int(GGMLQuantizationType.F32)


def type_name(ggml_type: int) -> str:
    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type{ggml_type}"


def type_by_name(name: str) -> int:
    try:
        return int(GGMLQuantizationType[name.upper()])
    except KeyError:
        raise ValueError(f"unknown ggml type {name!r}") from None


def block_size(ggml_type: int) -> tuple[int, int]:
    """(elements per block, bytes per block); KeyError for types without a known layout."""
    return QUANT_SIZES[ggml_type]


def tensor_nbytes(shape: tuple[int, ...], ggml_type: int) -> int:
    """Exact bytes of a contiguous tensor: the one size formula (rows must hold whole blocks)."""
    elems_per_block, bytes_per_block = QUANT_SIZES[ggml_type]
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    if shape and shape[0] % elems_per_block:
        raise ValueError(f"row of {shape[0]} elements is not a multiple of the {elems_per_block}-element block")
    return n_elements // elems_per_block * bytes_per_block


def is_quantized(ggml_type: int) -> bool:
    """ggml_is_quantized: a block type (Q*, IQ*, TQ*, MXFP4), not F32/F16/BF16 or the integer types."""
    return QUANT_SIZES.get(ggml_type, (1, 0))[0] > 1


def file_type_name(file_type: int) -> str:
    """llama.cpp's name for a general.file_type value: 15 -> 'Q4_K_M', 0 -> 'F32' (llama-quantize's names)."""
    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return f"unknown({file_type})"
    return "F32" if name == "ALL_F32" else name.removeprefix("MOSTLY_")


def file_type_by_name(name: str) -> LlamaFileType | None:
    """The inverse of file_type_name: 'Q4_K_M' -> MOSTLY_Q4_K_M, 'F32' -> ALL_F32; None if unknown.

    The values are llama.cpp's own LLAMA_FTYPE_* (what llama_model_quantize_params.ftype takes)."""
    key = name.strip().upper()
    return LlamaFileType.ALL_F32 if key == "F32" else LlamaFileType.__members__.get("MOSTLY_" + key)


def pad(n_bytes: int, alignment: int) -> int:
    """``n_bytes`` rounded up to a multiple of ``alignment``: tensor data in a GGUF file (32 by default)
    and in a ggml backend buffer (32 for CPU and RPC)."""
    return (n_bytes + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class BufferType:
    """How a ggml backend buffer type sizes a tensor: its get_alloc_size, then its alignment (ggml-alloc
    places each tensor at an aligned offset, so a buffer is the sum of the padded sizes)."""

    name: str
    alignment: int
    # CUDA (ggml-cuda.cu ggml_backend_cuda_buffer_type_get_alloc_size, MATRIX_ROW_PADDING in common.cuh): a
    # quantized tensor whose row length ne0 is not a multiple of this gets one more row's worth of
    # (row_padding - ne0 % row_padding) elements, so the MMQ/MMVQ kernels may read past the last row
    row_padding: int = 0

    def alloc_bytes(self, n_bytes: int, ggml_type: int, ne0: int) -> int:
        """The bytes a tensor of ``n_bytes`` (type ``ggml_type``, row length ``ne0``) takes in this buffer."""
        if self.row_padding and ne0 % self.row_padding and is_quantized(ggml_type):
            elems, size = QUANT_SIZES[ggml_type]  # ggml_row_size: type_size * ne / blck_size, not whole blocks
            n_bytes += size * (self.row_padding - ne0 % self.row_padding) // elems
        return pad(n_bytes, self.alignment)


# ggml-cpu's buffer type (TENSOR_ALIGNMENT 32); an RPC device sizes with its server's (a CPU one here)
CPU_BUFFER = BufferType("CPU", 32)
# ggml-cuda.cu: ggml_backend_cuda_buffer_type_get_alignment returns 128
CUDA_BUFFER = BufferType("CUDA", 128, row_padding=512)


# Every file type llama.cpp's quantizer produces, as users name them (llama-quantize's list).
ALL_QUANTS: tuple[str, ...] = (
    "F16",
    "BF16",
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "IQ4_NL",
    "IQ4_XS",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "IQ3_M",
    "IQ3_S",
    "IQ3_XS",
    "IQ3_XXS",
    "Q2_K",
    "Q2_K_S",
    "IQ2_M",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
)
# What `harness sizes` shows when no --quant is given.
COMMON_QUANTS: tuple[str, ...] = (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q4_K_M",
    "IQ4_XS",
    "Q3_K_M",
    "IQ3_XXS",
    "Q2_K",
    "IQ2_M",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
)


def quant_in_name(file_name: str) -> str | None:
    """The quant a file name claims ('…-Q4_K_M-00001-of-00005.gguf' -> 'Q4_K_M'), longest match."""
    upper = file_name.upper()
    found = [q for q in ALL_QUANTS if re.search(rf"(?<![A-Z0-9]){q}(?![A-Z0-9])", upper)]
    return max(found, key=len) if found else None
