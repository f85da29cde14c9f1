"""plan --verify on local CUDA GPUs and `make gpu-check`, without a GPU: nvidia-smi's CSV (canned, and through a
stand-in nvidia-smi on PATH), llama.cpp's CUDA buffer lines in the formats the vendored source prints them
(figures of a published mainline log), --verify --local assembled from a stubbed engine, its refusal where
there is no GPU, and the gpu-check report made from stubbed steps."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.llama import nvidia
from harness.llama.engine import LocalGPU, LogCapture, report_of
from harness.plan import PlanRequest, make_plan
from tests.support.writer import write_llama

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20

# `nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,pci.bus_id --format=csv,noheader,nounits`
# as an H200 host prints it (one idle GPU, one in use) plus a GPU sharing host memory, which says [N/A]
SMI_MEMORY = """\
0, NVIDIA H200, 143771, 0, 143252, 00000000:18:00.0
1, NVIDIA H200, 143771, 17094, 126158, 00000000:2A:00.0
2, NVIDIA GB10, [N/A], [N/A], [N/A], 0000000F:01:00.0
"""


def test_nvidia_smi_memory_csv_parses_to_bytes() -> None:
    rows = nvidia.parse_memory(SMI_MEMORY)
    assert rows == (
        nvidia.GpuMemory(0, "NVIDIA H200", 143771 * MIB, 0, 143252 * MIB, "0000:18:00.0"),
        nvidia.GpuMemory(1, "NVIDIA H200", 143771 * MIB, 17094 * MIB, 126158 * MIB, "0000:2a:00.0"),
        nvidia.GpuMemory(2, "NVIDIA GB10", None, None, None, "000f:01:00.0"),
    )


def test_a_gpu_name_with_a_comma_is_kept_whole() -> None:
    [row] = nvidia.parse_memory("0, NVIDIA RTX A6000, rev 2, 49140, 1, 49139, 00000000:01:00.0\n")
    assert (row.name, row.used_bytes, row.pci_bus_id) == ("NVIDIA RTX A6000, rev 2", MIB, "0000:01:00.0")


@pytest.mark.parametrize(
    "text",
    [
        "0, NVIDIA H200, 143771\n",
        "x, NVIDIA H200, 1, 2, 3, 00000000:18:00.0\n",
        "0, NVIDIA H200, 1, lots, 3, 0:1:0.0\n",
    ],
)
def test_what_is_not_nvidia_smis_csv_is_refused(text) -> None:
    with pytest.raises(nvidia.NvidiaSmiError):
        nvidia.parse_memory(text)


def test_llama_cpp_devices_are_matched_to_nvidia_smi_rows_by_pci_bus_id() -> None:
    rows = nvidia.parse_memory(SMI_MEMORY)
    # ggml-cuda's device id: cudaDeviceGetPCIBusId, lowercased (4-digit domain)
    assert nvidia.gpu_for(rows, "0000:2a:00.0").index == 1
    assert nvidia.gpu_for(rows, "0000:99:00.0") is None  # several GPUs and no match: the orders may differ
    assert nvidia.gpu_for(rows, None) is None
    assert nvidia.gpu_for(rows[:1], None).index == 0  # one GPU: that one
    assert nvidia.gpu_for((), "0000:18:00.0") is None


def _fake_nvidia_smi(folder: Path, stdout: str, status: int = 0) -> Path:
    """An executable named nvidia-smi that records its arguments and prints ``stdout``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    (folder / "out.txt").write_text(stdout)
    exe.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        "here = pathlib.Path(__file__).parent\n"
        "(here / 'args.txt').write_text(' '.join(sys.argv[1:]))\n"
        "sys.stdout.write((here / 'out.txt').read_text())\n"
        f"sys.exit({status})\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return folder


def test_query_memory_runs_nvidia_smi_with_the_documented_query(tmp_path, monkeypatch) -> None:
    folder = _fake_nvidia_smi(tmp_path / "bin", SMI_MEMORY)
    monkeypatch.setenv("PATH", str(folder))
    assert [r.index for r in nvidia.query_memory()] == [0, 1, 2]
    assert (folder / "args.txt").read_text() == (
        "--query-gpu=index,name,memory.total,memory.used,memory.free,pci.bus_id --format=csv,noheader,nounits"
    )


def test_query_memory_is_empty_without_nvidia_smi_or_when_it_fails(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert nvidia.query_memory() == ()
    monkeypatch.setenv("PATH", str(_fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed\n", status=9)))
    assert nvidia.query_memory() == ()
    with pytest.raises(nvidia.NvidiaSmiError, match="status 9: NVIDIA-SMI has failed"):
        nvidia.smi(nvidia.MEMORY_FIELDS)


# -- llama.cpp's CUDA log --------------------------------------------------------------------------------------

# Log "R" of shared/data/cuda-logs-published.json (mainline llama.cpp, GLM-Z1 32B IQ4_XS on an RTX 3090 Ti,
# n_ctx 32768, flash attention, f16 KV), written with the format strings of the vendored source:
# llama.cpp (llama_prepare_model_devices), llama-model.cpp (load_tensors), llama-context.cpp (output buffer,
# sched_reserve), llama-kv-cache.cpp
R_BUS_ID = "0000:01:00.0"


# the format strings as the vendored source has them (printf's %u and %d print alike here)
C_FORMATS = {
    "device": "%s: using device %s (%s) (%s) - %zu MiB free",
    "offloaded": "%s: offloaded %d/%d layers to GPU",
    "model": "%s: %12s model buffer size = %8.2f MiB",
    "output": "%s: %10s  output buffer size = %8.2f MiB",
    "kv": "%s: %10s KV buffer size = %8.2f MiB",
    "kv_size": "%s: size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs), K (%s): %7.2f MiB, V (%s): %7.2f MiB",
    "compute": "%s: %10s compute buffer size = %8.2f MiB",
}


def _printf(kind: str, *args) -> str:
    """One log line as llama.cpp's printf writes it."""
    return C_FORMATS[kind].replace("%zu", "%d").replace("%u", "%d") % args


def _cuda_log_lines() -> list[str]:
    lines = [
        _printf("device", "llama_prepare_model_devices", "CUDA0", "NVIDIA GeForce RTX 3090 Ti", R_BUS_ID, 23041),
        _printf("offloaded", "load_tensors", 62, 62),
    ]
    for name, mib in (("CUDA0", 16303.48), ("CPU_Mapped", 471.75)):
        lines.append(_printf("model", "load_tensors", name, mib))
    lines.append(_printf("output", "llama_context", "CUDA_Host", 0.58))
    lines.append(_printf("kv", "llama_kv_cache", "CUDA0", 1952.00))
    lines.append(_printf("kv_size", "llama_kv_cache", 1952.00, 32768, 61, 1, 1, "f16", 976.00, "f16", 976.00))
    for name, mib in (("CUDA0", 353.00), ("CUDA_Host", 76.01)):
        lines.append(_printf("compute", "sched_reserve", name, mib))
    assert lines[2] == "load_tensors:        CUDA0 model buffer size = 16303.48 MiB"  # as log R printed it
    return lines


def _cuda_report(used_before_mib: int = 0, used_after_mib: int = 19168, **kw):
    capture = LogCapture()
    for line in _cuda_log_lines():
        capture.feed(2, line + "\n")
    capture.flush()
    smi = "0, NVIDIA GeForce RTX 3090 Ti, 24564, {used}, 1000, 00000000:01:00.0\n"
    return report_of(
        "/models/glm.gguf",
        capture,
        n_gpu_layers=kw.pop("n_gpu_layers", 62),
        devices=(),
        type_k="f16",
        type_v="f16",
        no_alloc=False,
        load_s=1.5,
        n_decoded=512,
        decode_s=0.1,
        gpus=("CUDA0",),
        gpu_memory_before=nvidia.parse_memory(smi.format(used=used_before_mib)),
        gpu_memory_after=nvidia.parse_memory(smi.format(used=used_after_mib)),
    )


def test_the_cuda_buffer_lines_parse_into_device_and_host_buffers() -> None:
    r = _cuda_report()
    assert r.buffer("CUDA0").model_mib == 16303.48
    assert r.buffer("CUDA0").kv_mib == 1952.00
    assert r.buffer("CUDA0").compute_mib == 353.00
    assert r.buffer("CUDA0").total_bytes == round(16303.48 * MIB) + 1952 * MIB + 353 * MIB
    assert r.buffer("CUDA_Host").compute_mib == 76.01 and r.buffer("CUDA_Host").output_mib == 0.58
    assert [b.name for b in r.device_buffers] == ["CUDA0"]
    assert {b.name for b in r.host_buffers} == {"CPU_Mapped", "CUDA_Host"}
    assert r.rpc_buffers == ()
    [dev] = r.offload_devices
    assert (dev.name, dev.description, dev.device_id, dev.free_mib) == (
        "CUDA0",
        "NVIDIA GeForce RTX 3090 Ti",
        R_BUS_ID,
        23041,
    )
    assert r.n_layers_on_devices == 62
    [kv] = r.kv_caches
    assert (kv.cells, kv.layers, kv.k_mib) == (32768, 61, 976.0)
    assert r.actual_bytes("CUDA0") == r.buffer("CUDA0").total_bytes


def test_nvidia_smis_used_memory_is_read_for_the_device_llama_cpp_named() -> None:
    r = _cuda_report(used_before_mib=300, used_after_mib=19168)
    assert r.gpu_used_bytes("CUDA0") == (300 * MIB, 19168 * MIB)
    assert r.gpu_used_bytes("CUDA1") == (300 * MIB, 19168 * MIB)  # not named by llama.cpp: the only GPU
    assert _cuda_report().gpus == ("CUDA0",)


def _counting_nvidia_smi(folder: Path, used_mib: Sequence[int]) -> Path:
    """A stand-in nvidia-smi whose n-th call reports used_mib[n] MiB in use on one H200."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import pathlib\n"
        "n_file = pathlib.Path(__file__).parent / 'calls'\n"
        "n = int(n_file.read_text()) if n_file.exists() else 0\n"
        "n_file.write_text(str(n + 1))\n"
        f"used = {list(used_mib)!r}[n]\n"
        "print(f'0, NVIDIA H200, 143771, {used}, {143771 - used}, 00000000:18:00.0')\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.engine
@pytest.mark.real_model
def test_the_load_asks_nvidia_smi_before_and_while_loaded_in_its_child(smollm_path, tmp_path, monkeypatch) -> None:
    from harness.llama.engine import load_and_report

    folder = _counting_nvidia_smi(tmp_path / "bin", [100, 350])
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    r = load_and_report(smollm_path, 0, 512, (), gpu_memory=True, isolated=True, n_decode_tokens=16)
    assert (folder / "calls").read_text() == "2"  # once before the load, once while loaded (after the decode)
    assert [g.used_bytes for g in r.gpu_memory_before] == [100 * MIB]
    assert [g.used_bytes for g in r.gpu_memory_after] == [350 * MIB]
    assert r.gpu_used_bytes("CUDA0") == (100 * MIB, 350 * MIB) and r.n_tokens_decoded == 16
    plain = load_and_report(smollm_path, 0, 512, ())
    assert plain.gpu_memory_before == plain.gpu_memory_after == () and (folder / "calls").read_text() == "2"


@pytest.mark.engine
@pytest.mark.real_model
def test_a_gpu_this_build_does_not_see_is_an_engine_error(smollm_path) -> None:
    from harness.errors import EngineError
    from harness.llama.engine import load_and_report, local_gpus

    seen = ", ".join(g.name for g in local_gpus()) or "none"
    with pytest.raises(EngineError, match=f"no local GPU named CUDA9: this llama.cpp build sees {seen}"):
        load_and_report(smollm_path, 1, 512, (), gpus=("CUDA9",), isolated=True)


# -- plan --verify --local ---------------------------------------------------------------------------------------

H200 = LocalGPU("CUDA0", "NVIDIA H200", 140 << 30, 143771 * MIB)


@pytest.fixture
def model(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    [path] = write_llama(tmp_path / "m.gguf", n_layer=4)
    return path


@pytest.fixture
def h200(monkeypatch):
    """One local H200 as the engine would list it, and the engine's load stubbed with the canned CUDA log."""
    calls = []

    def fake_load(path, n_gpu_layers, n_ctx, devices=(), **kw):
        calls.append(dict(path=path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, devices=devices, **kw))
        return _cuda_report(used_before_mib=600, used_after_mib=19800)

    monkeypatch.setattr("harness.plan.local_gpus", lambda: (H200,))
    monkeypatch.setattr("harness.plan.load_and_report", fake_load)
    return calls


def test_verify_local_loads_on_the_gpu_and_sets_the_driver_beside_the_plan(model, h200) -> None:
    r = make_plan(PlanRequest(model=str(model), n_ctx=1024, local=True, verify=True, compute="formula"))
    [call] = h200
    assert call["devices"] == [] and call["gpus"] == ("CUDA0",) and call["gpu_memory"] is True
    assert call["isolated"] is True and call["n_decode_tokens"] == 512  # a whole micro-batch: the pool's size
    assert call["n_gpu_layers"] == r.plan.n_gpu_layers and call["tensor_split"] == r.plan.tensor_split
    [dev] = r.plan.devices
    assert dev.name == "CUDA0" and dev.budget_bytes == H200.total_bytes
    a = r.actual["CUDA0"]
    assert (a.weights_bytes, a.kv_bytes, a.compute_bytes) == (round(16303.48 * MIB), 1952 * MIB, 353 * MIB)
    assert (a.gpu_used_before_bytes, a.gpu_used_after_bytes) == (600 * MIB, 19800 * MIB)
    assert a.gpu_used_delta_bytes == 19200 * MIB
    assert a.measured_reserve_bytes == 19200 * MIB - a.total_bytes
    host = r.actual["host"]
    assert host.compute_bytes == round(76.01 * MIB) and host.output_bytes == round(0.58 * MIB)
    assert r.n_layers_offloaded_actual == 62
    assert any(n.startswith("CUDA0 was verified (NVIDIA GeForce RTX 3090 Ti): nvidia-smi counted") for n in r.notes)


def test_verify_local_with_a_smaller_budget_is_verified_on_the_card(model, h200) -> None:
    r = make_plan(
        PlanRequest(model=str(model), n_ctx=1024, budget_bytes=64 * MIB, local=True, verify=True, compute="formula")
    )
    [call] = h200  # not on a loopback RPC server: on the card
    assert call["gpus"] == ("CUDA0",) and call["devices"] == []
    [dev] = r.plan.devices
    assert dev.budget_bytes == 64 * MIB and dev.name != "CUDA0"
    assert r.actual[dev.name].gpu_used_delta_bytes == 19200 * MIB
    assert any(n.startswith(f"{dev.name} was verified on CUDA0 (") for n in r.notes)


def test_verify_local_through_the_cli_shows_the_drivers_count(model, h200) -> None:
    args = ["plan", str(model), "--local", "--verify", "--ctx", "1024", "--compute", "formula"]
    r = CliRunner().invoke(cli, [*args, "--json"])
    assert r.exit_code == 0, r.output
    [dev] = json.loads(r.stdout)["devices"]
    a = dev["actual"]
    assert a["gpu_used_before_bytes"] == 600 * MIB and a["gpu_used_after_bytes"] == 19800 * MIB
    assert a["gpu_used_delta_bytes"] == 19200 * MIB
    assert a["measured_reserve_bytes"] == 19200 * MIB - a["total_bytes"]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    [row] = [line for line in text.stdout.splitlines() if line.startswith("|   nvidia-smi counted")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # reserve: 19200 MiB counted less llama.cpp's 16303.48 + 1952 + 353 MiB on CUDA0; total: the driver's count
    assert cells[5:7] == ["591.52 MiB", "18.75 GiB"], row


@pytest.mark.parametrize("extra", [[], ["--budget", "1GiB"]])
def test_verify_local_without_a_gpu_is_one_line(model, monkeypatch, extra) -> None:
    monkeypatch.setattr("harness.plan.local_gpus", lambda: ())
    monkeypatch.setattr("harness.plan.load_and_report", lambda *a, **k: pytest.fail("nothing may be loaded"))
    monkeypatch.setattr("harness.plan.RpcServer", lambda *a, **k: pytest.fail("no loopback server"))
    r = CliRunner().invoke(cli, ["plan", str(model), "--local", "--verify", "--compute", "formula", *extra])
    assert r.exit_code == 1 and r.stdout == "", r.output
    [line] = r.stderr.splitlines()
    assert line.startswith("error: --verify --local: this llama.cpp build sees no local GPU here"), line


def test_verify_local_with_more_gpus_than_here_is_one_line(model, h200) -> None:
    r = CliRunner().invoke(
        cli, ["plan", str(model), "--local", "--budget", "1GiB", "--gpus", "2", "--verify", "--compute", "formula"]
    )
    assert r.exit_code == 1 and not h200, r.output
    assert r.stderr == (
        "error: --verify --local: the plan has 2 GPUs but this llama.cpp build sees 1 (CUDA0): give --gpus 1 or fewer\n"
    )


@pytest.mark.engine
def test_verify_local_on_this_engine_build_without_a_gpu(model) -> None:
    from harness.llama.engine import local_gpus

    if local_gpus():
        pytest.skip("this machine has a GPU: `make gpu-check` verifies on it")
    r = CliRunner().invoke(cli, ["plan", str(model), "--local", "--verify", "--compute", "formula"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "sees no local GPU" in r.stderr, r.output


# -- the gpu-check report -------------------------------------------------------------------------------------


@cache
def _gpu_check():
    """scripts/gpu_check.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _plan_json(n_gpu_layers: int, budget: int) -> dict:
    dev = {
        "name": "CUDA0",
        "budget_bytes": budget,
        "weights_bytes": 200 * MIB,
        "kv_bytes": 10 * MIB,
        "compute_bytes": 600 * MIB,
        "reserve_bytes": 400 * MIB,
        "margin_bytes": 0,
        "total_bytes": 1210 * MIB,
        "headroom_bytes": budget - 1210 * MIB,
        "n_layers": n_gpu_layers - 1,
        "holds_output": True,
        "actual": {
            "weights_bytes": 201 * MIB,
            "kv_bytes": 10 * MIB,
            "compute_bytes": 598 * MIB,
            "total_bytes": 809 * MIB,
            "gpu_used_before_bytes": 500 * MIB,
            "gpu_used_after_bytes": 1800 * MIB,
            "gpu_used_delta_bytes": 1300 * MIB,
            "measured_reserve_bytes": 491 * MIB,
        },
    }
    host = {"weights_bytes": 170 * MIB, "kv_bytes": 0, "compute_bytes": 5 * MIB, "output_bytes": MIB}
    host["total_bytes"] = sum(host.values())
    host["actual"] = dict(host, compute_bytes=6 * MIB, total_bytes=host["total_bytes"] + MIB)
    return {
        "n_ctx": 512,
        "kv_type": "f16",
        "flash_attn": True,
        "n_ubatch": 512,
        "verdict": "fits",
        "n_gpu_layers": n_gpu_layers,
        "n_layers_total": 19,
        "n_layers_offloaded_actual": n_gpu_layers,
        "sources": {"compute": "llama.cpp dry run"},
        "devices": [dev],
        "host": host,
        "predicted_tg_tokens_per_s": 900.0,
        "notes": ["a note"],
    }


class _Steps:
    """A stand-in for every command gpu-check runs: canned answers, each call recorded; the clock moves 2 s a
    step."""

    def __init__(self, plan_timeout: bool = False) -> None:
        self.calls: list[tuple[list[str], float, dict]] = []
        self.now = 0.0
        self.plan_timeout = plan_timeout

    def clock(self) -> float:
        return self.now

    def __call__(self, cmd, timeout_s, env):
        self.calls.append((list(cmd), timeout_s, env))
        self.now += 2.0
        args = list(cmd)
        if args[0] == "nvidia-smi":
            return 0, "0, NVIDIA H200, 9.0, 570.86.15, 143771, 00000000:18:00.0\n", ""
        if args[:2] in (["make", "install"], ["make", "models"]):
            return 0, "", ""
        if args[0] == "nvcc":
            return 0, "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.8, V12.8.93\n", ""
        if args[1:2] == ["-c"]:
            return 0, json.dumps({"llama_cpp_python": "0.3.36", "cuda_library": True}), ""
        sub = args[1]
        if sub == "models":
            rows = [
                {"name": "gemma3-270m-q4_k_m", "state": "downloaded", "size_bytes": 253113024},
                {"name": "smollm2-135m-q4_1", "state": "downloaded", "size_bytes": 98362432},
            ]
            return 0, json.dumps(rows), ""
        if sub == "inspect":
            ctx = 32768 if args[2].startswith("gemma") else 8192
            return 0, json.dumps({"architecture": "x", "context_length": ctx}), ""
        if sub == "plan":
            if "--budget" in args:
                if self.plan_timeout:
                    return None, "", "loading…"
                return 0, json.dumps(_plan_json(9, int(args[args.index("--budget") + 1]))), ""
            return 0, json.dumps(_plan_json(19, 143771 * MIB)), ""
        if sub == "bench":
            return 0, json.dumps([{"n_prompt": 512, "avg_ts": 30000.0}]), ""
        if sub == "compare":
            return 1, "", "error: llama.cpp could not quantize\n"
        raise AssertionError(args)


def test_the_report_holds_every_case_and_goes_on_past_a_failed_step(tmp_path) -> None:
    g = _gpu_check()
    steps = _Steps(plan_timeout=True)
    out = tmp_path / "report.json"
    check = g.Check(out, steps, deadline_s=570, clock=steps.clock, env={"PATH": "/usr/bin"})
    g.run_check(check, g.DEFAULT_MODELS)
    report = json.loads(out.read_text())

    commands = [c for c, _, _ in steps.calls]
    assert commands[1][:2] == ["make", "install"] and "CUDA=1" in commands[1] and "CUDA_ARCH=90" in commands[1]
    assert commands[2][:2] == ["make", "models"] and "CUDA_ARCH=90" in commands[2]
    assert steps.calls[1][2]["CMAKE_BUILD_PARALLEL_LEVEL"] == str(os.cpu_count())
    assert report["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "compute_cap": "9.0",
            "driver_version": "570.86.15",
            "memory_total_bytes": 143771 * MIB,
            "pci_bus_id": "0000:18:00.0",
        }
    ]
    assert report["build"]["cuda_arch"] == "90"
    assert report["build"]["nvcc"] == "Cuda compilation tools, release 12.8, V12.8.93"
    assert report["build"]["engine"] == {"llama_cpp_python": "0.3.36", "cuda_library": True}

    # gemma at 512, 8192 and 32768; smollm2's training context is 8192, checked once
    cases = [(c["model"], c["ctx_asked"], c["kind"]) for c in report["cases"]]
    assert cases == [
        (m, ctx, kind)
        for m, contexts in (("gemma3-270m-q4_k_m", (512, 8192, 0)), ("smollm2-135m-q4_1", (512, 8192)))
        for ctx in contexts
        for kind in ("full card", "partial")
    ] + [(m, ctx, f"stand-in, {gpu} budget") for m, gpu, ctx, _ in g.STANDIN_CASES]
    # the registry's architecture entries: planned for the A100 40GB profile, verified on the local card
    standin = [c for c, _, _ in steps.calls if c[1:3] == ["plan", "70b-q4_k_m"]]
    assert standin and {"--gpu", "a100-40gb", "--local", "--verify"} <= set(standin[0])
    full, partial = report["cases"][:2]
    assert full["status"] == "ok" and full["partial"] is False
    [dev] = full["devices"]
    assert dev["predicted"]["weights_bytes"] == 200 * MIB and dev["llama_cpp"]["weights_bytes"] == 201 * MIB
    assert dev["llama_cpp_minus_predicted"] == {"weights_bytes": MIB, "kv_bytes": 0, "compute_bytes": -2 * MIB}
    assert dev["nvidia_smi"] == {
        "used_before_bytes": 500 * MIB,
        "used_after_bytes": 1800 * MIB,
        "used_delta_bytes": 1300 * MIB,
    }
    assert (dev["measured_reserve_bytes"], dev["predicted_reserve_bytes"]) == (491 * MIB, 400 * MIB)
    assert dev["driver_minus_predicted_bytes"] == 90 * MIB  # 1300 against weights + KV + compute + reserve
    assert full["host"]["llama_cpp_minus_predicted"]["compute_bytes"] == MIB
    # the partial case: half of what the card held (weights + KV + compute), as a --budget, on the same card
    assert partial["budget_bytes"] == 405 * MIB and partial["status"] == "timeout" and "devices" not in partial
    assert [c for c in commands if "--budget" in c][0][-2:] == ["--budget", str(405 * MIB)]

    assert report["bench"]["model"] == "gemma3-270m-q4_k_m" and report["bench"]["records"][0]["avg_ts"] == 30000.0
    assert report["compare"]["result"] is None
    by_name = {s["name"]: s for s in report["steps"]}
    assert by_name["compare gemma3-270m-q4_k_m"]["status"] == "failed"
    assert by_name["compare gemma3-270m-q4_k_m"]["why"] == "error: llama.cpp could not quantize"
    assert report["summary"]["failed"] == 1 and report["summary"]["timeout"] == 5
    # gemma's bench runs before smollm2's cases, which went on past gemma's timed-out ones
    assert commands.index([c for c in commands if c[1:2] == ["bench"]][0]) < commands.index(
        [c for c in commands if c[1:3] == ["plan", "smollm2-135m-q4_1"]][0]
    )
    assert not check.all_ok


def test_steps_past_the_deadline_are_skipped_and_the_report_is_still_written(tmp_path) -> None:
    g = _gpu_check()
    steps = _Steps()
    out = tmp_path / "report.json"
    check = g.Check(out, steps, deadline_s=20, clock=steps.clock, env={"PATH": "/usr/bin"})
    g.run_check(check, g.DEFAULT_MODELS)
    report = json.loads(out.read_text())
    ran = [s for s in report["steps"] if s["status"] != "skipped"]
    assert len(ran) == len(steps.calls) == 8  # 2 s each; none started with less than 1 s left
    assert all(t <= 20 - g.WRITE_MARGIN_S for _, t, _ in steps.calls)
    assert report["summary"]["skipped"] > 0 and report["summary"]["failed"] == 0
    assert all(s["why"] == "the overall deadline was reached" for s in report["steps"] if s["status"] == "skipped")


def test_no_gpu_skips_everything_with_the_reason(tmp_path) -> None:
    g = _gpu_check()

    def runner(cmd, timeout_s, env):
        return 127, "", "nvidia-smi: command not found\n"

    out = tmp_path / "r.json"
    assert g.main(["--out", str(out)], runner=runner) == 1
    report = json.loads(out.read_text())
    assert report["steps"][0]["status"] == "failed" and report["gpus"] == []
    assert {s["status"] for s in report["steps"][1:]} == {"skipped"}
    assert report["finished"] and report["cases"] == []


def test_cuda_arch_and_build_env(tmp_path) -> None:
    g = _gpu_check()
    assert g.cuda_arch([{"compute_cap": "9.0"}, {"compute_cap": "8.0"}, {"compute_cap": "9.0"}]) == "80;90"
    assert g.cuda_arch([{"compute_cap": "[N/A]"}]) == ""
    assert g.build_env({"PATH": "/nowhere"})["CMAKE_BUILD_PARALLEL_LEVEL"] == str(os.cpu_count())
    assert g.build_env({"PATH": "/nowhere", "CMAKE_BUILD_PARALLEL_LEVEL": "3"})["CMAKE_BUILD_PARALLEL_LEVEL"] == "3"
    # nvcc off PATH but in the toolkit's folder: that folder is put first, for CMake's CUDA language
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").touch()
    env = g.build_env({"PATH": "/nowhere", "CUDA_HOME": str(tmp_path)})
    assert env["PATH"] == f"{tmp_path / 'bin'}{os.pathsep}/nowhere"
    assert g.build_env({"PATH": str(tmp_path / "bin"), "CUDA_HOME": str(tmp_path)})["PATH"] == str(tmp_path / "bin")
