"""Stand-in files: a model's header in a sparse file of the model's size, for llama.cpp's dry runs.

Checked three ways: our reader reads the stand-in back as the model it stands for; gguf-py's GGUFReader (an
independent parser) reads the same bytes; and llama.cpp loads it without allocating, printing the compute
buffers the real file prints, and loads a registry model known only by its architecture (Llama 3.1 8B).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest
from gguf import GGUFReader
from gguf import GGUFValueType as V

from harness import read_header
from harness.errors import GGUFError
from harness.gguf.architecture import ArchSpec, build_header
from harness.gguf.format import Keys
from harness.gguf.header import ModelHeader
from harness.gguf.reader import KeyValue, LazyArray
from harness.gguf.standin import standin_bytes, standin_data_bytes, standin_digest, write_standin
from harness.models.registry import load_registry
from harness.models.resolve import architecture_header
from tests.support.writer import write_llama
from tests.support.zoo import ZOO

SMALL = ArchSpec("small-llama", "llama", 256, 2, 8, 2, 32, 512, 300, 4096, rope_freqs=True, source_type="F16")


def _tensors(h: ModelHeader) -> list[tuple]:
    return [(t.name, t.shape, t.ggml_type, t.n_bytes) for t in h.tensors]


def _value(kv):
    """A comparable form of a key's value: arrays by element type, count and encoded elements."""
    v = kv.value
    return (v.element_type, v.count, v.raw) if isinstance(v, LazyArray) else v


def _metadata(h: ModelHeader) -> dict[str, tuple]:
    return {k: (int(kv.value_type), _value(kv)) for k, kv in h.metadata.items()}


def _registry_8b() -> ModelHeader:
    reg = load_registry()
    return architecture_header(reg, reg.get("8b-q4_k_m"))


# -- (a) our reader reads it back ---------------------------------------------------------------------------------


def test_a_real_files_standin_reads_back_as_the_file(tmp_path) -> None:
    [src] = write_llama(tmp_path / "m.gguf", extra_kv={"test.nested": ([[1, 2], [3]], V.ARRAY)})
    real = read_header(src)
    path = write_standin(real, tmp_path / "standins")
    back = read_header(path)
    assert _tensors(back) == _tensors(real)
    assert _metadata(back) == _metadata(real)
    assert not back.truncated and back.file_bytes == real.file_bytes == os.path.getsize(src)
    assert back.data_offset == real.data_offset  # the same header, byte for byte: gguf-py wrote it the same way
    assert path.read_bytes()[: back.data_offset] == src.read_bytes()[: real.data_offset]


def test_shards_merge_into_one_file_without_split_keys(tmp_path) -> None:
    paths = write_llama(tmp_path / "m.gguf", n_layer=4, split_max_tensors=5)
    real = read_header(paths[0])
    assert len(real.shards) == len(paths) > 2
    back = read_header(write_standin(real, tmp_path))
    assert len(back.shards) == 1 and _tensors(back) == _tensors(real)
    split = {k for k in real.metadata if k.startswith("split.")}
    assert split and not split & set(back.metadata)
    assert _metadata(back) == {k: v for k, v in _metadata(real).items() if k not in split}
    # one data section: every shard's tensors, each padded to 32 bytes
    assert back.file_bytes == back.data_offset + sum((t.n_bytes + 31) // 32 * 32 for t in real.tensors)


def test_an_architecture_gets_a_vocabulary_of_its_embedding_rows(tmp_path) -> None:
    built = build_header(SMALL)
    assert Keys.Tokenizer.LIST not in built.metadata
    back = read_header(write_standin(built, tmp_path))
    assert _tensors(back) == _tensors(built)
    assert {k: v for k, v in _metadata(back).items() if not k.startswith("tokenizer.")} == _metadata(built)
    tokens = back.metadata[Keys.Tokenizer.LIST].value.decode()
    assert len(tokens) == back.arch.n_vocab == 300 == back.tensor("token_embd.weight").shape[1]
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[3 + 10] == "<0x0A>" and len(set(tokens)) == 300
    assert back.get(Keys.Tokenizer.MODEL) == "llama"
    assert len(back.metadata[Keys.Tokenizer.SCORES].value.decode()) == 300


def test_llama_31_architecture_carries_what_the_converter_writes() -> None:
    md = _registry_8b().metadata
    assert md["llama.rope.dimension_count"].value == 128
    assert md["llama.rope.freq_base"].value == 500000.0
    assert md["llama.attention.layer_norm_rms_epsilon"].value == pytest.approx(1e-5)
    assert md["llama.vocab_size"].value == 128256
    assert md["general.file_type"].value == 15  # Q4_K_M
    # llama 3.1's config.json has no head_dim: the converter writes no key/value lengths, llama.cpp derives 128
    assert "llama.attention.key_length" not in md and "llama.attention.value_length" not in md


def test_heads_of_another_width_keep_their_lengths() -> None:
    h = build_header(ArchSpec("wide-heads", "llama", 256, 2, 4, 2, 128, 512, 64, 4096))
    assert h.get("llama.attention.key_length") == h.get("llama.attention.value_length") == 128
    assert h.arch.key_length == 128 and h.get("llama.rope.dimension_count") == 128


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), 1e39, True, "1e-5"])
def test_arch_floats_are_checked(value) -> None:
    from harness.errors import RegistryError

    with pytest.raises(RegistryError, match="rms_norm_eps must be a positive number"):
        ArchSpec("x", "llama", 256, 2, 8, 2, 32, 512, 64, 4096, rms_norm_eps=value)


# -- the file itself ----------------------------------------------------------------------------------------------


def test_the_file_is_sparse_reused_and_named_by_its_digest(tmp_path) -> None:
    h = _registry_8b()
    path = write_standin(h, tmp_path)
    st = path.stat()
    head = standin_bytes(h)
    assert path.name == f"{standin_digest(h)}.gguf"
    assert st.st_size == len(head) + standin_data_bytes(h) > 4 << 30  # ~4.6 GiB of Q4_K_M weights
    assert st.st_blocks * 512 < len(head) + (1 << 20)  # only the header's pages are on disk
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    assert write_standin(h, tmp_path) == path and path.stat().st_mtime_ns == st.st_mtime_ns  # reused
    os.truncate(path, 100)  # a stale file of the wrong size is replaced
    assert write_standin(h, tmp_path).stat().st_size == st.st_size


def test_digest_follows_the_header() -> None:
    a, b = build_header(SMALL), build_header(SMALL)
    assert standin_digest(a) == standin_digest(b)
    longer = build_header(replace(SMALL, context_length=8192))
    assert standin_digest(longer) != standin_digest(a)


def test_unwritable_directory_is_a_gguf_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(GGUFError, match="cannot write a stand-in file"):
        write_standin(build_header(SMALL), blocker / "sub")


@pytest.mark.parametrize(
    "value_type, value, problem",
    [
        (V.UINT32, -1, "does not fit a UINT32"),
        (V.UINT8, 1.5, "does not fit a UINT8"),
        (V.STRING, 3, "a STRING holds int"),
        (V.ARRAY, [1, 2], "an ARRAY holds list"),
        (V.INT32, "7", "a INT32 holds str"),
        (99, 0, "99 is not a GGUF value type"),
    ],
)
def test_a_value_that_its_type_cannot_hold_is_refused(value_type, value, problem) -> None:
    h = build_header(SMALL)
    bad = KeyValue("test.bad", value_type, 0, value)
    shard = replace(h.shards[0], metadata={**h.metadata, "test.bad": bad})
    with pytest.raises(GGUFError, match=f"key 'test.bad': .*{problem}"):
        standin_bytes(replace(h, shards=(shard,)))


def test_405b_serializes_well_under_a_second() -> None:
    reg = load_registry()
    h = architecture_header(reg, reg.get("405b-q4_k_m"))
    t0 = time.perf_counter()
    head = standin_bytes(h)
    elapsed_s = time.perf_counter() - t0
    assert h.arch.n_layer == 126 and len(head) < 4 << 20
    assert elapsed_s < 0.5, f"405B header took {elapsed_s:.2f} s"


# -- (b) gguf-py's reader agrees ----------------------------------------------------------------------------------


def test_gguf_py_reads_the_same_model(tmp_path) -> None:
    built = build_header(SMALL)
    path = write_standin(built, tmp_path)
    ours, theirs = read_header(path), GGUFReader(path)
    assert [(t.name, tuple(map(int, t.shape)), int(t.tensor_type), int(t.n_bytes)) for t in theirs.tensors] == [
        (t.name, t.shape, t.ggml_type, t.n_bytes) for t in built.tensors
    ]
    assert [int(t.data_offset) for t in theirs.tensors] == [ours.data_offset + t.offset_bytes for t in built.tensors]
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}  # its own pseudo-fields
    assert list(fields) == list(ours.metadata)
    for key, kv in ours.metadata.items():
        assert fields[key].types[0] == kv.value_type, key
        assert fields[key].contents() == (kv.value.decode() if isinstance(kv.value, LazyArray) else kv.value), key


# -- (c) llama.cpp loads it ---------------------------------------------------------------------------------------


def _compute(report) -> dict[str, int]:
    return {b.name: b.compute_bytes for b in report.buffers if b.compute_bytes}


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name", ["qwen2", "deepseek2", "gpt-oss", "mamba2", "lfm2"])
def test_a_standin_dry_runs_like_the_real_file(tmp_path, server, name) -> None:
    from harness.llama.engine import load_and_report

    real = ZOO[name](tmp_path / f"{name}.gguf")
    standin = write_standin(read_header(real), tmp_path / "standins")
    n_layer = read_header(real).arch.n_layer
    runs = [
        load_and_report(p, n_layer, 1024, [server.endpoint], no_alloc=True, decode=False, isolated=True)
        for p in (real, standin)
    ]
    assert _compute(runs[0]) == _compute(runs[1])
    assert any(b.is_rpc for b in runs[1].buffers if b.compute_bytes)


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_smollm2_standin_dry_runs_like_the_file(tmp_path, server, smollm_path) -> None:
    from harness.llama.engine import load_and_report

    standin = write_standin(read_header(smollm_path), tmp_path)
    runs = [
        load_and_report(p, 10, 2048, [server.endpoint], no_alloc=True, decode=False, isolated=True)
        for p in (smollm_path, standin)
    ]
    assert _compute(runs[0]) == _compute(runs[1])
    assert runs[1].buffer(f"RPC0[{server.endpoint}]").compute_mib == 97.12  # DESIGN.md §5


@pytest.mark.engine
@pytest.mark.rpc
def test_llama_31_8b_known_by_its_architecture_dry_runs(tmp_path, server) -> None:
    from harness.llama.engine import load_and_report

    path = write_standin(_registry_8b(), tmp_path)
    t0 = time.perf_counter()
    r = load_and_report(
        path, 33, 8192, [server.endpoint], flash_attn=False, n_ubatch=512, no_alloc=True, decode=False, isolated=True
    )
    wall_s = time.perf_counter() - t0
    rpc = r.buffer(f"RPC0[{server.endpoint}]")
    print(f"llama-3.1-8b Q4_K_M stand-in: RPC0 compute {rpc.compute_mib:.2f} MiB, dry run {wall_s:.2f} s wall")
    assert r.n_layers_offloaded == 33 and r.n_layers_total == 33
    assert rpc.compute_mib == 564.01  # DESIGN.md §5 (real CUDA logs of the same model: 560.00)
