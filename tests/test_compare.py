"""harness compare: variants built with llama.cpp's quantizer, quality in the expected order, the chart,
and the 405B rows equal to `harness sizes`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import cli
from tests.support.models import GEMMA, SMOLLM


@pytest.mark.engine
@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("model,quants", [(SMOLLM, "Q8_0,Q4_K_M,Q2_K,IQ2_XXS"), (GEMMA, "Q8_0,Q4_K_M,Q2_K")])
def test_quality_degrades_in_order(tmp_path, model, quants) -> None:
    png = tmp_path / "chart.png"
    result = CliRunner().invoke(
        cli, ["compare", model, "--quants", quants, "--chunks", "3", "--reps", "1", "--plot", str(png), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = {r["quant"]: r for r in out["rows"]}
    ref = rows[out["reference"]]
    assert ref["kld"] is None and 2 < ref["perplexity"] < 100  # CPython's docs: a sane perplexity
    # the reference has no KLD of its own (gemma's file is Q4_K_M: then Q8_0 and Q2_K are compared with it)
    order = [rows[q]["kld"] for q in ("Q8_0", "Q4_K_M", "Q2_K") if q != out["reference"]]
    assert order == sorted(order) and order[0] < order[-1]
    assert rows["Q8_0"]["top1_agreement"] > rows["Q2_K"]["top1_agreement"]
    assert rows["Q2_K"]["perplexity"] > ref["perplexity"]
    for q in ("Q8_0", "Q4_K_M", "Q2_K"):
        assert rows[q]["tg_tokens_per_s"] > 0 and rows[q]["pp_tokens_per_s"] > 0 and rows[q]["file_bytes"] > 0
    if "IQ2_XXS" in rows:  # built with the harness's own importance matrix, measured like the others
        assert rows["IQ2_XXS"]["kld"] > rows["Q8_0"]["kld"] and rows["IQ2_XXS"]["tg_tokens_per_s"] > 0
        assert "importance matrix" in rows["IQ2_XXS"]["note"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("requantized" in n for n in out["notes"])


def test_405b_rows_equal_sizes() -> None:
    quants = "Q4_K_M,Q2_K,IQ2_XXS,IQ1_S"
    compared = json.loads(
        CliRunner().invoke(cli, ["compare", "405b-q4_k_m", "--quants", quants, "--ctx", "8192", "--json"]).stdout
    )
    sized = json.loads(CliRunner().invoke(cli, ["sizes", "405b-q4_k_m", "--quant", quants, "--json"]).stdout)
    assert [r["tensor_bytes"] for r in compared["rows"]] == [q["tensor_bytes"] for q in sized["quants"]]
    rows = {r["quant"]: r for r in compared["rows"]}
    assert not any(r["fits_fully"] for r in rows.values())  # nothing of 405B fits one A100 40GB
    assert rows["Q4_K_M"]["gpus_to_fit"] > rows["IQ1_S"]["gpus_to_fit"] >= 2
    assert all(r["perplexity"] is None and r["tg_tokens_per_s"] is None for r in rows.values())


def test_f32_row_of_an_architecture_only_model() -> None:
    """F32 is llama.cpp's ALL_F32, not a MOSTLY_ file type: this printed `internal error: KeyError:
    'MOSTLY_F32'` once. No download and no llama.cpp are needed for an architecture-only entry."""
    result = CliRunner().invoke(cli, ["compare", "8b-q4_k_m", "--quants", "F32,Q4_K_M", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["quant"]: r for r in json.loads(result.stdout)["rows"]}
    assert list(rows) == ["F32", "Q4_K_M"]
    # every weight at 4 bytes: Llama 3.1 8B's published 8,030,261,248 parameters plus 64 rope_freqs factors
    assert rows["F32"]["tensor_bytes"] == 4 * (8_030_261_248 + 64)
    assert rows["F32"]["bits_per_weight"] == 32.0 and rows["F32"]["n_fallback"] == 0
    assert rows["Q4_K_M"]["tensor_bytes"] < rows["F32"]["tensor_bytes"] / 6
