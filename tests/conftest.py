from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness.errors import ModelNotFoundError  # noqa: E402
from harness.models.registry import resolve_path  # noqa: E402

GEMMA = "gemma3-270m-q4_k_m"
SMOLLM = "smollm2-135m-q4_1"


def real_model(name: str) -> Path:
    try:
        return resolve_path(name)
    except ModelNotFoundError as exc:
        pytest.fail(f"{exc} (make test installs it: `make models`)")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return real_model(GEMMA)


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return real_model(SMOLLM)


_ENGINE_SCRIPT = """
import json, sys
from harness.llama import libggml
so = libggml.lib()
verdicts = {}
for p in sys.argv[1:]:
    ctx = libggml.open_context(p)
    verdicts[p] = bool(ctx)
    if ctx:
        so.gguf_free(ctx)
print(json.dumps(verdicts))
"""


def engine_accepts(paths: list[Path]) -> dict[str, bool]:
    """Whether llama.cpp's gguf_init_from_file (no_alloc) accepts each file. Run in a child process
    so that an abort inside llama.cpp cannot take the test session down with it."""
    r = subprocess.run([sys.executable, "-c", _ENGINE_SCRIPT, *map(str, paths)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"llama.cpp's parser crashed: {r.stderr[-2000:]}"
    return json.loads(r.stdout)
