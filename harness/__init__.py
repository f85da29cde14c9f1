"""harness: exactly whether and how a GGUF model runs on your hardware."""

from .errors import GGUFError, HarnessError
from .header import Architecture, ModelHeader
from .reader import GGUFFile, KeyValue, LazyArray, TensorInfo, parse_gguf
from .split import read_header

__all__ = [
    "Architecture",
    "GGUFError",
    "GGUFFile",
    "HarnessError",
    "KeyValue",
    "LazyArray",
    "ModelHeader",
    "TensorInfo",
    "parse_gguf",
    "read_header",
]
