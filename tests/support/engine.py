"""What the engine tests need (llama-cpp-python, its RPC backend), and llama.cpp's own GGUF parser
run out of process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from functools import cache
from pathlib import Path


@cache
def missing() -> str | None:
    """Why llama.cpp cannot be used here, or None when `import llama_cpp` works."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a shared library that does not load
        return f"llama-cpp-python is not importable ({exc}); `make install`"
    return None


@cache
def rpc_missing() -> str | None:
    """Why no loopback RPC server can be started here, or None."""
    if reason := missing():
        return reason
    spec = importlib.util.find_spec("llama_cpp")
    lib = Path(spec.origin).parent / "lib" / "libggml-rpc.so"
    if not lib.exists():
        return f"{lib} not found: llama-cpp-python was built without -DGGML_RPC=on; `make install` rebuilds it"
    return None


_ACCEPTS_SCRIPT = """
import json, sys
from harness.llama import reference_parser
so = reference_parser.lib()
verdicts = {}
for p in sys.argv[1:]:
    ctx = reference_parser.open_context(p)
    verdicts[p] = bool(ctx)
    if ctx:
        so.gguf_free(ctx)
print(json.dumps(verdicts))
"""


def engine_accepts(paths: list[Path]) -> dict[str, bool]:
    """Whether llama.cpp's gguf_init_from_file (no_alloc) accepts each file. Run in a child process
    so that an abort inside llama.cpp cannot take the test session down with it."""
    r = subprocess.run(
        [sys.executable, "-c", _ACCEPTS_SCRIPT, *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"llama.cpp's parser crashed: {r.stderr[-2000:]}"
    return json.loads(r.stdout)
