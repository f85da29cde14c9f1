"""Plans asked again are answered from the cache: the same request, model, data files, code and engine.

A plan of a large model is built from its header, sized at other quants for advice and checked by llama.cpp's
dry run; asked again unchanged, the answer is read back (`make bench-plan`: the 405B plan warm). The key holds
everything a plan depends on: every field of the request, what the model name resolves to (a file's size and
mtime; a registry entry known by its architecture), models.toml and hardware.toml, this host's RAM when
the request does not name it, the harness's own source files and the llama.cpp build. Not cached: plans
that load or measure (--verify, plans for this machine's devices or host), headers read from the Hub.
A cache file that cannot be read is ignored and rewritten; one that cannot be written costs only time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import fields
from pathlib import Path

from harness import settings
from harness.errors import HarnessError
from harness.llama.dryrun import engine_build  # a stat of the library, no engine import
from harness.models.hub import downloaded_entry
from harness.models.registry import load_registry, model_path, names_a_file
from harness.offload.hardware import host_ram_bytes

CACHE_VERSION = 1
FOLDER = "plans"
_PACKAGE = Path(__file__).resolve().parent


def _stamp(path: str | os.PathLike[str]) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _code_stamp() -> str:
    """The harness's own source: a plan made by other code is not this code's plan."""
    h = hashlib.sha256()
    for p in sorted(_PACKAGE.rglob("*")):
        if p.suffix in (".py", ".toml"):
            h.update(_stamp(p).encode())
    return h.hexdigest()


def _model_identity(model: str) -> str | None:
    """What ``model`` resolves to, cheaply (no header built); None: not cached."""
    if model.startswith("hf://"):
        return None
    if names_a_file(model):
        return "file:" + _stamp(model_path(model))
    entry = load_registry().get(model)
    if entry.file is not None:
        return "file:" + _stamp(model_path(model))
    if entry.hf is not None:
        local = downloaded_entry(entry)
        if local:
            return "file:" + ";".join(_stamp(p) for p in local)
    return f"architecture:{model}"


def key(req) -> str | None:
    """The cache key of a plan request (a harness.plan.PlanRequest), or None when it is not cached."""
    if req.verify or req.local or req.remote or req.host_profile == "this":
        return None
    try:
        identity = _model_identity(req.model)
        if identity is None:
            return None
        host_ram = req.host_ram_bytes
        if host_ram is None:
            host_ram = host_ram_bytes()
        parts = [
            CACHE_VERSION,
            {f.name: getattr(req, f.name) for f in fields(req)},
            identity,
            host_ram,
            _stamp(settings.registry_path()),
            _stamp(settings.hardware_path()),
            _code_stamp(),
            engine_build(),
        ]
    except (HarnessError, OSError):
        return None  # the plan itself will say what is wrong
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def _path(k: str) -> Path:
    return settings.cache_dir() / FOLDER / f"{k}.pickle"


def load(k: str):
    """The PlanResult stored under ``k``, or None."""
    try:
        with open(_path(k), "rb") as f:
            version, result = pickle.load(f)  # our own file, in the user's own cache directory
        return result if version == CACHE_VERSION else None
    except Exception:  # absent, damaged, or from classes that changed: plan again
        return None


def store(k: str, result) -> None:
    path = _path(k)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump((CACHE_VERSION, result), f)
        tmp.replace(path)
    except (OSError, pickle.PicklingError):
        pass
