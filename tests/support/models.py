"""The two real models from PyPI that the suite checks against (`make models` installs them)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from harness import settings
from harness.errors import HarnessError
from harness.models.registry import model_path

GEMMA = "gemma3-270m-q4_k_m"
SMOLLM = "smollm2-135m-q4_1"
REAL_MODELS = (GEMMA, SMOLLM)


@cache
def missing() -> str | None:
    """Why the real models cannot be used here, or None when both are installed."""
    absent = []
    for name in REAL_MODELS:
        try:
            model_path(name)
        except HarnessError:
            absent.append(name)
    if not absent:
        return None
    return f"real model(s) {', '.join(absent)} not installed in {settings.cache_dir() / 'models'}; `make models`"


def real_model(name: str) -> Path:
    """The installed file of a real model. Only for tests marked `real_model`, which conftest skips
    when the models are absent; reaching the failure below means the marker is missing."""
    try:
        return model_path(name)
    except HarnessError as exc:
        pytest.fail(f"{exc}: a test that reads a real model must be marked `real_model` (`make models` installs them)")
