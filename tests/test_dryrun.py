"""Compute buffers from llama.cpp's dry run, against llama.cpp's real allocation; the solver with them.

Every zoo architecture (tests/support/zoo.py), at 4k and 32k context with f16 and q8_0 KV:
- the dry run (no_alloc, stand-in RPC servers in a child process) prints each device's compute buffer
  as the real, allocating load does, on the device and on the host;
- with the budget set between llama.cpp's actual device totals for h and h+1 layers and no margin, the
  solver picks exactly h.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from harness import read_header
from harness.errors import EngineError
from harness.llama import dryrun, engine
from harness.llama.engine import load_and_report
from harness.offload.placement import ContextParams, layer_devices
from harness.offload.solver import compute_signature, layer_kinds
from harness.plan import DRY_RUN_SOURCE, PlanRequest, make_plan
from tests.support import zoo as zoo_support
from tests.support.zoo import ZOO

CONTEXTS = {
    "4k-f16": ContextParams(n_ctx=4096),
    "4k-q8_0": ContextParams(n_ctx=4096, type_k="q8_0", type_v="q8_0"),
    "32k-f16": ContextParams(n_ctx=32768),
    "32k-q8_0": ContextParams(n_ctx=32768, type_k="q8_0", type_v="q8_0"),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("zoo")
    return {name: write(d / f"{name}.gguf") for name, write in ZOO.items()}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def actual_load(path: Path, endpoint: str, ngl: int, cp: ContextParams):
    return load_and_report(
        path,
        ngl,
        cp.n_ctx,
        [endpoint],
        type_k=cp.type_k,
        type_v=cp.type_v,
        flash_attn=cp.flash_attn,
        n_ubatch=cp.n_ubatch,
        swa_full=cp.swa_full,
        decode=False,
        tensor_split=(1.0,),
    )


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name", list(ZOO))
def test_dry_run_compute_equals_allocated(zoo, server, name) -> None:
    """One child process answers three layouts; each equals a real load's compute buffers."""
    path = zoo[name]
    n_layer = read_header(path).arch.n_layer
    cp = CONTEXTS["32k-f16"]
    layouts = [dryrun.Layout(n, (1.0,)) for n in (0, n_layer // 2 + 1, n_layer + 1)]
    got = dryrun.reserve(path, f"test:{name}", 1, layouts, cp)
    for lay in layouts:
        report = actual_load(path, server.endpoint, lay.n_gpu_layers, cp)
        device = sum(b.compute_bytes for b in report.rpc_buffers)
        host = sum(b.compute_bytes for b in report.host_buffers)
        assert got[lay] == dryrun.Reservation((device,), host), lay


def write_deep_qwen2(path: Path) -> Path:
    """qwen2 of ten layers: enough for the signature's "a few layers" to repeat."""
    n_layer, n_embd, n_ff, head = 10, 128, 256, 32
    kvs = zoo_support._common(n_layer, n_embd, n_ff) | {"attention.head_count": 4, "attention.head_count_kv": 2}
    t = zoo_support._io(n_embd)
    for i in range(n_layer):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | zoo_support._attn(i, n_embd, n_embd, 2 * head)
        t |= zoo_support._ffn(i, n_embd, n_ff)
    return zoo_support._write(path, "qwen2", kvs, t)


def write_deep_hybrid(path: Path) -> Path:
    """granitehybrid of ten layers, attention on every third: two kinds of layer, interleaved."""
    heads_kv = [0, 0, 2] * 3 + [0]
    n_layer, n_embd, n_ff, n_head = len(heads_kv), 256, 256, 8
    head = n_embd // n_head
    kvs = (
        zoo_support._common(n_layer, n_embd, n_ff)
        | {f"ssm.{k}": v for k, v in zoo_support._SSM.items()}
        | {"attention.head_count": n_head, "attention.head_count_kv": heads_kv}
    )
    t = zoo_support._io(n_embd)
    for i, h in enumerate(heads_kv):
        t |= {f"blk.{i}.attn_norm.weight": (n_embd,)} | zoo_support._ffn(i, n_embd, n_ff)
        t |= zoo_support._attn(i, n_embd, n_embd, h * head) if h else zoo_support._mamba2_layer(i, n_embd)
    return zoo_support._write(path, "granitehybrid", kvs, t)


DEEP = {"qwen2-deep": write_deep_qwen2, "granitehybrid-deep": write_deep_hybrid}


def signature_cases(n_layer: int) -> dict[int, list[tuple[int, tuple[float, ...]]]]:
    """Layouts on one device (every n_gpu_layers), two and three (every split of all layers)."""
    cases = {1: [(n, (1.0,)) for n in range(n_layer + 2)]}
    cases[2] = [(n_layer + 1, (float(a), float(n_layer + 1 - a))) for a in range(1, n_layer + 1)]
    cases[2] += [(n, (1.0, float(n - 1))) for n in range(2, n_layer + 1)]
    cases[3] = [(n_layer + 1, (1.0, float(b), float(n_layer - b))) for b in range(1, n_layer)]
    return cases


def check_signatures(path: Path, cases, cp: ContextParams) -> tuple[int, int]:
    """Every layout with one compute signature gets one answer from llama.cpp; (signatures, layouts)."""
    header = read_header(path)
    kinds = layer_kinds(header, cp)
    n_signatures = n_layouts = 0
    for n_devices, layouts in cases.items():
        asked = [dryrun.Layout(n, split) for n, split in layouts]
        got = dryrun.reserve(path, f"test:{path}", n_devices, asked, cp)
        by_signature: dict[tuple, dryrun.Reservation] = {}
        for lay in asked:
            devices = layer_devices(header.arch.n_layer, lay.n_gpu_layers, list(lay.tensor_split))
            sig = compute_signature(kinds, devices)
            assert by_signature.setdefault(sig, got[lay]) == got[lay], (lay, sig)
        n_signatures += len(by_signature)
        n_layouts += len(asked)
    return n_signatures, n_layouts


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name", list(ZOO) + list(DEEP))
def test_compute_depends_on_the_signature_alone(zoo, tmp_path, name) -> None:
    """The solver asks llama.cpp once per compute signature (how many layers of each kind each device
    holds, up to a few; where the output layer is; the order of devices), not once per layout: every
    layout of one, two and three devices with the same signature gets the same compute buffers."""
    path = zoo[name] if name in ZOO else DEEP[name](tmp_path / f"{name}.gguf")
    n_layer = read_header(path).arch.n_layer
    cases = signature_cases(n_layer)
    if name in ZOO:  # three devices on the deep models only (and in `make test-sweep`)
        cases.pop(3)
    n_signatures, n_layouts = check_signatures(path, cases, CONTEXTS["32k-f16"])
    if name == "qwen2-deep":  # one kind of layer: long runs share a signature
        assert n_signatures < n_layouts * 3 / 4, (n_signatures, n_layouts)


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.sweep
@pytest.mark.parametrize("name", list(ZOO))
def test_signature_over_three_devices(zoo, name) -> None:
    path = zoo[name]
    n_layer = read_header(path).arch.n_layer
    check_signatures(path, {3: signature_cases(n_layer)[3]}, CONTEXTS["32k-f16"])


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_signature_on_the_real_models(gemma_path, smollm_path) -> None:
    """Gemma 3 (sliding window on five of every six layers) and SmolLM2 (30 layers), every n_gpu_layers."""
    for path in (gemma_path, smollm_path):
        n_layer = read_header(path).arch.n_layer
        check_signatures(path, {1: signature_cases(n_layer)[1]}, ContextParams(n_ctx=8192))
    assert check_signatures(smollm_path, {1: signature_cases(30)[1]}, ContextParams(n_ctx=8192))[0] < 12


@pytest.mark.engine
@pytest.mark.rpc
def test_results_are_cached(zoo, monkeypatch) -> None:
    path = zoo["qwen2"]
    lay = dryrun.Layout(3, (1.0,))
    first = dryrun.reserve(path, "test:cached", 1, [lay], ContextParams())

    def no_child(*args, **kwargs):
        raise AssertionError("asked llama.cpp again")

    monkeypatch.setattr(engine, "run_isolated", no_child)
    assert dryrun.reserve(path, "test:cached", 1, [lay], ContextParams()) == first


def _h(name: str, ctx: str, n_total: int) -> int:
    """A layer count to bracket, spread over 0..n_total-1 by the case's name (stable across runs)."""
    return zlib.crc32(f"{name}/{ctx}".encode()) % n_total


# every model at 4k f16 and 32k q8_0 in `make test`; the other two contexts in `make test-sweep`
SOLVER_CASES = [
    pytest.param(name, ctx, marks=() if ctx in ("4k-f16", "32k-q8_0") else pytest.mark.sweep)
    for name in ZOO
    for ctx in CONTEXTS
]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name,ctx", SOLVER_CASES)
def test_solver_picks_h_between_llama_cpp_totals(zoo, server, name, ctx) -> None:
    path, cp = zoo[name], CONTEXTS[ctx]
    n_total = read_header(path).arch.n_layer + 1
    h = _h(name, ctx, n_total)
    totals = []
    for ngl in (h, h + 1):
        report = actual_load(path, server.endpoint, ngl, cp)
        assert report.n_layers_on_devices == ngl
        totals.append(sum(b.total_bytes for b in report.rpc_buffers))
    assert totals[0] < totals[1], totals
    budget = (totals[0] + totals[1]) // 2
    req = PlanRequest(
        model=str(path),
        rpc=(f"{server.endpoint}={budget}",),
        n_ctx=cp.n_ctx,
        kv_type=cp.type_k,
        margin_fraction=0.0,
        compute="llama",
        strategy="layers",  # the layer split (a mixture of experts' expert offload: tests/test_moe_solver.py)
        host_ram_bytes=1 << 40,
    )
    plan = make_plan(req).plan
    assert plan.compute_source == DRY_RUN_SOURCE
    assert plan.n_gpu_layers == h, (totals, [d.total_bytes for d in plan.devices])
    [d] = plan.devices
    assert abs(d.total_bytes - totals[0]) <= 3 * engine.MIB_PRINT_TOLERANCE_BYTES


@pytest.mark.engine
@pytest.mark.rpc
def test_a_model_llama_cpp_refuses_is_one_line(tmp_path, zoo) -> None:
    """An architecture llama.cpp does not know: its own reason, before any plan is made."""
    src = zoo["qwen2"].read_bytes()
    bad = tmp_path / "unknown.gguf"
    bad.write_bytes(src.replace(b"qwen2", b"qwenx"))  # the architecture name and its key prefix
    with pytest.raises(EngineError) as err:
        make_plan(PlanRequest(model=str(bad), budget_bytes=1 << 30, compute="llama"))
    message = str(err.value)
    assert "\n" not in message and "unknown model architecture" in message, message
