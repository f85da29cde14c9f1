"""The CLI end to end: real models through CliRunner, error mapping through a real process."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner
from ggufbytes import base_model

from conftest import GEMMA, SMOLLM
from harness import read_header
from harness.cli import cli


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120)


def test_inspect_json_on_gemma(gemma_path) -> None:
    result = CliRunner().invoke(cli, ["inspect", GEMMA, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    h = read_header(gemma_path)
    assert out["path"] == str(gemma_path)
    assert (out["architecture"], out["file_type"], out["n_tensors"]) == ("gemma3", "Q4_K_M", 236)
    assert out["tensor_bytes"] == h.tensor_bytes == 246587904
    assert out["n_params"] == h.n_params and out["n_layer"] == 18
    assert out["data_offset"] == 6525120 and out["file_bytes"] == 253113024
    assert out["types"]["Q5_0"] == {"count": 81, "bytes": 43591680}
    assert len(out["layers"]) == 18 and sum(layer["bytes"] for layer in out["layers"]) + sum(
        t["bytes"] for t in out["non_layer"]) == out["tensor_bytes"]
    assert out["truncated"] is False and len(out["shards"]) == 1
    assert "tensors" not in out


def test_inspect_tensors_json(smollm_path) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(smollm_path), "--json", "--tensors"])
    out = json.loads(result.output)
    assert len(out["tensors"]) == 272 == out["n_tensors"]
    assert sum(t["bytes"] for t in out["tensors"]) == out["tensor_bytes"]


def test_inspect_human_output(gemma_path) -> None:
    result = CliRunner().invoke(cli, ["inspect", GEMMA])
    assert result.exit_code == 0
    for fragment in ("gemma3", "Q4_K_M", "246,587,904", "| Q5_0 |", "blk.15-17", "sliding window 512",
                     "vocabulary     262144"):
        assert fragment in result.output


def test_inspect_split_model_lists_shards(tmp_path) -> None:
    from writer import write_llama

    paths = write_llama(tmp_path / "m.gguf", split_max_tensors=6)
    result = CliRunner().invoke(cli, ["inspect", str(paths[1]), "--json"])
    out = json.loads(result.output)
    assert out["paths"] == [str(p) for p in paths] and len(out["shards"]) == 3
    assert sum(s["tensor_bytes"] for s in out["shards"]) == out["tensor_bytes"]


def test_malformed_file_is_one_line_and_exit_2(tmp_path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(base_model(version=7).build())
    r = _run("inspect", str(bad))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: {bad}: version at byte 4: 7 is not a supported GGUF version (2 or 3)\n"


def test_unknown_model_name(tmp_path) -> None:
    r = _run("inspect", "no-such-model")
    assert r.returncode == 3
    assert r.stderr.startswith("error: no model named 'no-such-model'") and "Traceback" not in r.stderr
    r = _run("inspect", str(tmp_path / "absent.gguf"))
    assert r.returncode == 3 and "no such file" in r.stderr


def test_models_lists_the_registry() -> None:
    result = CliRunner().invoke(cli, ["models", "--json"])
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows[GEMMA]["default"] and rows[GEMMA]["state"] == "downloaded"
    assert rows[SMOLLM]["quant"] == "Q4_1"
