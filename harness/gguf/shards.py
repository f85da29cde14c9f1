"""Split models (``NAME-00001-of-00005.gguf``): find every shard, read each header, check them
against each other, and present one model.

llama.cpp checks only the first shard's split keys and trusts the rest; here every shard must
agree on split.count and split.tensors.count, carry its own split.no, repeat no tensor, and not
contradict the first shard's metadata.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import GGUFError
from harness.gguf.format import GGUFValueType, Keys
from harness.gguf.header import ModelHeader, model_header
from harness.gguf.reader import GGUFFile, KeyValue, LazyArray, parse_gguf
from harness.gguf.source import ByteSource, FileSource

_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

_SPLIT_KEYS = {Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT}


@dataclass(frozen=True)
class ShardName:
    """A split model's file name as llama.cpp writes it (llama_split_path: ``PREFIX-%05d-of-%05d.gguf``),
    with the folder it came with ("" or ending in "/")."""

    folder: str
    prefix: str
    no: int  # 1-based
    count: int

    def shard(self, no: int) -> str:
        """The name of shard ``no`` (1-based) of the same model, in the same folder."""
        return f"{self.folder}{self.prefix}-{no:05d}-of-{self.count:05d}.gguf"

    def shards(self) -> list[str]:
        """Every shard's name, in order."""
        return [self.shard(i) for i in range(1, self.count + 1)]


def parse_shard_name(name: str) -> ShardName | None:
    """``name`` (a file name, or a ``/``-separated path such as a file's in a Hub repository) read as a
    shard's name; None when it is not one."""
    folder, sep, base = name.rpartition("/")
    m = _SHARD_NAME.match(base)
    return ShardName(folder + sep, m["prefix"], int(m["no"]), int(m["count"])) if m else None


def shard_paths(path: str | os.PathLike[str]) -> list[Path]:
    """All shard paths of the model ``path`` belongs to (just ``[path]`` for an unsplit file)."""
    p = Path(path)
    s = parse_shard_name(p.name)
    if s is None:
        return [p]
    if s.count == 0 or not 1 <= s.no <= s.count:
        raise GGUFError(f"{p}: shard name says part {s.no} of {s.count}, which cannot exist")
    return [p.with_name(name) for name in s.shards()]


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError as exc:  # a name too long for the file system, a path through a file, …
        raise GGUFError(f"{str(p)[:60]}…: {exc.strerror or exc}") from None


def read_header(model: str | os.PathLike[str] | ByteSource | list[ByteSource]) -> ModelHeader:
    """Read a model's header: a path (any shard of a split model), a ByteSource, or a list of shard
    sources in order. Only header bytes are read."""
    if isinstance(model, (str, os.PathLike)):
        if not _exists(Path(model)):
            raise GGUFError(f"{model}: no such file")
        paths = shard_paths(model)
        for i, p in enumerate(paths):
            if not _exists(p):
                raise GGUFError(
                    f"{p}: shard {i + 1} of {len(paths)} is missing "
                    f"(needed by {Path(model).name}); download every shard"
                )
        files = []
        for p in paths:
            with FileSource(p) as src:
                files.append(parse_gguf(src))
        named = len(paths) > 1 or parse_shard_name(Path(model).name) is not None
        return join_shards(files, named_as_split=named)
    sources = model if isinstance(model, list) else [model]
    return join_shards([parse_gguf(s) for s in sources], named_as_split=len(sources) > 1)


def _split_value(f: GGUFFile, key: str, want: GGUFValueType) -> int | None:
    kv = f.metadata.get(key)
    if kv is None:
        return None
    if kv.value_type != want:
        raise GGUFError(
            f"{f.name}: key {key!r} at byte {kv.offset}: has type {kv.value_type.name}, expected {want.name}"
        )
    return kv.value


def _same_value(a: KeyValue, b: KeyValue) -> bool:
    if a.value_type != b.value_type:
        return False
    if isinstance(a.value, LazyArray):
        return (a.value.element_type, a.value.count, a.value.raw) == (b.value.element_type, b.value.count, b.value.raw)
    return a.value == b.value


def join_shards(files: list[GGUFFile], named_as_split: bool) -> ModelHeader:
    n = len(files)
    first = files[0]
    count0 = _split_value(first, Keys.Split.LLM_KV_SPLIT_COUNT, GGUFValueType.UINT16)
    if count0 is None:
        if n > 1 or named_as_split:
            raise GGUFError(
                f"{first.name}: named as a shard of a split model but has no {Keys.Split.LLM_KV_SPLIT_COUNT} key"
            )
        return model_header(files)
    if count0 != n:
        raise GGUFError(
            f"{first.name}: {Keys.Split.LLM_KV_SPLIT_COUNT} is {count0} but {n} shard(s) were found by name"
        )
    tensors_count0 = _split_value(first, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, GGUFValueType.INT32)
    seen: dict[str, str] = {}
    for i, f in enumerate(files):
        no = _split_value(f, Keys.Split.LLM_KV_SPLIT_NO, GGUFValueType.UINT16)
        count = _split_value(f, Keys.Split.LLM_KV_SPLIT_COUNT, GGUFValueType.UINT16)
        n_tensors = _split_value(f, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, GGUFValueType.INT32)
        if no is None or count is None or n_tensors is None:
            raise GGUFError(f"{f.name}: shard {i + 1} of {n} lacks the split.* keys; it is not part of this model")
        if no != i:
            raise GGUFError(
                f"{f.name}: {Keys.Split.LLM_KV_SPLIT_NO} is {no} but this file is shard {i + 1} "
                f"of {n} (expected {i}): shards are misnamed, duplicated or out of order"
            )
        if count != count0:
            raise GGUFError(
                f"{f.name}: {Keys.Split.LLM_KV_SPLIT_COUNT} is {count} but the first shard says "
                f"{count0}: shards of different models are mixed"
            )
        if n_tensors != tensors_count0:
            raise GGUFError(
                f"{f.name}: {Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT} is {n_tensors} but the first "
                f"shard says {tensors_count0}: shards of different models are mixed"
            )
        for key, kv in f.metadata.items():
            ref = first.metadata.get(key)
            if i and key not in _SPLIT_KEYS and ref is not None and not _same_value(ref, kv):
                raise GGUFError(
                    f"{f.name}: key {key!r} at byte {kv.offset} differs from the first shard's "
                    f"({kv.value!r} vs {ref.value!r}): shards of different models are mixed"
                )
        for t in f.tensors:
            if t.name in seen:
                raise GGUFError(f"{f.name}: tensor {t.name!r} is also in {seen[t.name]}: duplicated shard data")
            seen[t.name] = f.name
    if len(seen) != tensors_count0:
        raise GGUFError(
            f"{first.name}: {Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT} is {tensors_count0} but the "
            f"{n} shard(s) hold {len(seen)} tensors"
        )
    return model_header(files)
