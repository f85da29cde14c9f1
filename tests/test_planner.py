"""The planner against llama.cpp itself, on a real offload device: llama.cpp's RPC backend on loopback.

Weights and KV bytes must equal what llama.cpp reports for the RPC device (to the 0.01 MiB it prints),
device totals must be within 3%, and the solver's n_gpu_layers must fit a budget in llama.cpp's actual
numbers while one more layer does not.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness import read_header
from harness.cli import cli
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES, load_and_report
from harness.llama.rpc import RpcServer
from harness.offload.placement import ContextParams
from harness.offload.solver import Device, Host, evaluate, solve
from tests.support.models import GEMMA, SMOLLM, real_model


def _actual(path, srv, ngl: int, cp: ContextParams):
    r = load_and_report(
        path,
        ngl,
        cp.n_ctx,
        [srv.endpoint],
        type_k=cp.type_k,
        type_v=cp.type_v,
        flash_attn=cp.flash_attn,
        n_ubatch=cp.n_ubatch,
        swa_full=cp.swa_full,
        decode=False,
    )
    [rpc] = r.rpc_buffers
    return r, rpc


CASES = [
    (SMOLLM, 10, ContextParams(n_ctx=2048)),
    (SMOLLM, 31, ContextParams(n_ctx=4096, type_k="q8_0", type_v="q8_0")),
    (SMOLLM, 20, ContextParams(n_ctx=1024, flash_attn=False)),
    (GEMMA, 10, ContextParams(n_ctx=2048)),
    (GEMMA, 19, ContextParams(n_ctx=4096, type_k="q8_0", type_v="q8_0")),
]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
@pytest.mark.parametrize(
    "name,ngl,cp", CASES, ids=[f"{c[0]}-ngl{c[1]}-{c[2].n_ctx}-{c[2].type_k}-fa{int(c[2].flash_attn)}" for c in CASES]
)
def test_prediction_matches_llama_cpp_on_rpc(server, name, ngl, cp) -> None:
    path = real_model(name)
    header = read_header(path)
    dev = Device("rpc", 1 << 40)
    plan = evaluate(header, [dev], Host(0, 1e9, 1e9), cp, ngl, [1.0])
    report, rpc = _actual(path, server, ngl, cp)
    assert report.n_layers_on_devices == ngl
    [d] = plan.devices
    assert abs(d.weights_bytes - rpc.model_bytes) <= MIB_PRINT_TOLERANCE_BYTES
    n_caches = 2 if header.arch.sliding_window else 1  # an iSWA model prints two KV buffers, each rounded
    assert abs(d.kv_bytes - rpc.kv_bytes) <= n_caches * MIB_PRINT_TOLERANCE_BYTES
    predicted = d.weights_bytes + d.kv_bytes + d.compute_bytes
    assert abs(predicted - rpc.total_bytes) <= 0.03 * rpc.total_bytes
    host_kv = sum(b.kv_bytes for b in report.host_buffers)
    assert abs(plan.host.kv_bytes - host_kv) <= n_caches * MIB_PRINT_TOLERANCE_BYTES


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_solver_choice_fits_and_one_more_does_not(server) -> None:
    path = real_model(SMOLLM)
    header = read_header(path)
    cp = ContextParams(n_ctx=2048)
    totals = {ngl: _actual(path, server, ngl, cp)[1].total_bytes for ngl in (20, 21)}
    budget = (totals[20] + totals[21]) // 2  # between what llama.cpp needs for 20 and for 21 layers
    plan = solve(header, [Device("rpc", budget)], Host(0, 1e9, 1e9), cp, margin_fraction=0.0)
    assert plan.n_gpu_layers == 20
    assert totals[20] <= budget < totals[21]


def test_405b_on_one_a100_40gb() -> None:
    result = CliRunner().invoke(cli, ["plan", "405b-q4_k_m", "--ctx", "8192", "--host-ram", "256GiB", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["verdict"] == "partial offload" and not out["fits_fully"]
    assert 0 < out["n_gpu_layers"] < out["n_layers_total"] == 127
    [dev] = out["devices"]
    assert dev["total_bytes"] <= dev["budget_bytes"] - dev["margin_bytes"]
    # every byte placed: device and host weights add up to the Q4_K_M tensor bytes
    assert dev["weights_bytes"] + out["host"]["weights_bytes"] >= 243_061_719_296
    assert out["host"]["total_bytes"] > 190 << 30 and out["predicted_tg_tokens_per_s"] > 0
    text = " ".join(out["suggestions"])
    assert "x a100-40gb hold every layer" in text and "no quant of this model fits fully" in text


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_verify_adds_llama_cpp_numbers(server) -> None:
    # with the default 2% safety margin, which absorbs the modelled compute buffer's error
    result = CliRunner().invoke(
        cli, ["plan", SMOLLM, "--rpc", f"{server.endpoint}=150MiB", "--ctx", "2048", "--verify", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    [dev] = out["devices"]
    assert out["n_layers_offloaded_actual"] == out["n_gpu_layers"] > 0
    assert abs(dev["weights_bytes"] - dev["actual"]["weights_bytes"]) <= MIB_PRINT_TOLERANCE_BYTES
    assert dev["actual"]["total_bytes"] <= dev["budget_bytes"]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_two_rpc_devices_split_as_planned(server) -> None:
    """Two offload devices: the solver's tensor_split gives llama.cpp exactly the planned layers."""
    with RpcServer() as second:
        args = [
            "plan",
            GEMMA,
            "--rpc",
            f"{server.endpoint}=300MiB",
            "--rpc",
            f"{second.endpoint}=700MiB",
            "--ctx",
            "2048",
            "--verify",
            "--json",
        ]
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["n_layers_offloaded_actual"] == out["n_gpu_layers"] and len(out["devices"]) == 2
    assert all(d["n_layers"] > 0 or d["holds_output"] for d in out["devices"])
    for d in out["devices"]:
        assert abs(d["weights_bytes"] - d["actual"]["weights_bytes"]) <= MIB_PRINT_TOLERANCE_BYTES
        assert abs(d["kv_bytes"] - d["actual"]["kv_bytes"]) <= 2 * MIB_PRINT_TOLERANCE_BYTES
        assert d["actual"]["total_bytes"] <= d["budget_bytes"]


def test_host_short_of_ram_cannot_run() -> None:
    result = CliRunner().invoke(cli, ["plan", "405b-q4_k_m", "--host-ram", "64GiB", "--json"])
    out = json.loads(result.stdout)
    assert out["verdict"] == "cannot run" and out["host"]["total_bytes"] > out["host"]["ram_bytes"]


_GRID = [(ngl, ctx, fa) for ngl in (5, 19) for ctx in (1024, 4096) for fa in (True, False)]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("name", [SMOLLM, GEMMA])
def test_compute_buffers_against_simulated_allocation(server, name) -> None:
    """The modelled compute buffers against llama.cpp's no_alloc reservation, which reports them exactly
    as a real allocation would: one device, and two devices where the first holds only layers."""
    from harness.offload.buffers import compute_bytes

    path = real_model(name)
    header = read_header(path)
    worst = 0.0
    for ngl, ctx, fa in _GRID:
        cp = ContextParams(n_ctx=ctx, flash_attn=fa)
        r = load_and_report(
            path, ngl, ctx, [server.endpoint], flash_attn=fa, swa_full=False, decode=False, no_alloc=True
        )
        [rpc] = r.rpc_buffers
        predicted = compute_bytes(header, cp, ngl > 1, True)
        worst = max(worst, abs(predicted - rpc.compute_bytes) / rpc.compute_bytes)
    with RpcServer() as second:
        n_layer = header.arch.n_layer
        for ctx, fa in ((1024, True), (4096, False)):
            cp = ContextParams(n_ctx=ctx, flash_attn=fa)
            r = load_and_report(
                path,
                n_layer + 1,
                ctx,
                [server.endpoint, second.endpoint],
                flash_attn=fa,
                swa_full=False,
                decode=False,
                no_alloc=True,
                tensor_split=[n_layer, 1.0],
            )
            middle = next(b for b in r.rpc_buffers if b.name.endswith(f"[{server.endpoint}]"))
            predicted = compute_bytes(header, cp, True, False)
            worst = max(worst, abs(predicted - middle.compute_bytes) / middle.compute_bytes)
    assert worst <= 0.05


def test_hardware_profiles_and_this_host() -> None:
    result = CliRunner().invoke(cli, ["hardware", "--json"])
    out = json.loads(result.stdout)
    keys = {g["key"] for g in out["gpus"]}
    assert {"a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "rtx-4090", "rtx-3090"} <= keys
    assert {"ddr4-2ch", "ddr5-2ch", "ddr5-8ch", "ddr5-12ch"} <= {h["key"] for h in out["hosts"]}
    assert out["this_host"]["ram_bytes"] > 0


@pytest.mark.engine
@pytest.mark.rpc
def test_rpc_server_command_stops_on_sigterm() -> None:
    import signal
    import subprocess
    import sys
    import time

    from harness.llama.rpc import RpcError, free_port, probe

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "rpc-server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe("127.0.0.1", port)
                break
            except Exception:
                assert time.monotonic() < deadline, "rpc-server did not start"
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(RpcError):
        probe("127.0.0.1", port, timeout_s=0.5)
