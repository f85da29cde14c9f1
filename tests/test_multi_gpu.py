"""Several devices the way llama.cpp spreads them: its default split (layers in proportion to each device's
memory), the packed split when it offloads more, pipeline parallelism's copies, and CUDA's buffer sizes."""

from __future__ import annotations

import pytest

from harness import read_header
from harness.gguf.ggml_types import CPU_BUFFER, CUDA_BUFFER, type_by_name
from harness.llama.engine import load_and_report
from harness.llama.rpc import RpcServer
from harness.models.resolve import resolve_model
from harness.offload import cuda
from harness.offload.buffers import pipeline_copies
from harness.offload.placement import ContextParams, layer_devices
from harness.offload.solver import PACKED, PROPORTIONAL, Device, Host, solve
from harness.plan import PlanRequest, make_plan

HOST = Host(1 << 40, 50e9, 1e12)


def test_cuda_buffer_pads_quantized_rows_as_ggml_cuda_does() -> None:
    """ggml_backend_cuda_buffer_type_get_alloc_size: + ggml_row_size(type, 512 - ne0 % 512) for a quantized
    tensor, then the buffer's 128-byte alignment; F16/F32 and rows that are multiples of 512 unpadded."""
    q4_k, q8_0, f16 = (type_by_name(t) for t in ("Q4_K", "Q8_0", "F16"))
    # gemma3-270m's 640-wide rows: 384 more elements of Q4_K = 144 * 384 / 256 = 216 bytes
    n = 640 * 1024 // 256 * 144
    assert CUDA_BUFFER.alloc_bytes(n, q4_k, 640) == (n + 216 + 127) // 128 * 128
    assert CPU_BUFFER.alloc_bytes(n, q4_k, 640) == (n + 31) // 32 * 32
    # 4096-wide rows: nothing to pad
    n = 4096 * 14336 // 32 * 34
    assert CUDA_BUFFER.alloc_bytes(n, q8_0, 4096) == n
    assert CUDA_BUFFER.alloc_bytes(640 * 2 * 3, f16, 640) == 3840  # 3840 = 30 x 128
    assert CUDA_BUFFER.alloc_bytes(100, f16, 50) == 128


def test_gpu_profiles_size_tensors_as_cuda(gemma_path) -> None:
    """A GPU profile's device holds every quantized 640-wide matrix with CUDA's padding: more than an RPC
    device of the same budget, by exactly the padding."""
    h = read_header(gemma_path)
    cp = ContextParams(n_ctx=512)
    n = h.arch.n_layer + 1
    rpc = Device("rpc", 1 << 34)
    cuda = Device("gpu", 1 << 34, buffer_type=CUDA_BUFFER, lends_host_buffer=True)
    on_rpc = solve(h, [rpc], HOST, cp, n).devices[0].weights_bytes
    on_cuda = solve(h, [cuda], HOST, cp, n).devices[0].weights_bytes
    padding = 0
    for t in h.tensors:
        if t.name.startswith("blk.") or t.name == "token_embd.weight":  # (tied: the output's copy)
            padding += CUDA_BUFFER.alloc_bytes(t.n_bytes, t.ggml_type, t.shape[0]) - CPU_BUFFER.alloc_bytes(
                t.n_bytes, t.ggml_type, t.shape[0]
            )
    assert on_cuda - on_rpc == padding > 0


def test_proportional_split_follows_the_budgets() -> None:
    """llama.cpp's layer-to-device rule (float32 cumulative fractions, upper_bound) with weights = budgets."""
    assert layer_devices(80, 81, [1.0, 1.0, 1.0]).count(0) == 27  # a published log: 27/27/26 + output
    assert [layer_devices(80, 81, [1.0, 1.0, 1.0]).count(d) for d in range(3)] == [27, 27, 27]


@pytest.mark.rpc
@pytest.mark.real_model
def test_default_split_is_llama_cpp_default(gemma_path) -> None:
    """Without a tensor_split llama.cpp spreads layers by each device's free memory: two loopback servers lend
    the same host memory, so it is the plan's proportional split of two equal budgets, layer for layer (odd
    layer counts, so no layer sits on a boundary that a few bytes of free memory could move)."""
    h = read_header(gemma_path)
    n_total = h.arch.n_layer + 1
    cp = ContextParams(n_ctx=512)
    with RpcServer() as a, RpcServer() as b:
        for ngl in (n_total, 9):
            plan = solve(h, [Device("a", 1 << 34), Device("b", 1 << 34)], HOST, cp, ngl)
            assert plan.split_mode == PROPORTIONAL
            report = load_and_report(gemma_path, ngl, 512, [a.endpoint, b.endpoint], decode=False, no_alloc=True)
            planned = layer_devices(h.arch.n_layer, ngl, list(plan.tensor_split))
            # llama.cpp numbers RPC devices across the process (RPC0, RPC1, … as servers are added): in order
            names = sorted({d for d in report.layer_devices if d != "CPU"}, key=lambda d: int(d[3:]))
            index = {name: i for i, name in enumerate(names)} | {"CPU": -1}
            assert planned == [index[d] for d in report.layer_devices], (ngl, report.layer_devices)


def test_packed_split_offered_when_it_offloads_more() -> None:
    """A small second device: the proportional split overfills it long before the first is full; packing
    the first device offloads more, and the plan says so (and takes it with --split packed)."""
    req = PlanRequest("70b-q4_k_m", budget_bytes=24 << 30, rpc=("127.0.0.1:1=6GiB",), n_ctx=8192, compute="formula")
    proportional = make_plan(req)
    packed = make_plan(PlanRequest(**{**req.__dict__, "split_mode": PACKED}))
    assert proportional.plan.split_mode == PROPORTIONAL and packed.plan.split_mode == PACKED
    assert packed.plan.n_gpu_layers > proportional.plan.n_gpu_layers
    assert proportional.packed is not None and proportional.packed.n_gpu_layers == packed.plan.n_gpu_layers
    assert proportional.suggestions[0].startswith("--split packed: ") and (
        f"n_gpu_layers {packed.plan.n_gpu_layers}" in proportional.suggestions[0]
    )
    assert all(d.fits for d in packed.plan.devices)


def test_pipeline_copies_only_where_llama_cpp_makes_them() -> None:
    assert pipeline_copies(2, 81, 81, False) == 4
    assert pipeline_copies(1, 81, 81, False) == 1  # one device
    assert pipeline_copies(2, 80, 81, False) == 1  # a layer on the host
    assert pipeline_copies(2, 81, 81, True) == 1  # tensor overrides (--n-cpu-moe)


@pytest.mark.rpc
@pytest.mark.real_model
def test_pipeline_parallelism_as_llama_cpp_reports_it(gemma_path) -> None:
    """llama.cpp enables pipeline parallelism (RPC devices have async compute and events in this build) exactly
    when the plan says n_copies 4, and its dry-run compute buffers then grow: the copies are in its figures."""
    h = read_header(gemma_path)
    n_total = h.arch.n_layer + 1
    cp = ContextParams(n_ctx=512)
    devices = [Device("a", 1 << 34), Device("b", 1 << 34)]
    with RpcServer() as a, RpcServer() as b:
        compute = {}
        for ngl in (n_total, n_total - 1):
            plan = solve(h, devices, HOST, cp, ngl)
            report = load_and_report(
                gemma_path, ngl, 512, [a.endpoint, b.endpoint], decode=False, no_alloc=True,
                tensor_split=plan.tensor_split,
            )  # fmt: skip
            enabled = any("pipeline parallelism enabled" in line for line in report.log_lines)
            assert enabled == (plan.n_copies == 4), (ngl, plan.n_copies)
            compute[ngl] = sum(b.compute_bytes for b in report.rpc_buffers if a.endpoint in b.name)
        assert compute[n_total] > compute[n_total - 1]


def test_cuda_extras_from_ggml_cuda_source() -> None:
    """Llama 3.1 8B (n_embd_k_gqa 1024, n_ff 14336): flash attention over a q8_0 cache at 32k adds f16 copies of one
    layer's K and V, 32768 x 1024 x 2 bytes each; MMQ's q8_1 activations for ffn_down at n_ubatch 512 are
    512 x 14336 x 144/128 bytes, in 2 MiB granules; an f16 cache or no flash attention adds nothing."""
    h = resolve_model("8b-q4_k_m").header
    q8 = ContextParams(n_ctx=32768, type_k="q8_0", type_v="q8_0", flash_attn=True)
    assert cuda.fattn_f16_bytes(h, q8) == 2 * 32768 * 1024 * 2
    assert cuda.fattn_f16_bytes(h, ContextParams(n_ctx=32768, flash_attn=True)) == 0
    assert cuda.fattn_f16_bytes(h, ContextParams(n_ctx=32768, flash_attn=False)) == 0
    want = 512 * 14336 * 144 // 128
    assert cuda.pool_bytes(h, q8) == (want + (2 << 20) - 1) // (2 << 20) * (2 << 20)
    plan = make_plan(PlanRequest("8b-q4_k_m", n_ctx=32768, kv_type="q8_0", compute="formula"))
    [d] = plan.plan.devices
    assert d.reserve_bytes == 512 * 2**20 + cuda.pool_bytes(h, q8)
    assert any(n.startswith("CUDA: reserve = the CUDA context 512.00 MiB") for n in plan.notes)


def test_partial_offload_on_cuda_says_the_host_compute_is_an_upper_bound() -> None:
    partial = make_plan(PlanRequest("70b-q4_k_m", n_ctx=4096, compute="formula"))
    assert 0 < partial.plan.n_gpu_layers < partial.plan.n_layers_total
    assert any("op offload" in n for n in partial.notes)
    full = make_plan(PlanRequest("8b-q4_k_m", n_ctx=4096, compute="formula"))
    assert full.plan.fits_fully and not any("op offload" in n for n in full.notes)
