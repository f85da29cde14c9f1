"""The engine's own GGUF parser and type table, through ctypes on llama_cpp's bundled libggml-base.

This is the reference the header reader is tested and benchmarked against, not a code path of the
harness itself. llama_cpp is imported lazily, only to find its library folder.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.errors import HarnessError
from harness.llama import clib


class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@cache
def lib() -> ctypes.CDLL:
    try:
        import llama_cpp
    except ImportError as exc:
        raise HarnessError(f"llama-cpp-python is not installed ({exc}); run `make install`") from None
    path = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    if not path.exists():
        raise HarnessError(f"{path} not found: llama-cpp-python was built without a shared libggml-base")
    ctx_and_index = [ctypes.c_void_p, ctypes.c_int64]  # (gguf context, tensor index)
    return clib.declare(
        ctypes.CDLL(os.fspath(path)),
        {
            "gguf_init_from_file": ([ctypes.c_char_p, _InitParams], ctypes.c_void_p),
            "gguf_free": ([ctypes.c_void_p], None),
            "gguf_get_n_tensors": ([ctypes.c_void_p], ctypes.c_int64),
            "gguf_get_n_kv": ([ctypes.c_void_p], ctypes.c_int64),
            "gguf_get_data_offset": ([ctypes.c_void_p], ctypes.c_size_t),
            "gguf_get_version": ([ctypes.c_void_p], ctypes.c_uint32),
            "gguf_get_tensor_name": (ctx_and_index, ctypes.c_char_p),
            "gguf_get_tensor_type": (ctx_and_index, ctypes.c_int),
            "gguf_get_tensor_size": (ctx_and_index, ctypes.c_size_t),
            "gguf_get_tensor_offset": (ctx_and_index, ctypes.c_size_t),
            "ggml_type_size": ([ctypes.c_int], ctypes.c_size_t),
            "ggml_blck_size": ([ctypes.c_int], ctypes.c_int64),
            "ggml_type_name": ([ctypes.c_int], ctypes.c_char_p),
        },
    )


@dataclass(frozen=True)
class EngineTensor:
    name: str
    ggml_type: int
    n_bytes: int
    offset_bytes: int


@dataclass(frozen=True)
class EngineHeader:
    version: int
    n_kv: int
    data_offset: int
    tensors: tuple[EngineTensor, ...]


def open_context(path: str | os.PathLike[str]) -> int | None:
    """gguf_init_from_file with no_alloc: the header only. Returns the context pointer or None."""
    return lib().gguf_init_from_file(os.fsencode(path), _InitParams(True, None))


def parse_header(path: str | os.PathLike[str]) -> EngineHeader:
    """Parse a header with llama.cpp's C parser and copy out what it found."""
    so = lib()
    ctx = open_context(path)
    if not ctx:
        raise HarnessError(f"{path}: llama.cpp's gguf_init_from_file rejected the file")
    try:
        tensors = tuple(
            EngineTensor(
                so.gguf_get_tensor_name(ctx, i).decode(),
                so.gguf_get_tensor_type(ctx, i),
                so.gguf_get_tensor_size(ctx, i),
                so.gguf_get_tensor_offset(ctx, i),
            )
            for i in range(so.gguf_get_n_tensors(ctx))
        )
        return EngineHeader(so.gguf_get_version(ctx), so.gguf_get_n_kv(ctx), so.gguf_get_data_offset(ctx), tensors)
    finally:
        so.gguf_free(ctx)


def type_layout(ggml_type: int) -> tuple[int, int]:
    """(elements per block, bytes per block) as libggml itself defines them."""
    so = lib()
    return so.ggml_blck_size(ggml_type), so.ggml_type_size(ggml_type)
