"""Markers say what a test needs (see pyproject.toml); a test whose needs this machine lacks is
skipped with the reason and the make target that provides it. Helpers live in tests/support."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import engine, models

# marker -> why this machine cannot run such a test (None: it can); each check runs at most once
_NEEDS = {"engine": engine.missing, "rpc": engine.rpc_missing, "real_model": models.missing}
# a test that takes one of these fixtures needs a real model, marked or not
_REAL_MODEL_FIXTURES = {"gemma_path", "smollm_path"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs before `-m` deselects, so `-m "not real_model"` leaves these out too."""
    for item in items:
        if _REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("real_model"):
            item.add_marker(pytest.mark.real_model)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    reasons = {why() for marker, why in _NEEDS.items() if item.get_closest_marker(marker) is not None} - {None}
    if reasons:
        pytest.skip("; ".join(sorted(reasons)))


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return models.real_model(models.GEMMA)


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return models.real_model(models.SMOLLM)


@pytest.fixture(scope="module")
def server():
    """A llama.cpp RPC server on loopback for the module's tests (tests needing it carry the rpc marker)."""
    from harness.llama.rpc import RpcServer

    with RpcServer() as srv:
        yield srv
