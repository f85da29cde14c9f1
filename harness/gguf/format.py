"""The GGUF format's own tables, imported from the gguf package without the rest of it.

`import gguf` runs gguf/__init__.py, which imports numpy, its reader, writer, vocabulary and metadata
modules: ~0.2 s before a header is read (measured with `python -X importtime`; `make bench-cli`). The
tables the harness needs (type enums, block sizes, metadata key names, file types, magic and
alignment) all live in gguf/constants.py, which imports only the standard library. This module loads
that one file under its real name, `gguf.constants`, so that when something later imports the whole
gguf package (its writer, in tests and the quantizer paths), gguf's __init__ finds the same module and
every enum stays one class (a one-shot import hook then binds `gguf.constants` on the package, as a
normal import of the submodule would have).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType


class _BindConstants(importlib.abc.MetaPathFinder):
    """When the gguf package itself is imported later, set its `constants` attribute to our module."""

    def find_spec(self, name, path=None, target=None):
        if name != "gguf":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("gguf")
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module: ModuleType) -> None:
                module.constants = sys.modules["gguf.constants"]
                run(module)

            spec.loader.exec_module = exec_module
        return spec


def _constants() -> ModuleType:
    loaded = sys.modules.get("gguf.constants")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("gguf")  # locates the package without running its __init__
    if package is None or not package.submodule_search_locations:
        raise ImportError("the gguf package is not installed: pip install gguf (see pyproject.toml)")
    path = f"{package.submodule_search_locations[0]}/constants.py"
    spec = importlib.util.spec_from_file_location("gguf.constants", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gguf.constants"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["gguf.constants"]
        raise
    sys.meta_path.insert(0, _BindConstants())
    return module


_c = _constants()

GGML_QUANT_SIZES = _c.GGML_QUANT_SIZES
GGMLQuantizationType = _c.GGMLQuantizationType
GGUF_DEFAULT_ALIGNMENT = _c.GGUF_DEFAULT_ALIGNMENT
GGUF_MAGIC = _c.GGUF_MAGIC
GGUFValueType = _c.GGUFValueType
Keys = _c.Keys
LlamaFileType = _c.LlamaFileType

__all__ = [
    "GGML_QUANT_SIZES",
    "GGMLQuantizationType",
    "GGUF_DEFAULT_ALIGNMENT",
    "GGUF_MAGIC",
    "GGUFValueType",
    "Keys",
    "LlamaFileType",
]
