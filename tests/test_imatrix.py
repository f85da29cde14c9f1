"""The harness's importance matrix: llama.cpp's definition and format; IQ2_XXS on a width that is a
multiple of 256 quantizes with it and runs."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFWriter

from harness import read_header
from harness.compare import build_variant
from harness.llama.imatrix import ImportanceMatrix, compute
from harness.llama.session import Sampling, open_session
from harness.offload.placement import ContextParams

pytestmark = pytest.mark.engine

TEXT = " ".join(["the quick brown fox jumps over the lazy dog and then it runs away to the river bank"] * 80)


def _runnable_llama(path, n_embd=256, n_layer=2, n_ff=512, n_head=4) -> None:
    """A tiny llama that llama.cpp can load and run: an SPM vocabulary with byte fallback, random weights."""
    words = sorted(set(TEXT.split()))
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁" + w for w in words]
    types = [2, 3, 3] + [6] * 256 + [1] * len(words)
    w = GGUFWriter(path, "llama")
    w.add_block_count(n_layer)
    w.add_context_length(1024)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(words))])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    rng = np.random.default_rng(0)

    def m(*shape):  # numpy order: rows, columns (ggml's ne reversed)
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    n_vocab = len(tokens)
    w.add_tensor("token_embd.weight", m(n_vocab, n_embd))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", m(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", m(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", m(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", m(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("output.weight", m(n_vocab, n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_iq2_xxs_with_the_harness_imatrix_quantizes_and_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "tiny-f32.gguf"
    _runnable_llama(src)
    im = compute(str(src), TEXT, "test", n_ctx=128, max_chunks=4)
    header = read_header(src)
    matrices = {t.name for t in header.tensors if t.layer is not None and len(t.shape) == 2}
    assert set(im.sums) == matrices  # every blk.* matrix seen, the last layer's FFN included
    for name, sums in im.sums.items():
        t = header.tensor(name)
        assert sums.shape == (t.shape[0],) and np.all(sums >= 0) and im.counts[name] >= 16

    path = tmp_path / "im.gguf"
    im.save(path)
    loaded = ImportanceMatrix.load(path)
    assert loaded.counts == im.counts and all(np.allclose(loaded.sums[k], im.sums[k], rtol=1e-6) for k in im.sums)
    kv = read_header(path).metadata
    assert kv["general.type"].value == "imatrix" and kv["imatrix.chunk_size"].value == 128

    out = build_variant(src, "IQ2_XXS", lambda m: None, loaded)
    types = {t.type_name for t in read_header(out).tensors}
    assert "IQ2_XXS" in types
    with open_session(str(out), None, ContextParams(n_ctx=256, n_batch=256, n_ubatch=256)) as s:
        g = s.generate(s.tokenize("the quick brown"), 4, Sampling())
    assert g.completion_tokens > 0 or g.stopped == "eog"
