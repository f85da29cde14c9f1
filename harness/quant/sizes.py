"""Exact size of a model at another quant level, before anything is downloaded or quantized.

The types come from llama.cpp's own rules (harness.quant_rules), the bytes from the one size
formula (harness.ggml_types.tensor_nbytes). Any header will do: an F16/BF16 original, or a file that is
already quantized, since the rules read only names, shapes and architecture facts; tensors that
llama.cpp never quantizes (norms, 1-d tensors) keep the type they have in that header.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.errors import HarnessError
from harness.gguf import ggml_types
from harness.gguf.format import Keys
from harness.gguf.header import ModelHeader, TypeTotal, model_header, totals_by_type
from harness.gguf.reader import KeyValue, TensorInfo
from harness.quant.rules import TypePlan, file_type, plan


@dataclass(frozen=True)
class PredictedTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    n_bytes: int
    fallback: bool  # the row length forced a type other than the rules chose

    @property
    def type_name(self) -> str:
        return ggml_types.type_name(self.ggml_type)


@dataclass(frozen=True)
class QuantPrediction:
    quant: str  # llama.cpp's file type name, e.g. "Q4_K_M"
    has_imatrix: bool
    tensor_bytes: int
    n_params: int
    bits_per_weight: float
    tensors: tuple[PredictedTensor, ...]  # in the header's order
    type_totals: tuple[TypeTotal, ...]  # per ggml type, largest share of bytes first
    n_fallback: int  # tensors demoted because their rows do not hold whole blocks

    @property
    def type_counts(self) -> dict[str, int]:
        return {t.type_name: t.n_tensors for t in self.type_totals}


def predict(
    header: ModelHeader, ftype_name: str, has_imatrix: bool = False, types: TypePlan | None = None
) -> QuantPrediction:
    """What llama.cpp's quantizer writes for ``header`` at ``ftype_name`` ('Q4_K_M', 'IQ2_XXS', ...).

    Raises QuantRuleError (a HarnessError) where llama.cpp would refuse: an unknown file type, a
    type that needs an importance matrix when ``has_imatrix`` is false, a row no type fits.
    """
    quant = file_type(ftype_name)
    types = types or plan(header.tensors, header.arch, ftype_name, has_imatrix)
    tensors = tuple(
        PredictedTensor(t.name, t.shape, ggml_type, ggml_types.tensor_nbytes(t.shape, ggml_type), fell_back)
        for t, ggml_type, fell_back in zip(header.tensors, types.types, types.fallback)
    )
    totals = totals_by_type((t.ggml_type, t.n_bytes, src.n_elements) for t, src in zip(tensors, header.tensors))
    n_params = header.n_params
    name = ggml_types.file_type_name(quant)
    tensor_bytes = sum(t.n_bytes for t in tensors)
    return QuantPrediction(
        quant=name,
        has_imatrix=has_imatrix,
        tensor_bytes=tensor_bytes,
        n_params=n_params,
        bits_per_weight=tensor_bytes * 8 / n_params if n_params else 0.0,
        tensors=tensors,
        type_totals=tuple(totals),
        n_fallback=types.n_fallback,
    )


@dataclass(frozen=True)
class SizeRow:
    """One row of `harness sizes`: a prediction, or why llama.cpp would refuse that quant."""

    quant: str
    prediction: QuantPrediction | None
    refused: str | None  # llama.cpp's reason when it would not produce this quant
    is_current: bool  # the quant the model's tensors are at now
    fits_budget: bool | None  # None when no budget was given


def size_rows(
    header: ModelHeader, quants: list[str], imatrix: bool | None, current: str | None, budget_bytes: int | None = None
) -> list[SizeRow]:
    """Predict each quant. ``imatrix`` None means as llama.cpp is run for that type: with an importance
    matrix exactly where it refuses to run without one (see needs_imatrix)."""
    rows = []
    for q in quants:
        try:
            use_imatrix = needs_imatrix(header, q) if imatrix is None else imatrix
            p = predict(header, q, has_imatrix=use_imatrix)
        except HarnessError as exc:
            rows.append(SizeRow(q, None, str(exc), q == current, None))
            continue
        fits = None if budget_bytes is None else p.tensor_bytes <= budget_bytes
        rows.append(SizeRow(q, p, None, q == current, fits))
    return rows


def needs_imatrix(header: ModelHeader, quant: str) -> bool:
    """Whether llama.cpp refuses ``quant`` for this model without an importance matrix: per tensor,
    so a model whose affected rows all fall back needs none."""
    return any(plan(header.tensors, header.arch, quant, has_imatrix=False, check_imatrix=False).needs_imatrix)


def at_quant(header: ModelHeader, quant: str) -> ModelHeader:
    """``header`` as llama.cpp's quantizer would write it at ``quant`` (types, bytes, offsets)."""
    # published files of the types that need an importance matrix were made with one; the rules are
    # applied once more, with one, only for those
    without = plan(header.tensors, header.arch, quant, has_imatrix=False, check_imatrix=False)
    if any(without.needs_imatrix):
        pred = predict(header, quant, has_imatrix=True)
    else:
        pred = predict(header, quant, has_imatrix=False, types=without)
    tensors, offset = [], 0
    for t, p in zip(header.tensors, pred.tensors):
        tensors.append(TensorInfo(t.name, t.shape, p.ggml_type, offset, p.n_bytes))
        offset += ggml_types.pad(p.n_bytes, 32)
    shard = header.shards[0]
    metadata = dict(shard.metadata)
    ftype = int(file_type(quant))
    metadata[Keys.General.FILE_TYPE] = (
        replace(metadata[Keys.General.FILE_TYPE], value=ftype)
        if Keys.General.FILE_TYPE in metadata
        else KeyValue(Keys.General.FILE_TYPE, 4, 0, ftype)
    )
    virtual = replace(
        shard,
        name=f"{shard.name}@{quant}",
        file_bytes=offset,
        data_bytes=offset,
        metadata=metadata,
        tensors=tuple(tensors),
    )
    return model_header([virtual])
