"""A MODEL argument to a header: a path (any shard), an installed registry file, or a registry entry
known by its architecture only (built as the converter would, at the entry's quant by llama.cpp's
rules)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.gguf import ggml_types
from harness.gguf.architecture import build_header
from harness.gguf.header import ModelHeader
from harness.gguf.shards import read_header
from harness.models.hub import downloaded_paths, read_remote_header, registry_uri
from harness.models.registry import RegistryEntry, load_registry, model_path, names_a_file
from harness.quant.sizes import at_quant


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    header: ModelHeader
    entry: RegistryEntry | None
    virtual: bool  # True: built from an architecture, no file behind it
    claimed_quant: str | None  # what the registry entry or the file name says


def architecture_header(registry, entry: RegistryEntry) -> ModelHeader:
    """A registry entry known by its architecture, built as the converter would and quantized by llama.cpp's rules."""
    return at_quant(build_header(registry.architectures[entry.architecture]), entry.quant)


def resolve_model(model: str, remote: bool = False) -> ResolvedModel:
    """``remote``: for a registry entry with a Hub source, read its real header over the network
    instead of building it from the architecture."""
    if remote and not model.startswith("hf://") and not names_a_file(model):
        entry = load_registry().get(model)
        if entry.hf is not None and not entry.is_installed():
            r = resolve_model(registry_uri(entry))
            return ResolvedModel(model, r.header, entry, True, entry.quant)
    if model.startswith("hf://"):
        remote = read_remote_header(model)
        local = downloaded_paths(model, remote.commit)
        if local:  # downloaded and verified: run from the files
            return ResolvedModel(model, read_header(local[0]), None, False, ggml_types.quant_in_name(model))
        return ResolvedModel(model, remote.header, None, True, ggml_types.quant_in_name(model))
    if names_a_file(model):
        path = model_path(model)
        return ResolvedModel(model, read_header(path), None, False, ggml_types.quant_in_name(path.name))
    reg = load_registry()
    entry = reg.get(model)
    if entry.file is None:
        return ResolvedModel(model, architecture_header(reg, entry), entry, True, entry.quant)
    return ResolvedModel(model, read_header(model_path(model)), entry, False, entry.quant)
