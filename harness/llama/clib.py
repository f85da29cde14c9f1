"""C functions of llama.cpp's shared libraries (libggml, libggml-base, libggml-rpc) for ctypes, declared
from a table of prototypes as their headers give them."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import Any

Prototypes = Mapping[str, tuple[Sequence[Any], Any]]  # function name -> (argument types, result type; None: void)


def declare(so: ctypes.CDLL, prototypes: Prototypes) -> ctypes.CDLL:
    """Give each named function of ``so`` its argument and result types; returns ``so``."""
    for name, (argtypes, restype) in prototypes.items():
        fn = getattr(so, name)
        fn.argtypes = list(argtypes)
        fn.restype = restype
    return so
