"""Environment settings, parsed in one place (precedence: flag > environment > file > default)."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import RegistryError

MAX_DATA_FILE_BYTES = 1 << 20  # models.toml and hardware.toml are a few KiB

# Shipped as package data (a wheel install carries them); models.toml at the repository root links here.
DATA_DIR = Path(__file__).resolve().parent / "data"


def cache_dir() -> Path:
    """Where assembled models and other downloads live: $HARNESS_CACHE_DIR or ~/.cache/harness."""
    env = os.environ.get("HARNESS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "harness"


def registry_path() -> Path:
    """models.toml: $HARNESS_REGISTRY, else the one shipped with the package."""
    env = os.environ.get("HARNESS_REGISTRY")
    return Path(env).expanduser() if env else DATA_DIR / "models.toml"


def hardware_path() -> Path:
    """hardware.toml (GPU and host profiles): $HARNESS_HARDWARE, else the one shipped with the package."""
    env = os.environ.get("HARNESS_HARDWARE")
    return Path(env).expanduser() if env else DATA_DIR / "hardware.toml"


def debug() -> bool:
    """HARNESS_DEBUG=1 shows tracebacks instead of one-line errors."""
    return os.environ.get("HARNESS_DEBUG", "") not in ("", "0")


def data_file_stamp(path: Path, what: str, env: str, name: str) -> tuple[int, int]:
    """(mtime_ns, size) of a data file (models.toml, hardware.toml) after checking it is one: a regular
    file (a FIFO would block the read forever, a device never end) of a sane size. ``what`` names it in
    messages ("registry"), ``env`` is the variable that points elsewhere, ``name`` the file it expects."""
    hint = f"set {env} to a {name}"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise RegistryError(f"{what} {path} not found; {hint}") from None
    except OSError as exc:
        raise RegistryError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RegistryError(f"{what} {path} is not a regular file; {hint}")
    if st.st_size > MAX_DATA_FILE_BYTES:
        raise RegistryError(
            f"{what} {path} is {st.st_size:,} bytes; a {name} is a few KiB (at most {MAX_DATA_FILE_BYTES:,})"
        )
    return st.st_mtime_ns, st.st_size


def read_data_file(path: Path, what: str, env: str, name: str) -> dict[str, Any]:
    """A data file's TOML, read with a bound and decoded strictly; every failure a RegistryError."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DATA_FILE_BYTES + 1)  # bounded: the file may have grown since its stat
    except FileNotFoundError:
        raise RegistryError(f"{what} {path} not found; set {env} to a {name}") from None
    except OSError as exc:
        raise RegistryError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_DATA_FILE_BYTES:
        raise RegistryError(f"{what} {path} is over {MAX_DATA_FILE_BYTES:,} bytes; a {name} is a few KiB")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{path}: not UTF-8 text (TOML is): byte {exc.start} is {data[exc.start]:#04x}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: invalid TOML: {exc}") from None
