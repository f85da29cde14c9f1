"""harness: exactly whether and how a GGUF model runs on your hardware.

The library, floor by floor (nothing imports upward):

- ``harness.gguf``     bytes -> header: reader, ModelHeader, shards, ggml type tables, published architectures
- ``harness.quant``    llama.cpp's per-tensor quant rules and exact sizes at any quant
- ``harness.offload``  hardware profiles, placement, compute buffers, the n_gpu_layers solver, advice
- ``harness.models``   the registry (models.toml), PyPI assets, the Hugging Face Hub, a MODEL argument resolved
- ``harness.llama``    the one place that drives llama.cpp (llama-cpp-python and ggml through ctypes)
- use cases            ``harness.plan``, ``harness.run``, ``harness.bench``, ``harness.compare``
- ``harness.cli``      the command line: parsing and rendering only

The names below are the library's front door. They load on first use (PEP 562), so that
``import harness`` stays as cheap as the floor a caller needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.errors import (
    AssetError,
    CannotRunHere,
    EngineError,
    GGUFError,
    HarnessError,
    HubError,
    ModelNotFoundError,
    RegistryError,
    UsageError,
    WontFitError,
)

_EXPORTS: dict[str, str | tuple[str, str]] = {
    # header
    "read_header": "harness.gguf.shards",
    "parse_gguf": "harness.gguf.reader",
    "GGUFFile": "harness.gguf.reader",
    "KeyValue": "harness.gguf.reader",
    "LazyArray": "harness.gguf.reader",
    "TensorInfo": "harness.gguf.reader",
    "Architecture": "harness.gguf.header",
    "ModelHeader": "harness.gguf.header",
    # sizes at another quant
    "predict": "harness.quant.sizes",
    "size_rows": "harness.quant.sizes",
    "at_quant": "harness.quant.sizes",
    # a MODEL argument
    "resolve_model": "harness.models.resolve",
    # plans
    "PlanRequest": "harness.plan",
    "PlanResult": "harness.plan",
    "make_plan": "harness.plan",
    "solve": "harness.offload.solver",
    # running, benchmarking, comparing
    "Sampling": "harness.llama.session",
    "run_prompt": "harness.run",
    "bench_model": "harness.bench",
    "compare_quants": ("harness.compare", "compare"),  # not `compare`: that name is the submodule
}

__all__ = [
    "Architecture",
    "AssetError",
    "CannotRunHere",
    "EngineError",
    "GGUFError",
    "GGUFFile",
    "HarnessError",
    "HubError",
    "KeyValue",
    "LazyArray",
    "ModelHeader",
    "ModelNotFoundError",
    "PlanRequest",
    "PlanResult",
    "RegistryError",
    "Sampling",
    "TensorInfo",
    "UsageError",
    "WontFitError",
    "at_quant",
    "bench_model",
    "compare_quants",
    "make_plan",
    "parse_gguf",
    "predict",
    "read_header",
    "resolve_model",
    "run_prompt",
    "size_rows",
    "solve",
]


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
