"""The engine side: llama.cpp's RPC server on loopback as the offload device, real models, and
llama.cpp's own buffer report. Independent checks: the RPC server's process table, llama.cpp's own
KV summary line, and gguf's block sizes for quantized KV."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES, EngineError, EngineReport, load_and_report
from harness.llama.rpc import RpcError, RpcServer, free_port, probe

pytestmark = pytest.mark.engine

SMOLLM_LAYERS = 30
NGL = 10
N_CTX = 2048


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _log_callback_address() -> int | None:
    import llama_cpp

    cb = llama_cpp.llama_log_callback()
    ud = ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(cb), ctypes.byref(ud))
    return ctypes.cast(cb, ctypes.c_void_p).value


@pytest.fixture(scope="module")
def server():
    with RpcServer() as s:
        yield s
    assert not _alive(s.pid)


@pytest.fixture(scope="module")
def offloaded(server, smollm_path) -> EngineReport:
    return load_and_report(smollm_path, NGL, N_CTX, [server.endpoint], type_k="f16", type_v="f16")


@pytest.mark.rpc
@pytest.mark.real_model
def test_rpc_device_holds_model_kv_and_compute(offloaded, server) -> None:
    rpc = offloaded.buffer(f"RPC0[{server.endpoint}]")
    assert rpc is not None, [b.name for b in offloaded.buffers]
    assert rpc.model_bytes > 0 and rpc.kv_bytes > 0 and rpc.compute_bytes > 0
    assert f"offloaded {NGL}/{SMOLLM_LAYERS + 1} layers to GPU" in "\n".join(offloaded.log_lines)
    assert (offloaded.n_layers_offloaded, offloaded.n_layers_total) == (NGL, SMOLLM_LAYERS + 1)
    # devices are named RPC<n> in the order this process first added their servers
    assert [d.description for d in offloaded.offload_devices] == [server.endpoint]
    assert offloaded.offload_devices[0].name.startswith("RPC")
    assert offloaded.n_layers_on_devices == NGL
    assert offloaded.n_tokens_decoded > 0 and offloaded.decode_s is not None
    assert offloaded.n_ctx == N_CTX


@pytest.mark.rpc
@pytest.mark.real_model
def test_kv_on_the_device_is_its_share_of_llama_cpps_own_total(offloaded, server) -> None:
    """n_gpu_layers counts the output layer, which has no KV: the device holds NGL - 1 layers' KV."""
    (cache,) = offloaded.kv_caches
    assert (cache.cells, cache.layers, cache.type_k, cache.type_v) == (N_CTX, SMOLLM_LAYERS, "f16", "f16")
    per_layer_mib = cache.size_mib / cache.layers
    rpc = offloaded.buffer(f"RPC0[{server.endpoint}]")
    host_kv = sum(b.kv_bytes for b in offloaded.host_buffers)
    assert abs(rpc.kv_mib - per_layer_mib * (NGL - 1)) <= 0.01
    assert abs(host_kv / 2**20 - per_layer_mib * (SMOLLM_LAYERS - NGL + 1)) <= 0.01


@pytest.mark.rpc
@pytest.mark.real_model
def test_quantized_kv_with_flash_attention_shrinks_by_the_block_ratio(offloaded, server, smollm_path) -> None:
    q8 = load_and_report(
        smollm_path, NGL, N_CTX, [server.endpoint], type_k="q8_0", type_v="q8_0", flash_attn=True, decode=False
    )
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0]
    name = f"RPC0[{server.endpoint}]"
    f16_kv = offloaded.buffer(name).kv_bytes
    expected = f16_kv // 2 * type_size // block  # f16: 2 bytes per value
    assert abs(q8.buffer(name).kv_bytes - expected) <= 2 * MIB_PRINT_TOLERANCE_BYTES
    assert q8.flash_attn is True and q8.type_v == "q8_0"


@pytest.mark.rpc
@pytest.mark.real_model
def test_no_layers_means_no_model_on_the_device(server, smollm_path) -> None:
    report = load_and_report(smollm_path, 0, N_CTX, [server.endpoint], decode=False)
    rpc = report.buffer(f"RPC0[{server.endpoint}]")
    assert rpc is None or rpc.model_bytes == 0
    assert report.n_layers_offloaded == 0
    assert any(b.model_bytes > 0 for b in report.host_buffers)


@pytest.mark.real_model
def test_offloaded_line_without_a_device_is_not_an_offload(smollm_path) -> None:
    """llama.cpp prints "offloaded 10/31 layers to GPU" even with no device to offload to."""
    report = load_and_report(smollm_path, NGL, 512, decode=False)
    if report.offload_devices:
        pytest.skip(f"this host has offload devices: {report.offload_devices}")
    assert report.n_layers_offloaded == NGL
    assert report.n_layers_on_devices == 0 and not report.device_buffers


@pytest.mark.rpc
@pytest.mark.real_model
def test_no_alloc_reports_compute_buffers_without_allocating(offloaded, server, smollm_path) -> None:
    sim = load_and_report(smollm_path, NGL, N_CTX, [server.endpoint], no_alloc=True)
    name = f"RPC0[{server.endpoint}]"
    assert sim.n_tokens_decoded == 0
    assert sim.buffer(name).model_bytes == 0 and sim.buffer(name).kv_bytes == 0
    # the real run above resolved flash attention (AUTO) the same way, so the graphs agree
    assert sim.flash_attn == offloaded.flash_attn
    assert sim.buffer(name).compute_bytes == offloaded.buffer(name).compute_bytes > 0


@pytest.mark.real_model
def test_n_ctx_is_padded_to_256(smollm_path) -> None:
    report = load_and_report(smollm_path, 0, 1000, decode=False)
    assert report.n_ctx == 1024 and report.kv_caches[0].cells == 1024


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "failed to open GGUF file"),
        (b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 8, "gguf_init_from_reader"),
        (b"not a gguf file at all", "gguf_init_from_reader"),
    ],
)
def test_load_failure_carries_llama_cpps_reason(tmp_path, content, reason) -> None:
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    before = _log_callback_address()
    with pytest.raises(EngineError, match=reason) as info:
        load_and_report(path, 0, 512)
    assert str(path) in str(info.value)
    assert _log_callback_address() == before


@pytest.mark.real_model
def test_context_failure_carries_llama_cpps_reason(smollm_path) -> None:
    with pytest.raises(EngineError, match="quantized V cache requires flash_attn"):
        load_and_report(smollm_path, 0, 512, type_v="q8_0", flash_attn=False)


@pytest.mark.real_model
def test_unknown_kv_type_is_refused_before_loading(smollm_path) -> None:
    with pytest.raises(EngineError, match="q8_0"):
        load_and_report(smollm_path, 0, 512, type_k="q3_k")


@pytest.mark.rpc
@pytest.mark.real_model
def test_unreachable_rpc_server_is_an_error_not_an_abort(smollm_path) -> None:
    port = free_port()
    with pytest.raises(EngineError, match=f"127.0.0.1:{port}"):
        load_and_report(smollm_path, NGL, 512, [f"127.0.0.1:{port}"])


@pytest.mark.rpc
def test_rpc_server_is_gone_after_the_context_manager() -> None:
    with RpcServer() as s:
        pid, port = s.pid, s.port
        assert _alive(pid) and probe("127.0.0.1", port).major >= 1
        with pytest.raises(RpcError, match="in use"):
            RpcServer(port=port).start()
    assert not _alive(pid) and s.proc.returncode is not None
    with pytest.raises(RpcError, match="cannot connect"):
        probe("127.0.0.1", port, timeout_s=1)


@pytest.mark.rpc
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_its_server_on_a_signal(sig) -> None:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    parent = subprocess.Popen(
        [sys.executable, "-c", f"from harness.llama.rpc import serve; serve('127.0.0.1', {port})"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe("127.0.0.1", port, timeout_s=1)
                break
            except RpcError:
                assert parent.poll() is None and time.monotonic() < deadline, "serve() never came up"
                time.sleep(0.05)
        (child,) = _children(parent.pid)
        parent.send_signal(sig)
        assert parent.wait(timeout=10) == 0
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
