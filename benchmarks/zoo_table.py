"""README's table per architecture: the plan against llama.cpp's own buffers, for every zoo model.

For each tiny model of tests/support/zoo.py, half its layers on a loopback RPC device (so both the
device and the host hold layers), flash attention on, at 4k and 32k context with f16 and q8_0 KV: the
device's KV/state and total as planned (compute from llama.cpp's dry run) and as llama.cpp allocated
them in a real load, and the total the fitted formula alone would give. Prints a markdown table.
`make zoo-table`.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import read_header
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES, load_and_report
from harness.llama.rpc import RpcServer
from harness.plan import PlanRequest, make_plan
from tests.support.zoo import ZOO

CONTEXTS = [(4096, "f16"), (4096, "q8_0"), (32768, "f16"), (32768, "q8_0")]


def pct(planned: int, actual: int, n_printed: int = 0) -> str:
    """'=' when the plan is within what llama.cpp's prints (0.01 MiB each, ``n_printed`` of them) can tell,
    else the error in percent."""
    if abs(planned - actual) <= n_printed * MIB_PRINT_TOLERANCE_BYTES:
        return "="
    if actual == 0:
        return "—"
    return f"{(planned - actual) / actual * 100:+.2f}%"


def main() -> int:
    with tempfile.TemporaryDirectory() as d, RpcServer() as server:
        os.environ["HARNESS_CACHE_DIR"] = os.path.join(d, "cache")
        rows = []
        for name, write in ZOO.items():
            path = write(Path(d) / f"{name}.gguf")
            n_layer = read_header(path).arch.n_layer
            ngl = n_layer // 2 + 1
            cells = []
            for n_ctx, kv in CONTEXTS:
                report = load_and_report(
                    path,
                    ngl,
                    n_ctx,
                    [server.endpoint],
                    type_k=kv,
                    type_v=kv,
                    flash_attn=True,
                    decode=False,
                    tensor_split=(1.0,),
                    swa_full=False,
                )
                actual_kv = sum(b.kv_bytes for b in report.rpc_buffers)
                actual_total = sum(b.total_bytes for b in report.rpc_buffers)
                # lines llama.cpp printed for the device: its model and compute buffers, each KV / RS cache
                n_kv_lines = sum(1 for line in report.log_lines if re.search(r"RPC\S* +(KV|RS) buffer size", line))
                plans = {}
                for compute in ("llama", "formula"):
                    req = PlanRequest(
                        model=str(path),
                        rpc=(f"{server.endpoint}={1 << 40}",),
                        n_ctx=n_ctx,
                        kv_type=kv,
                        n_gpu_layers=ngl,
                        compute=compute,
                        host_ram_bytes=1 << 40,
                    )
                    [plans[compute]] = make_plan(req).plan.devices
                cells.append(
                    f"{pct(plans['llama'].kv_bytes, actual_kv, n_kv_lines)} / "
                    f"{pct(plans['llama'].total_bytes, actual_total, n_kv_lines + 2)} / "
                    f"{pct(plans['formula'].total_bytes, actual_total, n_kv_lines + 2)}"
                )
            rows.append(f"| {name} ({ngl} of {n_layer + 1}) | " + " | ".join(cells) + " |")
    print("| model (layers on the device) | " + " | ".join(f"ctx {c // 1024}k, {kv}" for c, kv in CONTEXTS) + " |")
    print("|---|" + "--:|" * len(CONTEXTS))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
