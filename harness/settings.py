"""Environment settings, parsed in one place (precedence: flag > environment > file > default)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where assembled models and other downloads live: $HARNESS_CACHE_DIR or ~/.cache/harness."""
    env = os.environ.get("HARNESS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "harness"


def registry_path() -> Path:
    """models.toml: $HARNESS_REGISTRY, else the one at the repository root."""
    env = os.environ.get("HARNESS_REGISTRY")
    return Path(env).expanduser() if env else REPO_ROOT / "models.toml"


def debug() -> bool:
    """HARNESS_DEBUG=1 shows tracebacks instead of one-line errors."""
    return os.environ.get("HARNESS_DEBUG", "") not in ("", "0")
