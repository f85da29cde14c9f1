"""A MODEL argument to a header: a path (any shard), an installed registry file, or a registry entry
known by its architecture only (built as the converter would, at the entry's quant by llama.cpp's
rules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import QuantRuleError, RegistryError
from harness.gguf import ggml_types
from harness.gguf.architecture import build_header
from harness.gguf.header import ModelHeader
from harness.gguf.shards import read_header
from harness.models.registry import RegistryEntry, load_registry, model_path, names_a_file

# The Hub client (threads, hashing, the download machinery) and llama.cpp's quant rules are imported
# where a MODEL argument needs them (hf:// names; entries known by their architecture): a local file is
# the common case, and they would add ~30 ms to every `inspect` (benchmarks/cli_startup.py).


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    header: ModelHeader
    entry: RegistryEntry | None
    virtual: bool  # True: no file here (built from an architecture, or a header read from the Hub)
    claimed_quant: str | None  # what the registry entry or the file name says
    # where the header came from: "file", "architecture" (built from it) or "hub" (read over HTTP, not downloaded)
    source: str = "file"


def architecture_header(registry, entry: RegistryEntry) -> ModelHeader:
    """A registry entry known by its architecture, built as the converter would and quantized by llama.cpp's rules."""
    from harness.quant.sizes import at_quant

    try:
        return at_quant(build_header(registry.architectures[entry.architecture]), entry.quant)
    except QuantRuleError as exc:  # a quant llama.cpp names but cannot make (NVFP4): the entry is wrong
        raise RegistryError(f"{registry.path}: [models.{entry.name!r}]: {exc}") from None


def resolve_model(model: str, remote: bool = False) -> ResolvedModel:
    """``remote``: for a registry entry with a Hub source, read its real header over the network
    instead of building it from the architecture."""
    if model.startswith("hf://"):
        return _from_hub(model)
    if names_a_file(model):
        path = model_path(model)
        return ResolvedModel(model, read_header(path), None, False, ggml_types.quant_in_name(path.name))
    reg = load_registry()
    entry = reg.get(model)
    if remote and entry.hf is not None and not entry.is_installed():
        from harness.models.hub import registry_uri

        hub = _from_hub(registry_uri(entry))
        return ResolvedModel(model, hub.header, entry, hub.virtual, entry.quant, hub.source)
    if entry.file is None:
        local = _downloaded(entry)
        if local:  # `harness download NAME` (or `bench --download`) fetched its Hub file: run from it
            return ResolvedModel(model, read_header(local[0]), entry, False, entry.quant)
        return ResolvedModel(model, architecture_header(reg, entry), entry, True, entry.quant, "architecture")
    return ResolvedModel(model, read_header(model_path(model)), entry, False, entry.quant)


def _from_hub(uri: str) -> ResolvedModel:
    """An hf:// name: its verified download when there is one, else its header read over HTTP ranges."""
    from harness.models.hub import downloaded_paths, read_remote_header

    remote = read_remote_header(uri)
    local = downloaded_paths(uri, remote.commit)
    if local:  # downloaded and verified: run from the files
        return ResolvedModel(uri, read_header(local[0]), None, False, ggml_types.quant_in_name(uri))
    return ResolvedModel(uri, remote.header, None, True, ggml_types.quant_in_name(uri), "hub")


def _downloaded(entry: RegistryEntry) -> list[Path] | None:
    if entry.hf is None:
        return None
    from harness.models.hub import downloaded_entry

    return downloaded_entry(entry)
