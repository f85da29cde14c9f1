"""Environment settings, parsed in one place (precedence: flag > environment > file > default)."""

from __future__ import annotations

import os
from pathlib import Path

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
