"""A MODEL argument to a header: a path (any shard), an installed registry file, or a registry entry
known by its architecture only (built as the converter would, at the entry's quant by llama.cpp's
rules)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gguf import Keys, LlamaFileType

from . import ggml
from .archmodel import build_header
from .header import ModelHeader, model_header
from .placement import pad
from .reader import KeyValue, TensorInfo
from .registry import RegistryEntry, load_registry, names_a_file, resolve_path
from .split import read_header


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    header: ModelHeader
    entry: RegistryEntry | None
    virtual: bool  # True: built from an architecture, no file behind it
    claimed_quant: str | None  # what the registry entry or the file name says


def at_quant(header: ModelHeader, quant: str) -> ModelHeader:
    """``header`` as llama.cpp's quantizer would write it at ``quant`` (types, bytes, offsets)."""
    from .sizes import needs_imatrix, predict

    # published files of the types that need an importance matrix were made with one
    pred = predict(header, quant, has_imatrix=needs_imatrix(header, quant))
    tensors, offset = [], 0
    for t, p in zip(header.tensors, pred.tensors):
        tensors.append(TensorInfo(t.name, t.shape, p.ggml_type, offset, p.n_bytes))
        offset += pad(p.n_bytes, 32)
    shard = header.shards[0]
    metadata = dict(shard.metadata)
    ftype = int(LlamaFileType[f"MOSTLY_{quant}"])
    metadata[Keys.General.FILE_TYPE] = replace(metadata[Keys.General.FILE_TYPE], value=ftype) \
        if Keys.General.FILE_TYPE in metadata else KeyValue(Keys.General.FILE_TYPE, 4, 0, ftype)
    virtual = replace(shard, name=f"{shard.name}@{quant}", file_bytes=offset, data_bytes=offset,
                      metadata=metadata, tensors=tuple(tensors))
    return model_header([virtual])


def architecture_header(registry, entry: RegistryEntry) -> ModelHeader:
    """A registry entry known by its architecture, built as the converter would and quantized by llama.cpp's rules."""
    return at_quant(build_header(registry.architectures[entry.architecture]), entry.quant)


def resolve_model(model: str, remote: bool = False) -> ResolvedModel:
    """``remote``: for a registry entry with a Hub source, read its real header over the network
    instead of building it from the architecture."""
    if remote and not model.startswith("hf://") and not names_a_file(model):
        from .hub import registry_uri

        entry = load_registry().get(model)
        if entry.hf is not None and not entry.is_installed():
            r = resolve_model(registry_uri(entry))
            return ResolvedModel(model, r.header, entry, True, entry.quant)
    if model.startswith("hf://"):
        from .hub import downloaded_paths, read_remote_header

        remote = read_remote_header(model)
        local = downloaded_paths(model, remote.commit)
        if local:  # downloaded and verified: run from the files
            return ResolvedModel(model, read_header(local[0]), None, False, ggml.quant_in_name(model))
        return ResolvedModel(model, remote.header, None, True, ggml.quant_in_name(model))
    if names_a_file(model):
        path = resolve_path(model)
        return ResolvedModel(model, read_header(path), None, False, ggml.quant_in_name(path.name))
    reg = load_registry()
    entry = reg.get(model)
    if entry.file is None:
        return ResolvedModel(model, architecture_header(reg, entry), entry, True, entry.quant)
    return ResolvedModel(model, read_header(resolve_path(model)), entry, False, entry.quant)
