"""A wheel install works away from the checkout: package data (models.toml, hardware.toml) and every
floor's subpackage travel in the wheel (a regression: the registry was missing once installed)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built without isolation (no download): this environment's setuptools must read pyproject.toml's
    # SPDX license string, as `make install` sees to
    if _setuptools_major() < 77 or importlib.util.find_spec("wheel") is None:
        pytest.skip("building the wheel needs setuptools>=77 and wheel here: `make install` installs them")
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{build.stderr[-2000:]}")
    (whl,) = out.glob("harness-*.whl")
    return whl


def test_wheel_carries_every_floor_and_the_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "harness/data/models.toml",
        "harness/data/hardware.toml",
        "harness/gguf/reader.py",
        "harness/quant/rules.py",
        "harness/offload/solver.py",
        "harness/models/registry.py",
        "harness/llama/engine.py",
        "harness/cli/__init__.py",
    ):
        assert required in names, f"{required} is not in {wheel.name}"


def test_installed_wheel_plans_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the installed copy comes first on the path; the dependencies (gguf, click) from this environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")} | {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import harness; print(harness.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    done = subprocess.run(
        [sys.executable, "-m", "harness", "plan", "8b-q4_k_m", "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["n_gpu_layers"] == plan["n_layers_total"] == 33  # Llama 3.1 8B: 32 blocks + output, one A100 40GB
