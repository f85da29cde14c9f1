"""harness.sizes against llama.cpp's own quantizer: every tensor's type, and the bytes, exactly.

Synthetic models with real float weights (F16 or F32 matrices, F32 norms) are written with gguf-py's
GGUFWriter and quantized by ``llama_model_quantize`` to every file type it can produce; the
prediction, made from the source header alone, must name the type of every tensor in the written
file and its total tensor bytes. Where llama.cpp refuses (a type that needs an importance matrix,
a row no type fits, a file type it cannot write) the prediction must refuse too. Importance
matrices are handed to llama.cpp through ``llama_model_quantize_params.imatrix`` (a C array of
name/data/size), so the IQ1/IQ2/IQ3_XXS/Q2_K_S files are quantized for real, not only predicted.

The quantizer reads only the hyperparameters, not a full tensor set (it never builds the graph),
which lets one model carry just the tensors one rule needs (the 80-layer "70B" attn_v rule).
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter, LlamaFileType

from harness import read_header
from harness.gguf.ggml_types import type_name
from harness.quant.rules import FILE_TYPE_NAMES, QuantRuleError, plan, visit_order
from harness.quant.sizes import predict


@dataclass(frozen=True)
class Spec:
    """A synthetic model: its hyperparameters, and which file types to quantize it to."""

    id: str
    arch: str = "llama"
    n_layer: int = 2
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 256
    n_vocab: int = 32
    tied: bool = False
    n_expert: int = 0
    f32_weights: bool = False  # F32 matrices instead of F16
    attn_v_only: bool = False  # per layer only attn_norm and attn_v
    ftypes: tuple[str, ...] = FILE_TYPE_NAMES
    skip_with_imatrix: tuple[str, ...] = ()  # IQ searches are slow; these are covered by other models


# The file types whose rules differ for Falcon or for 8 experts (with a few more per model below).
_K_AND_IQ3 = (
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_M",
    "IQ3_XS",
    "IQ3_S",
    "IQ3_M",
    "IQ4_NL",
    "IQ4_XS",
)

SPECS = (
    # rows of 256 (but ffn_down: 32): the K-quant and IQ rules show undisguised; GQA 1; own output
    Spec("llama-256-gqa1-untied-8L", n_layer=8, n_ff=32, skip_with_imatrix=("IQ2_XS", "IQ2_S")),
    # rows of 320 (fallbacks) and 512 (ffn_down keeps K-quants); GQA 4; tied embeddings; F32 source
    Spec("llama-320-gqa4-tied-2L", n_embd=320, n_head=8, n_head_kv=2, n_ff=512, tied=True, f32_weights=True),
    # 16 layers (the n/16 rules), GQA 8, tied embeddings of a 256 row; ffn_down rows of 32 keep the
    # model small and still tell the rules apart (Q4_K/Q5_K/Q6_K fall back to Q5_0/Q5_1/Q8_0)
    Spec(
        "llama-256-gqa8-tied-16L",
        n_layer=16,
        n_head=8,
        n_head_kv=1,
        n_ff=32,
        tied=True,
        skip_with_imatrix=("IQ1_S", "IQ2_XS", "IQ2_S"),
    ),
    # rows of 96 (not a K-quant block) and 200 (not even a 32-block: F16); GQA 3
    Spec("llama-96-gqa3-ff200-2L", n_embd=96, n_head=3, n_head_kv=1, n_ff=200),
    # only ffn_down rows (256) hold K-quant blocks, in 8 layers: the n/8 ffn_down rules undisguised,
    # and those of file types whose other tensors need an imatrix (IQ3_XXS) run without one
    Spec("llama-96-gqa3-ff256-8L", n_layer=8, n_embd=96, n_head=3, n_head_kv=1),
    # 8 experts: 3-d expert tensors, the n_expert == 8 rules, MXFP4_MOE
    Spec(
        "llama-moe8-256-2L",
        n_expert=8,
        n_ff=32,
        ftypes=_K_AND_IQ3 + ("Q8_0", "MXFP4_MOE", "IQ3_XXS", "IQ2_XXS", "IQ2_S", "IQ2_M", "IQ1_S", "Q2_K_S"),
    ),
    # fused attn_qkv (follows the attn_v rules), Falcon's own ffn_down/attn_output/output rules
    Spec(
        "falcon-256-mqa-16L",
        arch="falcon",
        n_layer=16,
        n_head=4,
        n_head_kv=1,
        n_ff=32,
        ftypes=_K_AND_IQ3 + ("Q8_0", "IQ2_XXS"),
    ),
    # llama with 80 layers and GQA is LLM_TYPE_70B: its attn_v gets Q5_K instead of Q3_K/Q4_K.
    # Every row is 256, so Q1_0 (128-blocks, no fallback) is written here where others refuse it.
    Spec(
        "llama-70b-attn_v-only-80L",
        n_layer=80,
        n_head=4,
        n_head_kv=2,
        attn_v_only=True,
        ftypes=("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", "IQ3_M", "IQ3_S", "Q1_0"),
    ),
)

# File types whose rules read has_imatrix, or that llama.cpp refuses without one.
IMATRIX_FTYPES = (
    "IQ1_S",
    "IQ1_M",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ2_M",
    "IQ3_XXS",
    "IQ3_XS",
    "Q2_K_S",
    "IQ4_NL",
    "IQ4_XS",
    "Q4_0",
    "Q5_0",
)


def write_model(path: Path, s: Spec) -> None:
    rng = np.random.default_rng(len(s.id))
    dtype = np.float32 if s.f32_weights else np.float16
    w = GGUFWriter(str(path), s.arch)
    w.add_name(s.id)
    w.add_block_count(s.n_layer)
    w.add_context_length(256)
    w.add_embedding_length(s.n_embd)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_file_type(LlamaFileType.ALL_F32 if s.f32_weights else LlamaFileType.MOSTLY_F16)
    if s.arch == "falcon":
        w.add_layer_norm_eps(1e-5)
    else:
        w.add_layer_norm_rms_eps(1e-5)
    if s.n_expert:
        w.add_expert_count(s.n_expert)
        w.add_expert_used_count(2)

    def matrix(name: str, *ne: int) -> None:  # ne in ggml order; numpy's is reversed
        w.add_tensor(name, (rng.standard_normal(tuple(reversed(ne))) * 0.02).astype(dtype))

    def vector(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    head = s.n_embd // s.n_head
    n_q, n_kv = head * s.n_head, head * s.n_head_kv
    matrix("token_embd.weight", s.n_embd, s.n_vocab)
    vector("output_norm.weight", s.n_embd)
    if s.arch == "falcon":
        vector("output_norm.bias", s.n_embd)
    if not s.tied:
        matrix("output.weight", s.n_embd, s.n_vocab)
    for i in range(s.n_layer):
        b = f"blk.{i}"
        vector(f"{b}.attn_norm.weight", s.n_embd)
        if s.attn_v_only:
            matrix(f"{b}.attn_v.weight", s.n_embd, n_kv)
            continue
        if s.arch == "falcon":
            vector(f"{b}.attn_norm.bias", s.n_embd)
            matrix(f"{b}.attn_qkv.weight", s.n_embd, n_q + 2 * n_kv)
            matrix(f"{b}.attn_output.weight", n_q, s.n_embd)
            matrix(f"{b}.ffn_up.weight", s.n_embd, s.n_ff)
            matrix(f"{b}.ffn_down.weight", s.n_ff, s.n_embd)
            continue
        vector(f"{b}.ffn_norm.weight", s.n_embd)
        matrix(f"{b}.attn_q.weight", s.n_embd, n_q)
        matrix(f"{b}.attn_k.weight", s.n_embd, n_kv)
        matrix(f"{b}.attn_v.weight", s.n_embd, n_kv)
        matrix(f"{b}.attn_output.weight", n_q, s.n_embd)
        if s.n_expert:
            w.add_tensor(f"{b}.ffn_gate_inp.weight", np.zeros((s.n_expert, s.n_embd), dtype=np.float32))
            matrix(f"{b}.ffn_gate_exps.weight", s.n_embd, s.n_ff, s.n_expert)
            matrix(f"{b}.ffn_up_exps.weight", s.n_embd, s.n_ff, s.n_expert)
            matrix(f"{b}.ffn_down_exps.weight", s.n_ff, s.n_embd, s.n_expert)
        else:
            matrix(f"{b}.ffn_gate.weight", s.n_embd, s.n_ff)
            matrix(f"{b}.ffn_up.weight", s.n_embd, s.n_ff)
            matrix(f"{b}.ffn_down.weight", s.n_ff, s.n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    paths = {}
    for s in SPECS:
        paths[s.id] = folder / f"{s.id}.gguf"
        write_model(paths[s.id], s)
    return paths


# -- llama.cpp's quantizer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captured_log():
    """llama.cpp's log lines while quantizing (they say why it failed, and how many fell back)."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    yield lines
    llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def llama_quantize(src: Path, dst: Path, ftype_name: str, log: list[str], imatrix: bool = False) -> tuple[int, str]:
    """(llama.cpp's return code, its log) for quantizing src to dst."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(
        llama_cpp, "LLAMA_FTYPE_ALL_F32" if ftype_name == "F32" else f"LLAMA_FTYPE_MOSTLY_{ftype_name}"
    )
    params.nthread = 2
    keep = []  # the C side reads these buffers during the call
    if imatrix:
        weights = [t for t in read_header(src).tensors if len(t.shape) >= 2]
        entries = (llama_cpp.llama_model_imatrix_data * (len(weights) + 1))()  # NULL name ends it
        rng = np.random.default_rng(1)
        for entry, t in zip(entries, weights):
            # one importance per column, per expert: ne0 * ne2 values
            values = rng.uniform(0.5, 2.0, t.shape[0] * (t.shape[2] if len(t.shape) > 2 else 1)).astype(np.float32)
            name = t.name.encode()
            keep += [values, name]
            entry.name = name
            entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = values.size
        keep.append(entries)
        params.imatrix = ctypes.cast(entries, type(params.imatrix))
    start = len(log)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    return rc, "".join(log[start:])


_FALLBACK_LINE = re.compile(r"WARNING: (\d+) of (\d+) tensor\(s\) required fallback quantization")


def check_against_llama_cpp(src: Path, dst: Path, ftype_name: str, has_imatrix: bool, log: list[str]) -> None:
    source = read_header(src)
    rc, text = llama_quantize(src, dst, ftype_name, log, imatrix=has_imatrix)
    try:
        predicted = predict(source, ftype_name, has_imatrix)
    except QuantRuleError as exc:
        assert rc != 0, f"we predicted a refusal ({exc}) but llama.cpp wrote {ftype_name}"
        reason = "requires an imatrix" if "importance matrix" in str(exc) else "no tensor type fallback"
        assert reason in text, text[-2000:]
        return
    assert rc == 0, f"llama.cpp failed where we predicted a file:\n{text[-3000:]}"

    written = read_header(dst)
    assert written.file_type == ftype_name
    ours = {t.name: t for t in predicted.tensors}
    assert sorted(ours) == sorted(t.name for t in written.tensors)
    wrong = [
        f"{t.name} {t.shape}: llama.cpp {t.type_name}, predicted {ours[t.name].type_name}"
        for t in written.tensors
        if t.ggml_type != ours[t.name].ggml_type
    ]
    assert not wrong, "\n".join(wrong)
    assert [ours[t.name].n_bytes for t in written.tensors] == [t.n_bytes for t in written.tensors]
    assert predicted.tensor_bytes == written.tensor_bytes
    m = _FALLBACK_LINE.search(text)
    assert predicted.n_fallback == (int(m.group(1)) if m else 0)
    # the file is written in llama_model_loader's weights_map order, which visit_order reproduces
    names = [t.name for t in source.tensors]
    assert [names[i] for i in visit_order(names)] == [t.name for t in written.tensors]


_CASES = [pytest.param(s.id, f, id=f"{s.id}-{f}") for s in SPECS for f in s.ftypes]
_IMATRIX_CASES = [
    pytest.param(s.id, f, id=f"{s.id}-{f}-imatrix")
    for s in SPECS
    for f in s.ftypes
    if f in IMATRIX_FTYPES and f not in s.skip_with_imatrix
]


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize(("spec_id", "ftype_name"), _CASES)
def test_types_and_bytes_match_llama_cpp(sources, captured_log, tmp_path, spec_id, ftype_name) -> None:
    check_against_llama_cpp(sources[spec_id], tmp_path / "out.gguf", ftype_name, False, captured_log)


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize(("spec_id", "ftype_name"), _IMATRIX_CASES)
def test_types_and_bytes_match_llama_cpp_with_imatrix(sources, captured_log, tmp_path, spec_id, ftype_name) -> None:
    check_against_llama_cpp(sources[spec_id], tmp_path / "out.gguf", ftype_name, True, captured_log)


def test_file_types_we_cannot_write_are_refused(sources) -> None:
    header = read_header(sources[SPECS[0].id])
    with pytest.raises(QuantRuleError, match="cannot quantize"):
        predict(header, "NVFP4")
    # llama.cpp writes Q2_0, but gguf 0.19.0 knows neither its file type nor its ggml type
    for name in ("Q2_0", "GUESSED", "Q4_K_X"):
        with pytest.raises(QuantRuleError, match="unknown file type"):
            predict(header, name)


@pytest.mark.engine
def test_llama_cpp_cannot_write_nvfp4_either(sources, captured_log, tmp_path) -> None:
    import llama_cpp

    src = sources[SPECS[0].id]
    # NVFP4 has a llama_ftype but no default type in llama_ftype_get_default_type
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_NVFP4
    start = len(captured_log)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp_path / "x.gguf").encode(), ctypes.byref(params))
    assert rc != 0 and "invalid output file type" in "".join(captured_log[start:])


# -- the real Gemma 3 270M Q4_K_M ----------------------------------------------------------------


@pytest.mark.real_model
def test_gemma3_q4_k_m_is_predicted_from_its_own_header(gemma_path) -> None:
    """The published file, re-predicted from its own (already quantized) header: the rules read only
    names, shapes and hyperparameters, and the F32 norms keep their type."""
    h = read_header(gemma_path)
    p = predict(h, "Q4_K_M")
    assert len(p.tensors) == 236
    wrong = [
        (t.name, t.type_name, type_name(q.ggml_type))
        for t, q in zip(h.tensors, p.tensors)
        if t.ggml_type != q.ggml_type
    ]
    assert not wrong
    assert p.tensor_bytes == h.tensor_bytes == 246587904
    assert p.type_counts == {"Q8_0": 10, "Q5_0": 81, "Q4_K": 27, "Q6_K": 9, "F32": 109}
    # n_embd 640: attn_q/k, ffn_gate/up and attn_v rows cannot hold K-quant blocks
    assert p.n_fallback == 90
    assert p.bits_per_weight == pytest.approx(p.tensor_bytes * 8 / h.n_params)


@pytest.mark.real_model
def test_smollm2_q4_1_is_predicted_from_its_own_header(smollm_path) -> None:
    """Tied embeddings of a 576 row: the output rule asks for Q6_K, which falls back to Q8_0."""
    h = read_header(smollm_path)
    p = predict(h, "Q4_1")
    assert [q.ggml_type for q in p.tensors] == [t.ggml_type for t in h.tensors]
    assert p.tensor_bytes == h.tensor_bytes == 96576768
    assert p.type_counts == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert [t.name for t in p.tensors if t.fallback] == ["token_embd.weight"]


# -- rules that need no engine -------------------------------------------------------------------


def test_visit_order_is_block_then_name() -> None:
    names = [
        "blk.10.attn_v.weight",
        "output.weight",
        "blk.2.ffn_down.weight",
        "blk.2.attn_v.weight",
        "token_embd.weight",
        "blk.1.x",
    ]
    assert [names[i] for i in visit_order(names)] == [
        "output.weight",
        "token_embd.weight",
        "blk.1.x",
        "blk.2.attn_v.weight",
        "blk.2.ffn_down.weight",
        "blk.10.attn_v.weight",
    ]


def test_imatrix_is_required_per_tensor_not_per_file_type(sources) -> None:
    """IQ2_XXS on rows of 96 falls back to IQ4_NL everywhere, so llama.cpp needs no imatrix."""
    odd = read_header(sources["llama-96-gqa3-ff200-2L"])
    assert not any(plan(odd.tensors, odd.arch, "IQ2_XXS", has_imatrix=False).needs_imatrix)
    wide = read_header(sources["llama-256-gqa1-untied-8L"])
    with pytest.raises(QuantRuleError, match="importance matrix"):
        predict(wide, "IQ2_XXS", has_imatrix=False)
