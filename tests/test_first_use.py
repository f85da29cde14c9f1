"""What a new user trying the harness ran into (issue 11, "also found"): `plan --verify` with a bare
--budget, `bench` of an entry known by its architecture only, advice when the weights are not what is
short, run and bench predicting different host memory, and the header benchmark."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from harness import run as run_case
from harness.bench import BenchResult, records
from harness.cli import cli
from harness.cli.run import _memory_json
from harness.errors import RpcError
from harness.llama import bench_loop
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES
from harness.llama.rpc import endpoint_of, probe, split_endpoint
from harness.models.registry import load_registry
from harness.models.resolve import architecture_header
from harness.offload.placement import ContextParams
from harness.offload.solver import Device, Host, solve
from tests.support.fakehub import FakeHub
from tests.support.models import SMOLLM, real_model
from tests.support.writer import write_llama

ROOT = Path(__file__).resolve().parent.parent

# SmolLM2 135M as its config.json describes it: built from this, at Q4_1, it has the real file's
# 96,576,768 tensor bytes, so the architecture entry and the file it downloads agree
SMALL_REGISTRY = """
[architectures.small]
family = "llama"
n_embd = 576
n_layer = 30
n_head = 9
n_head_kv = 3
head_dim = 64
n_ff = 1536
n_vocab = 49152
context_length = 8192
tied_output = true

[models.small-q4_1]
description = "SmolLM2 135M, known by its architecture"
architecture = "small"
quant = "Q4_1"
hf = { repo = "acme/small", pattern = "SmolLM2*Q4_1.gguf" }

[models.nosource]
description = "the same, with nowhere to download it from"
architecture = "small"
quant = "Q4_1"
"""


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def small_registry(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(SMALL_REGISTRY)
    monkeypatch.setenv("HARNESS_REGISTRY", str(path))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return path


# -- plan --verify --budget -----------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_verify_with_a_budget_starts_a_loopback_server_and_stops_it() -> None:
    r = _invoke("plan", SMOLLM, "--budget", "150MiB", "--ctx", "2048", "--verify", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    [dev] = out["devices"]
    endpoint = endpoint_of(dev["name"])
    assert endpoint is not None and endpoint.startswith("127.0.0.1:"), dev["name"]
    assert dev["budget_bytes"] == 150 << 20
    assert out["n_layers_offloaded_actual"] == out["n_gpu_layers"] > 0
    assert abs(dev["weights_bytes"] - dev["actual"]["weights_bytes"]) <= MIB_PRINT_TOLERANCE_BYTES
    assert dev["actual"]["total_bytes"] <= dev["budget_bytes"]
    # the host's output (logits) buffer is in llama.cpp's host total, as in the plan's
    host = out["host"]["actual"]
    assert host["output_bytes"] > 0
    parts = ("weights_bytes", "kv_bytes", "compute_bytes", "output_bytes")
    assert host["total_bytes"] == sum(host[k] for k in parts)
    assert abs(host["output_bytes"] - out["host"]["output_bytes"]) <= MIB_PRINT_TOLERANCE_BYTES
    assert any("loopback" in n for n in out["notes"])
    with pytest.raises(RpcError):  # stopped once verified
        probe(*split_endpoint(endpoint), timeout_s=1.0)


@pytest.mark.engine
@pytest.mark.rpc
def test_verify_of_an_architecture_entry_loads_its_stand_in(small_registry) -> None:
    """No file here: --verify loads the header's stand-in (every weight zero) on a loopback server; llama.cpp's
    buffers are the model's own, so weights and KV equal the plan's, and the plan says what was loaded."""
    r = _invoke("plan", "small-q4_1", "--budget", "150MiB", "--ctx", "1024", "--verify", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    [dev] = out["devices"]
    assert out["n_layers_offloaded_actual"] == out["n_gpu_layers"] > 0
    for k in ("weights_bytes", "kv_bytes"):
        assert abs(dev[k] - dev["actual"][k]) <= MIB_PRINT_TOLERANCE_BYTES, k
    assert abs(out["host"]["weights_bytes"] - out["host"]["actual"]["weights_bytes"]) <= MIB_PRINT_TOLERANCE_BYTES
    assert any(n.startswith("--verify loaded a stand-in of small-q4_1") for n in out["notes"])


def test_verify_without_rpc_or_budget_says_how(tmp_path) -> None:
    [path] = write_llama(tmp_path / "m.gguf")
    r = _invoke("plan", str(path), "--gpu", "rtx-4090", "--verify")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and "--rpc HOST:PORT=SIZE" in r.stderr and "--budget SIZE" in r.stderr


def test_verify_with_a_budget_and_too_many_gpus_is_refused_before_any_server(tmp_path) -> None:
    [path] = write_llama(tmp_path / "m.gguf")
    r = _invoke("plan", str(path), "--budget", "1GiB", "--gpus", "9", "--verify")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.output


# -- bench of an entry known by its architecture only ----------------------------------------------


def test_bench_names_the_download_that_makes_it_runnable(small_registry, monkeypatch) -> None:
    monkeypatch.setattr("harness.plan.local_gpus", lambda: ())  # this host, no GPU: the model fits its RAM
    r = _invoke("bench", "small-q4_1")
    assert r.exit_code == 3 and r.stdout == "", r.output
    [line] = r.stderr.splitlines()
    tensor_bytes = architecture_header(load_registry(), load_registry().get("small-q4_1")).tensor_bytes
    assert tensor_bytes == 96_576_768
    assert line.startswith(
        "error: small-q4_1 is known by its architecture only and not downloaded, but it would run here ("
    )
    assert "`harness bench small-q4_1 --download`" in line
    assert "hf://acme/small, the file matching 'SmolLM2*Q4_1.gguf': 96,576,768 bytes of tensors" in line
    assert "cannot run" not in line

    r = _invoke("bench", "nosource")
    assert r.exit_code == 3 and "names no download for it" in r.stderr and r.stderr.count("\n") == 1


def test_bench_of_an_entry_too_big_here_still_says_what_it_would_take(small_registry, monkeypatch) -> None:
    monkeypatch.setattr("harness.plan.local_gpus", lambda: ())
    monkeypatch.setattr("harness.plan.host_ram_bytes", lambda: 64 << 20)  # a host of 64 MiB
    r = _invoke("bench", "small-q4_1", "--download")
    assert r.exit_code == 10, r.output
    assert "small-q4_1 cannot run on this machine" in r.stdout and "download: 0.09 GiB" in r.stdout
    assert not (small_registry.parent / "cache" / "models").exists()  # nothing fetched


def test_bench_download_refused_when_the_cache_disk_is_short(small_registry, monkeypatch) -> None:
    monkeypatch.setattr("harness.plan.local_gpus", lambda: ())
    monkeypatch.setattr("harness.bench.shutil.disk_usage", lambda path: SimpleNamespace(free=1 << 20))
    r = _invoke("bench", "small-q4_1", "--download")
    assert r.exit_code == 10 and r.stdout == "", r.output
    [line] = r.stderr.splitlines()
    assert line.startswith("error: small-q4_1 needs 0.09 GiB more on the disk of ") and "0.00 GiB free" in line
    cache = small_registry.parent / "cache"  # nothing fetched, nothing written but llama.cpp's answers
    assert not cache.exists() or {p.name for p in cache.iterdir()} <= {"reservations", "plans"}


@pytest.mark.engine
@pytest.mark.real_model
def test_bench_download_fetches_then_benches(tmp_path) -> None:
    smollm = real_model(SMOLLM)
    registry = tmp_path / "models.toml"
    registry.write_text(SMALL_REGISTRY)
    env = dict(
        os.environ,
        HARNESS_REGISTRY=str(registry),
        HARNESS_CACHE_DIR=str(tmp_path / "cache"),
        HF_HOME=str(tmp_path / "hf"),
    )
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    uri = f"hf://acme/small/{smollm.name}"

    def harness(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env, timeout=300
        )

    with FakeHub() as hub:
        hub.add("acme/small", smollm.name, smollm)
        env["HF_ENDPOINT"] = hub.endpoint
        # an hf:// name read over HTTP that would run here: not "cannot run", but its download
        first = harness("bench", uri)
        r = harness("bench", "small-q4_1", "--download", "--reps", "1", "--pp", "16", "--tg", "4", "--json")
    assert first.returncode == 3 and first.stdout == "", first.stderr[-2000:]
    [line] = first.stderr.splitlines()
    assert f"`harness bench {uri} --download` fetches it from {uri}: 98,362,432 bytes" in line
    assert r.returncode == 0, r.stderr[-2000:]
    recs = json.loads(r.stdout)
    assert [rec["harness_model"] for rec in recs] == ["small-q4_1", "small-q4_1"]
    downloaded = Path(recs[0]["model_filename"])
    assert downloaded.is_relative_to(tmp_path / "cache") and downloaded.stat().st_size == smollm.stat().st_size
    assert recs[0]["model_size"] == 96_576_768 and recs[1]["avg_ts"] > 0


# -- advice when the weights are not what is short ---------------------------------------------------


def _sizes(text: str) -> dict[str, float]:
    """'76.82 MiB of compute buffers' -> MiB per part named in a suggestion."""
    unit = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    return {
        what: float(n) * unit[u]
        for n, u, what in re.findall(r"([\d.]+) (KiB|MiB|GiB) of (KV cache|compute buffers|runtime reserve)", text)
    }


def test_only_kv_and_compute_short_names_them_not_a_smaller_quant() -> None:
    r = _invoke("plan", "8b-q4_k_m", "--budget", "4GiB", "--ctx", "32768", "--host-ram", "64GiB", "--json")
    assert r.exit_code == 0, r.output
    [line] = [s for s in json.loads(r.stdout)["suggestions"] if s.startswith("no quant of this model fits")]
    assert "its weights are not what is short" in line and "the smallest, IQ1_S" in line
    assert "GiB of weights" not in line
    m = re.search(r"weights \(([\d.]+) GiB\) fit the devices' ([\d.]+) GiB .* leave them ([\d.]+) GiB short", line)
    assert m, line
    weights, usable, short = (float(x) * 1024 for x in m.groups())
    parts = _sizes(line)
    assert parts["KV cache"] == pytest.approx(4096.0)  # 32 layers x 32768 cells x 2 x 1024 f16 K/V: 4 GiB
    assert "compute buffers" in parts
    assert weights <= usable < weights + sum(parts.values())
    assert short == pytest.approx(weights + sum(parts.values()) - usable, abs=0.02 * 1024)


def test_weights_too_big_still_say_so() -> None:
    r = _invoke("plan", "405b-q4_k_m", "--ctx", "8192", "--host-ram", "256GiB", "--json")
    text = " ".join(json.loads(r.stdout)["suggestions"])
    assert "no quant of this model fits fully: the smallest, IQ1_S, is 79.37 GiB of weights" in text


# -- run and bench predict the same host memory --------------------------------------------------------


def test_run_and_bench_predict_one_host_figure_with_the_output_buffer() -> None:
    reg = load_registry()
    header = architecture_header(reg, reg.get("8b-q4_k_m"))
    plan = solve(header, [Device("gpu#0", 2 << 30)], Host(64 << 30, 50e9, 1e12), ContextParams(n_ctx=512))
    assert plan.host.output_bytes == 128256 * 4  # llama.cpp's "CPU output buffer": n_vocab f32 logits
    report = SimpleNamespace(n_layers_on_devices=plan.n_gpu_layers, buffers=())
    tests = (bench_loop.TestResult("tg4", 0, 4, (0.1,), (0.1,)),)
    bench = BenchResult("8b", "8b.gguf", plan, report, 2, tests, 1.0, 1, 1e10, 1, header)
    bench_host = records(bench)[0]["memory_predicted"]["host"]
    run_host = _memory_json(plan, report)["predicted"]["host"]
    assert bench_host == run_host["total_bytes"] == plan.host.total_bytes
    assert run_case.predicted_memory_bytes(plan)["host"] == plan.host.total_bytes
    assert run_host["output_bytes"] == plan.host.output_bytes
    assert (
        records(bench)[0]["memory_predicted"]["gpu#0"]
        == _memory_json(plan, report)["predicted"]["gpu#0"]["total_bytes"]
    )


@pytest.mark.engine
@pytest.mark.real_model
def test_run_and_bench_print_the_same_host_prediction() -> None:
    r = _invoke("run", SMOLLM, "Hi", "--max-tokens", "1", "--ctx", "512", "--json")
    assert r.exit_code == 0, r.output
    memory = json.loads(r.stdout)["memory"]
    r = _invoke("bench", SMOLLM, "--reps", "1", "--pp", "8", "--tg", "0", "--json")
    assert r.exit_code == 0, r.output
    [rec] = json.loads(r.stdout)
    assert rec["memory_predicted"]["host"] == memory["predicted"]["host"]["total_bytes"]
    # llama.cpp allocates the logits in a host buffer: the host's prediction counts it
    assert sum(v["output_bytes"] for v in memory["actual"].values()) > 0
    assert memory["predicted"]["host"]["output_bytes"] > 0


# -- the header benchmark ----------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.real_model
def test_header_benchmark_times_parse_apart_from_free() -> None:
    script = ROOT / "benchmarks" / "header_speed.py"
    r = subprocess.run(
        [sys.executable, str(script), "--reps", "2", "--reader-reps", "0", "--json", SMOLLM],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    [res] = json.loads(r.stdout)
    for key in ("ours_s", "ours_free_s", "llama_cpp_s", "llama_cpp_free_s"):
        assert len(res[key]) == 2 and all(t >= 0 for t in res[key]), key
    assert all(t > 0 for t in res["llama_cpp_s"])


def test_run_of_an_architecture_entry_names_the_download() -> None:
    result = CliRunner().invoke(cli, ["run", "8b-q4_k_m", "hi"])
    assert result.exit_code == 10
    assert "`harness download 8b-q4_k_m`" in result.stderr and "hf://" in result.stderr
