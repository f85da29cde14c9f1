"""Which layer each tensor rides with (harness.gguf.roles), and the two users of that rule agreeing:
placement, which says where llama.cpp puts every byte, and the solver, which searches for a split by
the bytes each layer brings to a device. Pure: llama.cpp's own buffer report holds placement to the
truth in test_planner.py; here a tied and an untied model, with rope_freqs and a classifier head, show
that the solver's bound is placement's, byte for byte.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.gguf import ggml_types
from harness.gguf.architecture import ArchSpec, build_header
from harness.gguf.header import ModelHeader, model_header
from harness.gguf.reader import TensorInfo
from harness.gguf.roles import offload_layer, per_layer_bytes, tied_embedding
from harness.gguf.shards import read_header
from harness.offload.placement import NO_REPACK, ContextParams, offloaded_layer_bytes, place
from harness.offload.solver import PACKED, Device, Host, evaluate, solve
from tests.support.writer import write_llama

SMALL = dict(
    family="llama",
    n_embd=512,
    n_layer=6,
    n_head=8,
    n_head_kv=2,
    head_dim=64,
    n_ff=1024,
    n_vocab=3000,
    context_length=4096,
)
CP = ContextParams(n_ctx=2048)
HOST = Host(0, 50e9, 1e12)


def _with_tensors(h: ModelHeader, extra: list[tuple[str, tuple[int, ...]]]) -> ModelHeader:
    """``h`` with more F32 tensors appended (a classifier head, position embeddings)."""
    shard = h.shards[0]
    tensors, offset = list(shard.tensors), shard.data_bytes
    for name, shape in extra:
        n_bytes = ggml_types.tensor_nbytes(shape, 0)
        tensors.append(TensorInfo(name, shape, 0, offset, n_bytes))
        offset += ggml_types.pad(n_bytes, 32)
    return model_header([replace(shard, tensors=tuple(tensors), file_bytes=offset, data_bytes=offset)])


def _header(kind: str, **changes: int) -> ModelHeader:
    tied = kind.startswith("tied")
    h = build_header(ArchSpec(name=kind, tied_output=tied, rope_freqs=True, **(SMALL | changes)))
    if kind.endswith("cls"):
        h = _with_tensors(
            h, [("cls.weight", (512, 2)), ("cls.output.weight", (2,)), ("position_embd.weight", (512, 64))]
        )
    return h


KINDS = ("untied", "tied", "untied-cls", "tied-cls")


def test_each_tensor_rides_with_its_layer() -> None:
    h = _header("untied-cls")
    n = h.arch.n_layer
    layer = {t.name: offload_layer(t, n) for t in h.tensors}
    assert layer["token_embd.weight"] is None and layer["position_embd.weight"] is None  # input: the host
    assert layer["rope_freqs.weight"] == 0
    assert layer["blk.0.attn_q.weight"] == 0 and layer["blk.5.ffn_down.weight"] == 5
    assert {layer[k] for k in ("output.weight", "output_norm.weight", "cls.weight", "cls.output.weight")} == {n}


def test_tied_output_is_the_token_embedding() -> None:
    assert tied_embedding(_header("untied")) is None
    tied = _header("tied")
    assert tied_embedding(tied) is tied.tensor("token_embd.weight")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> ModelHeader:
    """A model file written by gguf-py's GGUFWriter: no output.weight, so tied."""
    [path] = write_llama(tmp_path_factory.mktemp("roles") / "m.gguf", n_layer=4)
    return read_header(path)


@pytest.mark.parametrize("kind", KINDS + ("written",))
def test_each_device_holds_what_the_solver_counts(kind, written) -> None:
    h = written if kind == "written" else _header(kind)
    costs = offloaded_layer_bytes(h, CP)
    total = h.arch.n_layer + 1
    embd = h.tensor("token_embd.weight")
    all_weights = sum(ggml_types.pad(t.n_bytes, 32) for t in h.tensors)
    for ngl in range(total + 1):
        for split in ([1.0], [1.0, 1.0], [3.0, 2.0, 2.0]):
            p = place(h, ngl, split, CP, cpu=NO_REPACK)
            holding_blocks = {dev for dev in p.layer_device[:-1] if dev != -1}
            for d in range(len(split)):
                here = [il for il, dev in enumerate(p.layer_device) if dev == d]
                on_device = p.weights_bytes.get(d, 0) + p.kv_bytes.get(d, 0)
                once = per_layer_bytes(h) if d in holding_blocks else 0  # rope_freqs: one instance per device
                assert on_device == sum(costs[il] for il in here) + once, (ngl, split, d)
            # nothing lost or invented: every tensor once, plus the tied copy where the output layer is offloaded
            # and a rope_freqs copy on each device holding blocks but not block 0
            copied = p.layer_device[-1] != -1 and tied_embedding(h) is not None
            copies = len(holding_blocks - {p.layer_device[0]}) * per_layer_bytes(h)
            assert p.duplicated_bytes == (ggml_types.pad(embd.n_bytes, 32) if copied else 0) + copies
            on_devices = sum(n for d, n in p.weights_bytes.items() if d != -1)
            assert on_devices + p.host_tensor_bytes == all_weights + p.duplicated_bytes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("on_first", [1, 2])
def test_first_device_a_byte_short_gives_up_one_layer(kind, on_first) -> None:
    """Device 0 gets exactly what placement puts on it for its first ``on_first`` layers (layer 0 brings
    rope_freqs), then one byte less: the solver must give it one layer less, and every layer still fits."""
    h = _header(kind)
    total = h.arch.n_layer + 1
    big = Device("big", 1 << 40)
    need = evaluate(h, [Device("d0", 1 << 40), big], HOST, CP, total, [on_first, total - on_first]).devices[0]
    exact = solve(h, [Device("d0", need.total_bytes), big], HOST, CP, split_mode=PACKED)
    assert exact.fits_fully and exact.tensor_split == (on_first, total - on_first)
    short = solve(h, [Device("d0", need.total_bytes - 1), big], HOST, CP, split_mode=PACKED)
    assert short.fits_fully and short.tensor_split == (on_first - 1, total - on_first + 1)


@pytest.mark.parametrize("kind", KINDS)
def test_output_device_a_byte_short_passes_the_output_layer_on(kind) -> None:
    """Device 0 holds the repeating layers, device 1 exactly the output layer as placement has it (its cls
    head, or the tied embedding copy); one byte less on device 1 and the output layer goes to device 2."""
    h = _header(kind, n_vocab=32000)  # logits larger than a layer: the output layer cannot join device 0
    n = h.arch.n_layer
    big = Device("big", 1 << 40)
    need = evaluate(h, [Device("d0", 1 << 40), Device("d1", 1 << 40), big], HOST, CP, n + 1, [n, 1, 0]).devices
    assert need[1].n_layers == 0 and need[1].holds_output
    d0 = Device("d0", need[0].total_bytes)
    exact = solve(h, [d0, Device("d1", need[1].total_bytes), big], HOST, CP, split_mode=PACKED)
    assert exact.fits_fully and exact.tensor_split == (n, 1, 0)
    short = solve(h, [d0, Device("d1", need[1].total_bytes - 1), big], HOST, CP, split_mode=PACKED)
    assert short.fits_fully and short.tensor_split == (n, 0, 1)
