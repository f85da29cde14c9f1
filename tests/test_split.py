"""Split models: any shard opens the whole model; every shard is checked against the others."""

from __future__ import annotations

import shutil

import pytest
from gguf import GGUFValueType as V

from harness import GGUFError, read_header
from harness.gguf.shards import shard_paths
from harness.llama import reference_parser
from tests.support.ggufbytes import Model, base_kvs, base_tensors, kv
from tests.support.writer import write_llama

_SPLIT = {"split.no", "split.count", "split.tensors.count"}


@pytest.fixture
def shards(tmp_path):
    return write_llama(tmp_path / "m.gguf", split_max_tensors=6)


def test_any_shard_opens_the_whole_model(tmp_path, shards) -> None:
    (tmp_path / "whole").mkdir()
    [whole] = write_llama(tmp_path / "whole" / "m.gguf")
    ref = read_header(whole)
    for shard in shards:
        h = read_header(shard)
        assert h.paths == tuple(map(str, shards))
        assert [(t.name, t.n_bytes, t.shape) for t in h.tensors] == [(t.name, t.n_bytes, t.shape) for t in ref.tensors]
        assert h.tensor_bytes == ref.tensor_bytes and h.arch == ref.arch
        assert {k for k in h.metadata} - _SPLIT == set(ref.metadata)


@pytest.mark.engine
def test_each_shard_agrees_with_llama_cpp(shards) -> None:
    h = read_header(shards[0])
    for i, shard in enumerate(shards):
        ref = reference_parser.parse_header(shard)
        ours = [(t.name, t.n_bytes, t.offset_bytes) for t in h.tensors if t.shard == i]
        assert ours == [(t.name, t.n_bytes, t.offset_bytes) for t in ref.tensors]
        assert h.shards[i].data_offset == ref.data_offset


def test_missing_shard_is_named(shards) -> None:
    shards[1].unlink()
    with pytest.raises(GGUFError, match=r"m-00002-of-00003\.gguf: shard 2 of 3 is missing"):
        read_header(shards[0])


def test_misordered_shards(shards) -> None:
    tmp = shards[1].with_suffix(".tmp")
    shards[1].rename(tmp)
    shards[2].rename(shards[1])
    tmp.rename(shards[2])
    with pytest.raises(GGUFError, match=r"m-00002-of-00003\.gguf: split.no is 2 but this file is shard 2 of 3"):
        read_header(shards[0])


def test_duplicated_shard(shards) -> None:
    shutil.copy(shards[1], shards[2])
    with pytest.raises(GGUFError, match=r"m-00003-of-00003\.gguf: split.no is 1 .*duplicated"):
        read_header(shards[2])


def _write_shards(tmp_path, specs) -> list:
    """specs: per shard (extra kvs, tensors); split.no/count/tensors.count added unless given."""
    paths = []
    n = len(specs)
    total = sum(len(t) for _, t, _ in specs)
    for i, (kvs, tensors, overrides) in enumerate(specs):
        split = {"split.no": (V.UINT16, i), "split.count": (V.UINT16, n), "split.tensors.count": (V.INT32, total)}
        split.update(overrides)
        kvlist = list(kvs) + [kv(k, t, v) for k, (t, v) in split.items() if t is not None]
        p = tmp_path / f"x-{i + 1:05d}-of-{n:05d}.gguf"
        p.write_bytes(Model(kvs=kvlist, tensors=tensors).build())
        paths.append(p)
    return paths


def _two_shard_specs(overrides=None):
    overrides = overrides or {}
    ts = base_tensors()
    first = (base_kvs(), ts[:4], overrides.get(0, {}))
    second = ([], ts[4:], overrides.get(1, {}))
    return [first, second]


def test_handmade_shards_are_valid(tmp_path) -> None:
    paths = _write_shards(tmp_path, _two_shard_specs())
    h = read_header(paths[1])
    assert len(h.tensors) == len(base_tensors()) and h.arch.n_layer == 2


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({1: {"split.count": (V.UINT16, 3)}}, r"x-00002-of-00002\.gguf: split.count is 3 but the first shard says 2"),
        ({1: {"split.tensors.count": (V.INT32, 99)}}, r"x-00002-of-00002\.gguf: split.tensors.count is 99"),
        (
            {0: {"split.tensors.count": (V.INT32, 5)}, 1: {"split.tensors.count": (V.INT32, 5)}},
            r"split.tensors.count is 5 but the 2 shard\(s\) hold 8 tensors",
        ),
        ({1: {"split.no": (None, 0)}}, r"x-00002-of-00002\.gguf: shard 2 of 2 lacks the split.\* keys"),
        ({0: {"split.count": (V.UINT32, 2)}}, r"x-00001-of-00002\.gguf: key 'split.count' .* UINT32, expected UINT16"),
    ],
)
def test_inconsistent_split_keys(tmp_path, overrides, message) -> None:
    paths = _write_shards(tmp_path, _two_shard_specs(overrides))
    with pytest.raises(GGUFError, match=message):
        read_header(paths[0])


def test_shards_of_different_models(tmp_path) -> None:
    specs = _two_shard_specs()
    specs[1] = ([kv("general.architecture", V.STRING, "gemma3")], specs[1][1], {})
    paths = _write_shards(tmp_path, specs)
    with pytest.raises(GGUFError, match=r"x-00002-of-00002\.gguf: key 'general.architecture' .* differs"):
        read_header(paths[0])


def test_tensor_in_two_shards(tmp_path) -> None:
    ts = base_tensors()
    paths = _write_shards(tmp_path, [(base_kvs(), ts[:4], {}), ([], ts[3:], {})])
    with pytest.raises(GGUFError, match=r"tensor 'blk.0.ffn_up.weight' is also in .*x-00001-of-00002"):
        read_header(paths[1])


def test_split_keys_without_shard_name(tmp_path) -> None:
    paths = _write_shards(tmp_path, _two_shard_specs())
    lone = tmp_path / "renamed.gguf"
    paths[0].rename(lone)
    with pytest.raises(GGUFError, match=r"split.count is 2 but 1 shard\(s\) were found by name"):
        read_header(lone)


def test_shard_name_without_split_keys(tmp_path) -> None:
    p = tmp_path / "y-00001-of-00001.gguf"
    p.write_bytes(Model(kvs=base_kvs(), tensors=base_tensors()).build())
    with pytest.raises(GGUFError, match="named as a shard of a split model but has no split.count"):
        read_header(p)


@pytest.mark.parametrize("name", ["z-00000-of-00002.gguf", "z-00003-of-00002.gguf", "z-00001-of-00000.gguf"])
def test_impossible_shard_names(tmp_path, name) -> None:
    p = tmp_path / name
    p.write_bytes(b"GGUF")
    with pytest.raises(GGUFError, match="cannot exist"):
        shard_paths(p)


def test_a_path_the_file_system_refuses_is_a_gguf_error() -> None:
    with pytest.raises(GGUFError, match="File name too long"):
        read_header("x" * 300 + ".gguf")
