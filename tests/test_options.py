"""Abusive options and arguments: each refused with one clean line and exit 2 (3 for a MODEL that cannot be a
file) before anything is loaded, through the real CLI; files that are not files (a FIFO, a device) refused
without a read, in a real process so that a hang fails the test instead of stalling it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from harness.bench import bench_model
from harness.cli import cli
from harness.errors import UsageError
from harness.plan import PlanRequest
from tests.support.models import GEMMA
from tests.support.writer import write_llama

ARCH = "8b-q4_k_m"  # a registry entry known by its architecture: no file, no engine


def _invoke(*args: str, **kwargs) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), **kwargs)


def _process(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own: a FIFO read would block it, and the timeout says so."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args,error",
    [
        (
            ["plan", ARCH, "--ctx", "-100000"],
            "Invalid value for '--ctx': -100000 is not in the range 0<=x<=4294967295.",
        ),
        (["plan", ARCH, "--ubatch", "0"], "Invalid value for '--ubatch': 0 is not in the range 1<=x<=2048."),
        (["plan", ARCH, "--margin", "-1"], "Invalid value for '--margin': -1.0 is not in the range 0<=x<1."),
        (["plan", ARCH, "--margin", "nan"], "Invalid value for '--margin': 'nan' is not a finite number."),
        (["plan", ARCH, "--gpus", "-1"], "Invalid value for '--gpus': -1 is not in the range 1<=x<=16."),
        (["plan", ARCH, "--n-gpu-layers", "-5"], "Invalid value for '--n-gpu-layers': -5 is not in the range x>=0."),
        (
            ["run", ARCH, "hi", "--threads", "100000"],
            "Invalid value for '--threads': 100000 is not in the range 1<=x<=512.",
        ),
        (
            ["run", ARCH, "hi", "--temperature", "nan"],
            "Invalid value for '--temperature': 'nan' is not a finite number.",
        ),
        (["run", ARCH, "hi", "--top-p", "2"], "Invalid value for '--top-p': 2.0 is not in the range 0<=x<=1."),
        (["run", ARCH, "hi", "--ctx", "-1"], "Invalid value for '--ctx': -1 is not in the range 0<=x<=4294967295."),
        (["run", ARCH, "hi", "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295."),
        (["run", ARCH, "hi", "--max-tokens", "-1"], "Invalid value for '--max-tokens': -1 is not in the range x>=0."),
        (["bench", ARCH, "--reps", "0"], "Invalid value for '--reps': 0 is not in the range x>=1."),
        (["bench", ARCH, "--tg", "-1"], "Invalid value for '--tg': -1 is not in the range x>=0."),
        (["bench", ARCH, "--threads", "0"], "Invalid value for '--threads': 0 is not in the range 1<=x<=512."),
        (["compare", ARCH, "--chunks", "0"], "Invalid value for '--chunks': 0 is not in the range x>=1."),
        (["compare", ARCH, "--reps", "0"], "Invalid value for '--reps': 0 is not in the range x>=1."),
        (["compare", ARCH, "--ctx", "0"], "Invalid value for '--ctx': 0 is not in the range 1<=x<=4294967295."),
        (["rpc-server", "--port", "0"], "Invalid value for '--port': 0 is not in the range 1<=x<=65535."),
        (["rpc-server", "--port", "99999"], "Invalid value for '--port': 99999 is not in the range 1<=x<=65535."),
        (["rpc-server", "--threads", "100000"], "Invalid value for '--threads': 100000 is not in the range 1<=x<=512."),
    ],
)
def test_nonsense_options_are_usage_errors(args, error) -> None:
    r = _invoke(*args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == f"Error: {error}"


@pytest.mark.parametrize("port", ["0", "99999", "http"])
def test_rpc_ports_out_of_range(port) -> None:
    r = _invoke("plan", ARCH, "--rpc", f"127.0.0.1:{port}=1GiB")
    assert r.exit_code == 2
    assert r.stderr == f"error: --rpc '127.0.0.1:{port}=1GiB': the port must be a number in 1..65535, not '{port}'\n"


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"n_ctx": -1}, "--ctx -1: a context length is 0..4,294,967,295 tokens (0: the model's training context)"),
        ({"n_ubatch": 0}, "--ubatch 0: a micro-batch is 1..2048 tokens (llama.cpp uses at most n_batch, 2048)"),
        ({"gpus": 0}, "--gpus 0: llama.cpp takes 1..16 devices"),
        ({"margin_fraction": float("nan")}, "--margin nan: a safety margin is a fraction of each budget"),
        ({"n_gpu_layers": -1}, "--n-gpu-layers -1: a layer count is 0 or more"),
        ({"host_ram_bytes": -1}, "--host-ram -1: a size is 0 bytes or more"),
    ],
)
def test_plan_requests_are_checked_in_the_library(changes, message) -> None:
    with pytest.raises(UsageError) as info:
        PlanRequest(model=ARCH, **changes)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("spec", [":50052=1GiB", "[]:50052=1GiB", "127.0.0.1=1GiB"])
def test_rpc_without_a_host_or_port(spec) -> None:
    r = _invoke("plan", ARCH, "--rpc", spec)
    assert (r.exit_code, r.stderr) == (2, f"error: --rpc '{spec}': write HOST:PORT=SIZE, e.g. 127.0.0.1:50052=8GiB\n")


def test_more_devices_than_llama_cpp_takes() -> None:
    rpcs = [f"--rpc=127.0.0.1:{50000 + i}=1GiB" for i in range(8)]
    r = _invoke("plan", ARCH, "--gpu", "rtx-4090", "--gpus", "9", *rpcs)
    assert r.exit_code == 2
    assert r.stderr == "error: 17 offload devices: llama.cpp takes at most 16 (llama_max_devices)\n"


def test_ctx_0_is_the_training_context() -> None:
    """llama.cpp takes n_ctx 0 as n_ctx_train (llama-context.cpp); the plan did a KV cache of 0 bytes."""
    zero = json.loads(_invoke("plan", ARCH, "--ctx", "0", "--json").stdout)
    full = json.loads(_invoke("plan", ARCH, "--ctx", "131072", "--json").stdout)
    assert zero["n_ctx"] == 131072  # Llama 3.1's context_length in the registry
    assert zero == full and sum(d["kv_bytes"] for d in zero["devices"]) + zero["host"]["kv_bytes"] > 0


@pytest.mark.engine
@pytest.mark.real_model
def test_run_ctx_0_predicts_the_kv_cache_llama_cpp_allocates(gemma_path) -> None:
    """`run --ctx 0` predicted 92 MiB where llama.cpp used 370: its KV cache was planned for 0 tokens."""
    r = _invoke("run", GEMMA, "The capital of France is the city of", "--ctx", "0", "--max-tokens", "1", "--json")
    assert r.exit_code == 0, r.output
    memory = json.loads(r.stdout)["memory"]
    assert memory["predicted"]["host"]["kv_bytes"] == sum(b["kv_bytes"] for b in memory["actual"].values()) > 0


@pytest.fixture
def no_engine(monkeypatch):
    """Fail the test if a bench gets as far as measuring or loading."""

    def loaded(*args, **kwargs):
        raise AssertionError("got as far as measuring or loading the model")

    monkeypatch.setattr("harness.bench.measure_host_read_bandwidth", loaded)
    monkeypatch.setattr("harness.bench.open_session", loaded)


def test_bench_with_nothing_to_run_fails_before_loading(tmp_path, no_engine) -> None:
    model = write_llama(tmp_path / "m.gguf")[0]
    r = _invoke("bench", str(model), "--pp", "0", "--tg", "0")
    assert (r.exit_code, r.stderr) == (
        2,
        "error: --pp 0 --tg 0: nothing to bench; give --pp or --tg more than 0 tokens\n",
    )
    r = _invoke("bench", str(model), "--pp", "5000", "--ctx", "1000")
    assert (r.exit_code, r.stderr) == (
        2,
        "error: a test of 5000 tokens does not fit --ctx 1000: raise --ctx, or lower --pp/--tg\n",
    )
    assert _invoke("bench", str(model), "--pp", "1024", "--tg", "0", "--ctx", "1000").exit_code != 2  # padded to 1024


def test_bench_library_checks_its_counts_first(no_engine) -> None:
    with pytest.raises(UsageError, match=r"^--reps 0: each test runs at least once"):
        bench_model(PlanRequest(model="not-a-model"), 0, 512, 128, None, False, lambda m: None)


def test_unwritable_out_and_plot_fail_before_the_work(tmp_path, monkeypatch, no_engine) -> None:
    (tmp_path / "a-file").write_text("")

    def work(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr("harness.cli.bench.bench_model", work)
    monkeypatch.setattr("harness.cli.compare.compare_quants", work)
    out = tmp_path / "a-file" / "results"
    r = _invoke("bench", ARCH, "--out", str(out))
    assert (r.exit_code, r.stderr) == (
        2,
        f"error: --out {out}: {tmp_path / 'a-file'} is not a folder this user can write in\n",
    )
    png = tmp_path / "a-file" / "chart.png"
    r = _invoke("compare", ARCH, "--plot", str(png))
    assert (r.exit_code, r.stderr) == (
        2,
        f"error: --plot {png}: {tmp_path / 'a-file'} is not a folder this user can write in\n",
    )


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", [["inspect"], ["sizes"], ["plan"], ["run", "{}", "hello"]])
def test_a_fifo_as_model_is_refused_without_a_read(fifo, command) -> None:
    """Opening a FIFO for reading waited for a writer: `inspect`, `plan` and `run` hung."""
    args = [a.format(fifo) for a in command] if "{}" in command else [*command, str(fifo)]
    r = _process(*args)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"error: {fifo}: is a named pipe (FIFO), not a GGUF file\n")


def test_a_device_as_model_is_refused() -> None:
    r = _invoke("inspect", "/dev/zero")
    assert (r.exit_code, r.stderr) == (2, "error: /dev/zero: is a device, not a GGUF file\n")


@pytest.mark.parametrize("command", ["inspect", "plan"])
def test_a_too_long_path_is_one_line(command) -> None:
    path = "a/" * 3000 + "x.gguf"
    r = _invoke(command, path)
    assert r.exit_code == 3
    assert r.stderr == f"error: {path[:60]}…{path[-60:]} ({len(path):,} characters): File name too long\n"
    name = "a" * 300  # no separator: a registry name, and none of the registry's
    r = _invoke(command, name)
    assert r.exit_code == 3 and r.stderr.startswith(f"error: no model named '{name}' in ")


def test_compare_text_is_read_whole_from_a_regular_file(tmp_path, monkeypatch) -> None:
    seen = {}

    def compare_quants(req, quants, text, *args):
        seen["text"] = text
        raise UsageError("stopped here")

    monkeypatch.setattr("harness.cli.compare.compare_quants", compare_quants)
    text = tmp_path / "text.txt"
    text.write_bytes("Ünïcode prose\n".encode() * 1000 + b"\xff")
    r = _invoke("compare", ARCH, "--text", str(text))
    assert r.stderr == "error: stopped here\n"
    assert seen["text"] == "Ünïcode prose\n" * 1000 + "\ufffd"  # undecodable bytes replaced, as before


def test_compare_text_refuses_what_is_not_a_text_file(tmp_path, fifo) -> None:
    """A FIFO hung `compare --text`; /dev/zero ran it out of memory."""
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate((16 << 20) + 1)  # sparse: no disk
    r = _process("compare", ARCH, "--text", str(fifo))
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        2,
        f"Error: Invalid value for '--text': '{fifo}' is a named pipe (FIFO), not a text file",
    )
    for path, why in (
        ("/dev/zero", "'/dev/zero' is a device, not a text file"),
        (str(big), f"'{big}' is over 16 MiB; give a part of it"),
        (str(tmp_path), f"'{tmp_path}' is a directory, not a text file"),
        (str(tmp_path / "absent"), f"'{tmp_path / 'absent'}': No such file or directory"),
    ):
        r = _invoke("compare", ARCH, "--text", path)
        assert (r.exit_code, r.stderr.splitlines()[-1]) == (2, f"Error: Invalid value for '--text': {why}")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"gpus = 5\n", "gpus must be a table ([gpus.NAME] sections), not int"),
        (b"\xff\xfe", "not UTF-8 text (TOML is): byte 0 is 0xff"),
        (b"[gpus.x]\nname = 3\n", "[gpus.x]"),
        (b"nonsense = [", "invalid TOML"),
    ],
)
def test_a_broken_hardware_file_is_one_registry_error(tmp_path, monkeypatch, content, message) -> None:
    bad = tmp_path / "hardware.toml"
    bad.write_bytes(content)
    monkeypatch.setenv("HARNESS_HARDWARE", str(bad))
    r = CliRunner().invoke(cli, ["hardware"])
    assert r.exit_code == 4 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_a_fifo_hardware_file_is_refused_without_a_read(tmp_path, monkeypatch) -> None:
    fifo = tmp_path / "hardware.toml"
    os.mkfifo(fifo)
    monkeypatch.setenv("HARNESS_HARDWARE", str(fifo))
    r = CliRunner().invoke(cli, ["hardware"])
    assert (r.exit_code, r.stderr) == (
        4,
        f"error: hardware profiles {fifo} is not a regular file; set HARNESS_HARDWARE to a hardware.toml\n",
    )
