"""harness: exactly whether and how a GGUF model runs on your hardware."""

from harness.errors import GGUFError, HarnessError
from harness.gguf.header import Architecture, ModelHeader
from harness.gguf.reader import GGUFFile, KeyValue, LazyArray, TensorInfo, parse_gguf
from harness.gguf.shards import read_header

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
