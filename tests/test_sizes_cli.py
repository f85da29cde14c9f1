"""`harness sizes` end to end: real files, architecture-only entries, budgets, mismatches."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness import read_header
from harness.cli import cli
from harness.text import parse_size
from tests.support.models import GEMMA


def _sizes(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["sizes", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.real_model
def test_gemma_current_quant_is_predicted_to_the_byte(gemma_path) -> None:
    out = _sizes(GEMMA, "--quant", "Q4_K_M,Q8_0")
    row = out["quants"][0]
    assert row["current"] and row["tensor_bytes"] == read_header(gemma_path).tensor_bytes == 246587904
    assert row["types"] == {"Q8_0": 10, "Q5_0": 81, "Q4_K": 27, "Q6_K": 9, "F32": 109}
    assert row["n_fallback"] == 90  # n_embd 640 is not a multiple of 256: K-quants fall back
    assert out["warnings"] == []


def test_405b_is_sized_without_a_download() -> None:
    out = _sizes("405b-q4_k_m", "--quant", "Q4_K_M,Q2_K,IQ2_XXS,IQ1_S", "--budget", "40GiB")
    rows = {r["quant"]: r for r in out["quants"]}
    assert rows["Q4_K_M"]["tensor_bytes"] == 243_061_719_296 and rows["Q4_K_M"]["current"]
    assert rows["IQ2_XXS"]["imatrix"] is True and rows["Q2_K"]["imatrix"] is False
    assert all(r["fits_budget"] is False for r in rows.values())  # no quant of 405B fits 40 GiB
    assert rows["IQ1_S"]["tensor_bytes"] < rows["IQ2_XXS"]["tensor_bytes"] < rows["Q2_K"]["tensor_bytes"]


def test_no_imatrix_means_refused_not_made_up() -> None:
    out = _sizes("8b-q4_k_m", "--quant", "IQ2_XXS", "--no-imatrix")
    assert out["quants"][0]["tensor_bytes"] is None and "importance matrix" in out["quants"][0]["refused"]


@pytest.mark.real_model
def test_name_that_lies_about_its_quant(tmp_path, smollm_path) -> None:
    liar = tmp_path / "SmolLM2-Q8_0.gguf"
    liar.symlink_to(smollm_path)
    out = _sizes(str(liar), "--quant", "Q4_1")
    assert any("claims Q8_0 but its header says Q4_1" in w for w in out["warnings"])


def test_inspect_architecture_only_entry() -> None:
    result = CliRunner().invoke(cli, ["inspect", "405b-q4_k_m", "--json"])
    out = json.loads(result.stdout)
    assert out["file_type"] == "Q4_K_M" and out["n_layer"] == 126 and out["tensor_bytes"] == 243_061_719_296


def test_bad_budget_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["sizes", "405b-q4_k_m", "--budget", "forty"])
    assert result.exit_code == 2 and "not a size" in result.output


def test_parse_size() -> None:
    assert parse_size("40GiB") == 40 << 30 and parse_size("80GB") == 80 * 10**9 and parse_size("512") == 512
