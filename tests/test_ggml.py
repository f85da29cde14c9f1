"""The type table we use (gguf-py's, with its one erratum) against libggml's own."""

from __future__ import annotations

import pytest
from gguf import GGMLQuantizationType

from harness.gguf import ggml_types as ggml
from harness.llama import reference_parser


@pytest.mark.engine
def test_every_type_layout_matches_libggml() -> None:
    for t in GGMLQuantizationType:
        if int(t) in ggml.QUANT_SIZES:
            assert ggml.QUANT_SIZES[int(t)] == reference_parser.type_layout(int(t)), t.name


@pytest.mark.engine
def test_the_erratum_is_still_needed() -> None:
    """If gguf-py fixes Q8_1, drop harness.ggml._ERRATA."""
    from gguf import GGML_QUANT_SIZES

    assert GGML_QUANT_SIZES[GGMLQuantizationType.Q8_1] != reference_parser.type_layout(int(GGMLQuantizationType.Q8_1))


def test_file_type_names() -> None:
    assert ggml.file_type_name(15) == "Q4_K_M"
    assert ggml.file_type_name(0) == "F32"
    assert ggml.file_type_name(19) == "IQ2_XXS"
    assert ggml.file_type_name(999) == "unknown(999)"
