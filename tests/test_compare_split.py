"""harness compare with devices: each quant variant planned for the devices named, run there alone with its own
split, and llama.cpp's own buffer report set beside the plan's, per device; without devices nothing changes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.cli.compare import render
from harness.compare import Comparison, DeviceMemory, Row, compare
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES
from harness.plan import Actual, PlanRequest
from tests.support.models import SMOLLM

# SmolLM2 at ctx 512 on a 200 MiB RPC device (llama.cpp's dry run: 97.12 MiB of compute there): Q2_K's
# 82.41 MiB of weights put all 31 layers on it, the Q4_1 file 29 and Q4_K_M (98.87 MiB) 26.
BUDGET = "200MiB"


@pytest.fixture(scope="module")
def compared(server) -> Comparison:
    req = PlanRequest(model=SMOLLM, rpc=(f"{server.endpoint}={BUDGET}",), n_ctx=512)
    return compare(req, ["Q4_K_M", "Q2_K"], reps=1, n_chunks=1)


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_each_variant_runs_with_its_own_split(compared, server) -> None:
    out = json.loads(json.dumps(compared.to_json()))  # what `compare --json` prints
    device = f"RPC[{server.endpoint}]"
    assert out["split"] and out["devices"] == [device]
    rows = {r["quant"]: r for r in out["rows"]}
    assert list(rows) == ["Q4_1", "Q4_K_M", "Q2_K"]
    n = rows["Q2_K"]["n_layers_total"]
    # the 2-bit variant fits where Q4_K_M does not, by llama.cpp's own count of what it offloaded
    assert rows["Q2_K"]["fits_fully"] and rows["Q2_K"]["n_layers_offloaded"] == n
    assert not rows["Q4_K_M"]["fits_fully"] and rows["Q4_K_M"]["n_layers_offloaded"] < rows["Q4_1"]["n_gpu_layers"]
    for q, r in rows.items():
        assert r["n_layers_offloaded"] == r["n_gpu_layers"], q
        on_device, host = r["memory"]
        assert (on_device["device"], host["device"]) == (device, "host")
        assert on_device["n_layers"] + host["n_layers"] == n
        for m in (on_device, host):  # every buffer as planned, to the 0.01 MiB llama.cpp prints
            for k in ("weights_bytes", "kv_bytes", "compute_bytes", "output_bytes"):
                assert abs(m["predicted"][k] - m["actual"][k]) <= MIB_PRINT_TOLERANCE_BYTES, (q, m["device"], k)
        assert on_device["actual"]["weights_bytes"] > 0 and on_device["actual"]["kv_bytes"] > 0
        assert on_device["actual"]["total_bytes"] <= on_device["budget_bytes"]
        assert r["pp_tokens_per_s"] > 0 and r["tg_tokens_per_s"] > 0
    # quality as without devices: scored against the file, worse at fewer bits
    assert rows["Q4_1"]["kld"] is None and 0 < rows["Q4_K_M"]["kld"] < rows["Q2_K"]["kld"]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_the_table_sets_llama_cpp_beside_the_plan(compared, server) -> None:
    text = render(compared)
    assert "layers on devices (llama.cpp)" in text and "tg t/s split" in text
    assert text.count("  llama.cpp says") == 2 * len(compared.rows)  # the device and the host, each variant
    q2k = next(r for r in compared.rows if r.quant == "Q2_K")
    assert f"| Q2_K   | RPC[{server.endpoint}] |     31 |" in text and f"31/31 ({q2k.n_layers_offloaded})" in text


def _one_row(quant: str, memory: tuple[DeviceMemory, ...]) -> Row:
    return Row(quant, 100 << 20, 101 << 20, 4.5, 0, 31, 31, True, 50.0, 1, 50.0, 90.0, 40.0, 12.5, None, None,
               n_layers_offloaded=31, memory=memory)  # fmt: skip


def test_the_cli_passes_the_devices_and_prints_the_memory(monkeypatch) -> None:
    seen = []
    used = Actual(80 << 20, 10 << 20, 97 << 20)
    c = Comparison(
        "m",
        "Q4_1",
        (_one_row("Q4_1", (DeviceMemory("RPC[127.0.0.1:50052]", 200 << 20, 31, used, used),)),),
        (),
        ("RPC[127.0.0.1:50052]",),
        True,
    )

    def fake(req, quants, *args):
        seen.append((req, quants))
        return c

    monkeypatch.setattr("harness.cli.compare.compare_quants", fake)
    args = ["compare", "m.gguf", "--quants", "q4_1", "--rpc", "127.0.0.1:50052=200MiB", "--ctx", "512"]
    r = CliRunner().invoke(cli, [*args, "--local", "--json"])
    assert r.exit_code == 0, r.output
    req, quants = seen[0]
    assert (req.rpc, req.local, req.n_ctx, quants) == (("127.0.0.1:50052=200MiB",), True, 512, ["Q4_1"])
    side = {
        "weights_bytes": 80 << 20,
        "kv_bytes": 10 << 20,
        "compute_bytes": 97 << 20,
        "output_bytes": 0,
        "total_bytes": 187 << 20,
    }
    memory = json.loads(r.stdout)["rows"][0]["memory"]
    assert memory == [
        {"device": "RPC[127.0.0.1:50052]", "budget_bytes": 200 << 20, "n_layers": 31, "predicted": side, "actual": side}
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and seen[1][0].local is False
    assert r.stdout == render(c) + "\n" and "| Q4_1  | RPC[127.0.0.1:50052] |     31 | 80.00 MiB |" in r.stdout


def test_an_architecture_only_model_is_planned_for_the_devices_named() -> None:
    """No file to run: rows planned on the RPC device given (nothing contacted, nothing measured)."""
    args = ["compare", "8b-q4_k_m", "--quants", "Q4_K_M,Q2_K", "--rpc", "127.0.0.1:50052=4GiB", "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["split"] and out["devices"] == ["RPC[127.0.0.1:50052]"]
    rows = {r["quant"]: r for r in out["rows"]}
    assert not rows["Q4_K_M"]["fits_fully"] and rows["Q2_K"]["fits_fully"]  # 4.58 GiB of weights, and 2.95
    assert all(
        r["memory"] == [] and r["n_layers_offloaded"] is None and r["tg_tokens_per_s"] is None for r in rows.values()
    )


def test_a_gpu_profile_beside_rpc_devices_is_refused() -> None:
    """Without --local a profile's GPU is no device to run on: refused, not planned and then run elsewhere."""
    r = CliRunner().invoke(cli, ["compare", "8b-q4_k_m", "--rpc", "127.0.0.1:50052=4GiB", "--budget", "8GiB"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --gpu/--budget with --rpc: ") and r.stderr.count("\n") == 1
