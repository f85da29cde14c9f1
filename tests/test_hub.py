"""The Hub without internet: a loopback server that behaves like the Hub's file endpoints, with
HF_ENDPOINT pointed at it, and each command in its own process (as a user runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import read_header
from tests.support.fakehub import COMMIT, FakeHub
from tests.support.models import GEMMA, SMOLLM, real_model
from tests.support.writer import write_llama


@pytest.fixture
def hub(tmp_path):
    with FakeHub() as h:
        yield h


def _env(hub: FakeHub, tmp_path) -> dict:
    env = dict(
        os.environ, HF_ENDPOINT=hub.endpoint, HARNESS_CACHE_DIR=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf")
    )
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    return env


def _harness(env: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.real_model
@pytest.mark.parametrize("name", [GEMMA, SMOLLM])
def test_remote_inspect_equals_local_within_byte_budget(hub, tmp_path, name) -> None:
    path = real_model(name)
    hub.add("acme/models", path.name, path)
    r = _harness(_env(hub, tmp_path), "inspect", f"hf://acme/models/{path.name}", "--json")
    assert r.returncode == 0, r.stderr
    remote, local = json.loads(r.stdout), read_header(path)
    assert remote["tensor_bytes"] == local.tensor_bytes and remote["n_tensors"] == len(local.tensors)
    assert remote["types"] == {t.type_name: {"count": t.n_tensors, "bytes": t.n_bytes} for t in local.type_totals()}
    assert remote["truncated"] is False and remote["file_bytes"] == path.stat().st_size
    header = local.shards[0].header_bytes
    assert hub.bytes_sent <= 1.5 * header + 256 * 1024
    # the header is cached by commit and file: a second read fetches nothing
    sent = hub.bytes_sent
    r = _harness(_env(hub, tmp_path), "inspect", f"hf://acme/models/{path.name}", "--json")
    assert r.returncode == 0 and hub.bytes_sent == sent
    assert (tmp_path / "cache" / "headers" / "acme--models" / COMMIT).is_dir()


def test_split_model_read_remotely(hub, tmp_path) -> None:
    shards = write_llama(tmp_path / "m.gguf", split_max_tensors=6)
    for p in shards:
        hub.add("acme/split", f"q4/{p.name}", p)
    r = _harness(_env(hub, tmp_path), "sizes", f"hf://acme/split/q4/{shards[1].name}", "--quant", "Q8_0", "--json")
    assert r.returncode == 0, r.stderr
    local = read_header(shards[0])
    out = json.loads(r.stdout)
    assert out["quants"][0]["tensor_bytes"] > 0
    r = _harness(_env(hub, tmp_path), "inspect", f"hf://acme/split/q4/{shards[0].name}", "--json")
    remote = json.loads(r.stdout)
    assert remote["tensor_bytes"] == local.tensor_bytes and len(remote["shards"]) == 3
    # every shard pinned to the commit the first shard resolved to; every byte read from that commit
    resolves = [(method, path) for method, path, _ in hub.requests if "/resolve/" in path]
    assert all(
        f"/resolve/{COMMIT}/" in path for method, path in resolves if method == "GET" or shards[0].name not in path
    )


@pytest.mark.real_model
def test_server_ignoring_range_is_not_read_to_the_end(hub, tmp_path) -> None:
    path = real_model(GEMMA)
    hub.add("acme/norange", path.name, path)
    hub.modes["acme/norange"] = "norange"
    r = _harness(_env(hub, tmp_path), "inspect", f"hf://acme/norange/{path.name}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tensor_bytes"] == read_header(path).tensor_bytes
    assert hub.bytes_sent < path.stat().st_size / 5  # the stream was abandoned after the header


@pytest.mark.real_model
@pytest.mark.parametrize(
    "mode,message",
    [
        ("gated", "gated: accept its licence"),
        ("forbidden", "access denied (403)"),
        ("ratelimit", "retry after 7 seconds"),
    ],
)
def test_hub_errors_are_one_line_with_the_next_step(hub, tmp_path, mode, message) -> None:
    hub.add("acme/x", "m.gguf", real_model(SMOLLM))
    hub.modes["acme/x"] = mode
    r = _harness(_env(hub, tmp_path), "inspect", "hf://acme/x/m.gguf")
    assert r.returncode == 7 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.real_model
def test_missing_file_and_repo(hub, tmp_path) -> None:
    hub.add("acme/x", "m.gguf", real_model(SMOLLM))
    r = _harness(_env(hub, tmp_path), "inspect", "hf://acme/x/other.gguf")
    assert r.returncode == 7 and "no such file" in r.stderr
    r = _harness(_env(hub, tmp_path), "inspect", "hf://acme/nope/m.gguf")
    assert r.returncode == 7 and "not found or not accessible" in r.stderr


@pytest.mark.real_model
def test_offline_uses_the_cache(hub, tmp_path) -> None:
    path = real_model(SMOLLM)
    hub.add("acme/models", path.name, path)
    env = _env(hub, tmp_path)
    assert _harness(env, "inspect", f"hf://acme/models/{path.name}").returncode == 0
    offline = dict(env, HF_HUB_OFFLINE="1")
    r = _harness(offline, "inspect", f"hf://acme/models/{path.name}", "--json")
    assert r.returncode == 0, r.stderr
    r = _harness(offline, "inspect", "hf://acme/models/never-read.gguf")
    assert r.returncode == 7 and "not cached" in r.stderr


@pytest.mark.real_model
def test_download_resumes_across_processes_and_verifies(hub, tmp_path) -> None:
    path = real_model(SMOLLM)
    hub.add("acme/models", path.name, path)
    env = _env(hub, tmp_path)
    hub.modes["acme/models"] = "drop"  # the connection dies halfway
    r = _harness(env, "download", f"hf://acme/models/{path.name}")
    assert r.returncode == 7 and "run the same command again to resume" in r.stderr
    [part] = list((tmp_path / "cache" / "hub").rglob("*.part"))
    kept = part.stat().st_size
    assert 0 < kept < path.stat().st_size
    hub.modes["acme/models"] = ""
    r = _harness(env, "download", f"hf://acme/models/{path.name}")
    assert r.returncode == 0, r.stderr
    assert f"resumed from byte {kept}" in r.stderr
    assert any(rng == f"bytes={kept}-" for _, _, rng in hub.requests)
    final = next((tmp_path / "cache" / "hub").rglob(path.name))
    assert final.read_bytes() == path.read_bytes() and not list((tmp_path / "cache").rglob("*.part"))


@pytest.mark.real_model
def test_corrupted_partial_download_is_caught(hub, tmp_path) -> None:
    path = real_model(SMOLLM)
    hub.add("acme/models", path.name, path)
    env = _env(hub, tmp_path)
    hub.modes["acme/models"] = "drop"
    _harness(env, "download", f"hf://acme/models/{path.name}")
    [part] = list((tmp_path / "cache" / "hub").rglob("*.part"))
    with open(part, "r+b") as f:  # one flipped byte in what was kept
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    hub.modes["acme/models"] = ""
    r = _harness(env, "download", f"hf://acme/models/{path.name}")
    assert r.returncode == 7 and "corrupted download" in r.stderr
    assert not list((tmp_path / "cache" / "hub").rglob(path.name))  # never given its final name


@pytest.mark.real_model
def test_registry_entry_read_remotely_and_listed(hub, tmp_path) -> None:
    shards = write_llama(tmp_path / "Big-Q4_K_M.gguf", split_max_tensors=6)
    for p in shards:
        hub.add("acme/big", f"Big-Q4_K_M/{p.name}", p)
    hub.add("acme/big", "Big-Q2_K.gguf", real_model(SMOLLM))  # another quant in the same repository
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[models.big]\nfile = "Big-Q4_K_M-00001-of-00003.gguf"\nquant = "Q4_K_M"\n'
        'hf = { repo = "acme/big", pattern = "*-Q4_K_M*.gguf" }\n'
    )
    env = dict(_env(hub, tmp_path), HARNESS_REGISTRY=str(registry))
    r = _harness(env, "models", "--json")
    assert json.loads(r.stdout)[0]["state"] == "absent"
    r = _harness(env, "inspect", "big", "--remote", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tensor_bytes"] == read_header(shards[0]).tensor_bytes
    r = _harness(env, "models", "--json")
    assert json.loads(r.stdout)[0]["state"] == "header cached"


@pytest.mark.engine
@pytest.mark.real_model
def test_downloaded_model_runs_from_its_files(hub, tmp_path) -> None:
    path = real_model(SMOLLM)
    hub.add("acme/models", path.name, path)
    env = _env(hub, tmp_path)
    assert _harness(env, "download", f"hf://acme/models/{path.name}").returncode == 0
    r = _harness(env, "run", f"hf://acme/models/{path.name}", "The capital of France is", "--max-tokens", "4", "--json")
    assert r.returncode == 0, r.stderr
    assert "Paris" in json.loads(r.stdout)["text"]


@pytest.mark.real_model
def test_downloaded_registry_entry_resolves_to_its_file(hub, tmp_path) -> None:
    """An architecture-only entry with a Hub source, once downloaded, is its file (not its architecture) for
    every command: run, bench, plan and inspect read the downloaded header."""
    path = real_model(SMOLLM)  # stands in for the entry's file: its header must be what is read
    hub.add("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF", "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", path)
    env = _env(hub, tmp_path)
    before = json.loads(_harness(env, "inspect", "8b-q4_k_m", "--json").stdout)
    assert _harness(env, "download", "8b-q4_k_m").returncode == 0
    after = _harness(env, "inspect", "8b-q4_k_m", "--json")
    assert after.returncode == 0, after.stderr
    assert before["tensor_bytes"] != json.loads(after.stdout)["tensor_bytes"] == read_header(path).tensor_bytes
