"""The solver's strategies for mixtures of experts, against llama.cpp.

- The compute signature with routed experts on the host (--n-cpu-moe) predicts llama.cpp's dry-run compute
  buffers on every zoo MoE model, for every n_cpu_moe with every layer offloaded and for mixes.
- With the budget between llama.cpp's actual device totals for n_cpu_moe m-1 and m (every layer on the
  device) and no margin, the experts strategy picks exactly m.
- Without the engine: the registry's Qwen3-235B-A22B on one A100 40GB with 256 GiB of host RAM gets an
  expert-offload plan beside the layer split; a dense model never does; --strategy and --n-cpu-moe pin.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from harness import read_header
from harness.llama import dryrun
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES, load_and_report
from harness.offload.placement import ContextParams, layer_devices, n_cpu_moe_patterns
from harness.offload.solver import compute_signature, layer_kinds
from harness.plan import PlanRequest, make_plan
from tests.support.zoo import ZOO

MOE = ["qwen3moe", "gpt-oss", "gpt-oss-mxfp4", "deepseek2", "llama4"]
CP = ContextParams(n_ctx=4096)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("moe")
    return {name: ZOO[name](d / f"{name}.gguf") for name in MOE}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name", MOE)
def test_signature_with_experts_on_the_host(zoo, name) -> None:
    path = zoo[name]
    header = read_header(path)
    n_layer = header.arch.n_layer
    total = n_layer + 1
    layouts = [dryrun.Layout(total, (1.0,), m) for m in range(n_layer + 1)]
    layouts += [dryrun.Layout(n, (1.0,), m) for n in range(1, total) for m in (1, n_layer)]
    got = dryrun.reserve(path, f"test:{name}", 1, layouts, CP)
    by_signature: dict[tuple, dryrun.Reservation] = {}
    for lay in layouts:
        kinds = layer_kinds(header, CP, lay.n_cpu_moe)
        sig = compute_signature(kinds, layer_devices(n_layer, lay.n_gpu_layers, list(lay.tensor_split)))
        assert by_signature.setdefault(sig, got[lay]) == got[lay], (lay, sig)


def actual_device_total(path: Path, endpoint: str, n_cpu_moe: int) -> int:
    n_layer = read_header(path).arch.n_layer
    report = load_and_report(
        path,
        n_layer + 1,
        CP.n_ctx,
        [endpoint],
        type_k=CP.type_k,
        type_v=CP.type_v,
        flash_attn=CP.flash_attn,
        n_ubatch=CP.n_ubatch,
        swa_full=CP.swa_full,
        decode=False,
        tensor_split=(1.0,),
        tensor_overrides=[(p, "CPU") for p in n_cpu_moe_patterns(n_cpu_moe)],
    )
    return sum(b.total_bytes for b in report.rpc_buffers)


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name", MOE)
def test_experts_strategy_picks_m_between_llama_cpp_totals(zoo, server, name) -> None:
    path = zoo[name]
    header = read_header(path)
    n_layer = header.arch.n_layer
    # the first block whose experts moving changes the device's total (deepseek2's block 0 is dense)
    totals = [actual_device_total(path, server.endpoint, m) for m in range(n_layer + 1)]
    steps = [m for m in range(1, n_layer + 1) if totals[m] < totals[m - 1]]
    m = steps[zlib.crc32(name.encode()) % len(steps)]
    budget = (totals[m] + totals[m - 1]) // 2  # the totals at m-1 experts' blocks do not fit, at m they do
    req = PlanRequest(
        model=str(path),
        rpc=(f"{server.endpoint}={budget}",),
        n_ctx=CP.n_ctx,
        margin_fraction=0.0,
        compute="llama",
        strategy="experts",
        host_ram_bytes=1 << 40,
    )
    plan = make_plan(req).plan
    assert (plan.n_gpu_layers, plan.n_cpu_moe) == (n_layer + 1, m), totals
    [d] = plan.devices
    assert abs(d.total_bytes - totals[m]) <= 4 * MIB_PRINT_TOLERANCE_BYTES


# --- without the engine ---------------------------------------------------------------------------------------


def _plan(model: str, **kw):
    return make_plan(PlanRequest(model=model, gpu="a100-40gb", host_ram_bytes=256 << 30, compute="formula", **kw))


def test_a_big_moe_on_one_a100_gets_expert_offload_beside_the_layer_split() -> None:
    r = _plan("qwen3-235b-a22b-q4_k_m")
    p, other = r.plan, r.other
    n_total = p.n_layers_total
    assert p.strategy == "experts" and p.n_gpu_layers == n_total and 0 < p.n_cpu_moe < n_total - 1
    assert p.devices_fit and p.host.fits
    assert other is not None and other.strategy == "layers" and other.n_gpu_layers < n_total
    assert p.predicted_tg_tokens_per_s > other.predicted_tg_tokens_per_s
    # one block's experts fewer on the host would not fit: the smallest n_cpu_moe was chosen
    fewer = _plan("qwen3-235b-a22b-q4_k_m", n_cpu_moe=p.n_cpu_moe - 1, n_gpu_layers=n_total).plan
    assert not fewer.devices_fit


def test_strategy_and_n_cpu_moe_pin_the_plan() -> None:
    layers = _plan("qwen3-235b-a22b-q4_k_m", strategy="layers")
    assert layers.plan.n_cpu_moe == 0 and layers.other is None
    pinned = _plan("qwen3-235b-a22b-q4_k_m", n_cpu_moe=94)
    assert pinned.plan.n_cpu_moe == 94 and pinned.plan.n_gpu_layers == pinned.plan.n_layers_total


def test_a_dense_model_never_moves_experts() -> None:
    r = _plan("70b-q4_k_m")
    assert r.plan.n_cpu_moe == 0 and r.other is None and r.plan.strategy == "layers"


def test_the_mtp_block_llama_cpp_leaves_unloaded_is_in_no_buffer() -> None:
    """GLM-4.5-Air's file keeps its multi-token-prediction block (blk.46); llama.cpp skips it (load_mtp is
    off): "model has unused tensor blk.46.… -- ignoring". It counts as a layer, but in no buffer."""
    from harness.models.resolve import resolve_model
    from harness.offload.placement import place

    header = resolve_model("glm-4.5-air-q4_k_m").header
    mtp = sum(t.n_bytes for t in header.tensors if t.name.startswith("blk.46."))
    assert mtp > 2 << 30 and header.arch.n_layer == 47 and header.arch.n_layer_nextn == 1
    p = place(header, 48, [1.0], CP)
    assert "blk.46.attn_norm.weight" not in p.tensor_device
    assert p.weights_bytes[0] + p.host_tensor_bytes < header.tensor_bytes - mtp + (1 << 20)
