"""KV cache, recurrent state and weights on every memory type and weight layout, against llama.cpp itself.

A zoo of tiny synthetic models (tests/support/zoo.py), 17 architectures: standard GQA (qwen2, qwen3,
mistral3, command-r, starcoder2 with biases), MoE (qwen3moe, gpt-oss with F32 and MXFP4 experts), MLA
(deepseek2), per-layer rope tensors (llama's rope_freqs, phi3's longrope factors), sliding windows
(gpt-oss's default, gemma2's pattern key, cohere2's default, phi3's ignored key), llama4's chunked
attention, pure recurrent (Mamba-2), and hybrids with per-layer head-count arrays (Granite hybrid, LFM2),
with F32, F16, Q8_0, Q4_0, Q4_K, Q2_K, IQ4_NL and MXFP4 weights. Each is loaded by llama.cpp on a
loopback RPC device:

- the plan's KV/state bytes must print as llama.cpp prints every buffer (KV, SWA KV, RS) on the device
  and on the host, to the 0.01 MiB digit;
- the plan's weights must print as llama.cpp prints every model buffer (RPC0, CPU_Mapped, CPU_REPACK) at
  0, 1, half and all n_layer + 1 offloaded layers, and the cases that only an exact rule gets right
  (a per-layer tensor's copy, LFM2's output norm, a tied output's repacked copy, a row count no layout
  takes, a mapped range spanning offloaded tensors) must print differently without that rule.

One RPC server serves the whole module; every load runs in a child process. About 150 loads of models of
at most 25 MiB: ~2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import read_header
from harness.cli import cli
from harness.gguf import ggml_types
from harness.gguf.memory_layout import attention_window
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES, load_and_report
from harness.offload.memory import layer_memory_bytes
from harness.offload.placement import (
    NO_REPACK,
    REPACK_FEATURES,
    ContextParams,
    CpuFeatures,
    Placement,
    layer_devices,
    place,
    this_cpu,
)
from harness.offload.solver import Device, Host, evaluate
from tests.support.zoo import ZOO, mib_printed, planned_weights, printed_weights

_MEMORY_LINE = re.compile(r"^\w+: +(?P<name>\S+) +(?P<kind>KV|RS) buffer size = +(?P<mib>\d+\.\d+) MiB$")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("zoo")
    return {name: write(d / f"{name}.gguf") for name, write in ZOO.items()}


def printed_memory(log_lines) -> dict[tuple[str, str], str]:
    """(device, "kv" | "swa_kv" | "rs") -> the MiB llama.cpp printed for that buffer ("%8.2f" of
    bytes / 1024.0 / 1024.0), from its own buffer lines. The SWA cache of an iSWA model is the one created
    after its "creating     SWA KV cache" line."""
    out: dict[tuple[str, str], str] = {}
    swa = False
    for line in log_lines:
        line = line.rstrip()
        if "creating     SWA KV cache" in line:
            swa = True
        elif "creating non-SWA KV cache" in line:
            swa = False
        elif m := _MEMORY_LINE.match(line):
            device = "CPU" if m["name"].startswith("CPU") else "RPC"
            kind = "rs" if m["kind"] == "RS" else ("swa_kv" if swa else "kv")
            assert (device, kind) not in out, line  # one buffer per device and cache
            out[(device, kind)] = m["mib"]
    return out


def planned_memory(header, cp: ContextParams, ngl: int) -> dict[tuple[str, str], int]:
    devs = layer_devices(header.arch.n_layer, ngl, [1.0])
    out: dict[tuple[str, str], int] = {}
    for il, b in enumerate(layer_memory_bytes(header, cp)):
        device = "RPC" if devs[il] == 0 else "CPU"
        for kind, n in (("kv", b.kv_bytes), ("swa_kv", b.swa_kv_bytes), ("rs", b.rs_bytes)):
            if n:
                out[(device, kind)] = out.get((device, kind), 0) + n
    return out


CONTEXTS = [
    ContextParams(n_ctx=4096),
    ContextParams(n_ctx=4096, type_k="q8_0", type_v="q8_0"),
    ContextParams(n_ctx=32768),
    ContextParams(n_ctx=32768, type_k="q8_0", type_v="q8_0"),
]
CASES = [(name, cp, None) for name in ZOO for cp in CONTEXTS] + [
    # half the layers on the host, transposed V without flash attention, and four sequences
    (name, ContextParams(n_ctx=4096, flash_attn=False, n_seq_max=4), "half")
    for name in ZOO
]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize(
    "name,cp,offload",
    CASES,
    ids=[f"{n}-{cp.n_ctx}-{cp.type_k}" + (f"-{o}-fa0-seq4" if o else "") for n, cp, o in CASES],
)
def test_memory_matches_llama_cpp(zoo, server, name, cp, offload) -> None:
    path = zoo[name]
    header = read_header(path)
    n_layer = header.arch.n_layer
    ngl = n_layer // 2 + 1 if offload else n_layer + 1
    report = load_and_report(
        path,
        ngl,
        cp.n_ctx,
        [server.endpoint],
        type_k=cp.type_k,
        type_v=cp.type_v,
        flash_attn=cp.flash_attn,
        n_ubatch=cp.n_ubatch,
        n_seq_max=cp.n_seq_max,
        swa_full=cp.swa_full,
        decode=False,
        isolated=True,  # a model llama.cpp disliked would abort the test process
    )
    assert report.n_layers_on_devices == ngl

    planned, printed = planned_memory(header, cp, ngl), printed_memory(report.log_lines)
    # every buffer, printed as llama.cpp prints it: the planned bytes must give the same digits
    assert {key: mib_printed(n) for key, n in planned.items()} == printed
    assert planned_weights(place(header, ngl, [1.0], cp)) == printed_weights(report.log_lines)

    # the plan itself carries those bytes
    plan = evaluate(header, [Device("rpc", 1 << 40)], Host(0, 1e9, 1e9), cp, ngl, [1.0])
    [d] = plan.devices
    [rpc] = report.rpc_buffers
    n_rpc = sum(1 for device, _ in printed if device == "RPC")
    n_host = sum(1 for device, _ in printed if device == "CPU")
    assert abs(d.kv_bytes - rpc.kv_bytes) <= max(n_rpc, 1) * MIB_PRINT_TOLERANCE_BYTES
    assert (
        abs(plan.host.kv_bytes - sum(b.kv_bytes for b in report.host_buffers))
        <= max(n_host, 1) * MIB_PRINT_TOLERANCE_BYTES
    )
    assert abs(d.weights_bytes - rpc.model_bytes) <= MIB_PRINT_TOLERANCE_BYTES


def _load(path: Path, ngl: int, endpoint: str):
    return load_and_report(path, ngl, 256, [endpoint], decode=False, isolated=True)


# the KV test above loads each model at half and all layers; these add none, the output layer alone, and every
# block but block 0 (so a per-layer tensor's copy is made) in a small context
WEIGHT_OFFLOADS = ("none", "output", "blocks")
WEIGHT_CASES = [(name, which) for name in ZOO for which in WEIGHT_OFFLOADS]


def _ngl(n_layer: int, which: str) -> int:
    return {"none": 0, "output": 1, "blocks": n_layer}[which]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name,which", WEIGHT_CASES, ids=[f"{n}-{w}" for n, w in WEIGHT_CASES])
def test_weights_match_llama_cpp(zoo, server, name, which) -> None:
    """Every model buffer, on the device and on the host (mapped and repacked), to the printed 0.01 MiB;
    and the plan's DevicePlan/HostPlan weights are placement's."""
    header = read_header(zoo[name])
    ngl = _ngl(header.arch.n_layer, which)
    cp = ContextParams(n_ctx=256)
    report = _load(zoo[name], ngl, server.endpoint)
    assert report.n_layers_on_devices == ngl
    p = place(header, ngl, [1.0], cp)
    assert planned_weights(p) == printed_weights(report.log_lines)
    plan = evaluate(header, [Device("rpc", 1 << 40)], Host(0, 1e9, 1e9), cp, ngl, [1.0])
    assert (plan.devices[0].weights_bytes, plan.host.weights_bytes) == (p.weights_bytes.get(0, 0), p.weights_bytes[-1])


def _pad(header, name: str) -> int:
    return ggml_types.pad(header.tensor(name).n_bytes, 32)


def _without_rule(header, p: Placement, rule: str) -> tuple[str, int]:
    """(buffer, bytes) that placement would predict for that buffer without ``rule``."""
    if rule == "per-layer copy":  # llama: block 1 on RPC0 needs its own rope_freqs
        return "RPC", p.weights_bytes[0] - _pad(header, "rope_freqs.weight")
    if rule == "lfm2 output norm":  # token_embd_norm is LFM2's output norm, offloaded with the output layer
        return "RPC", p.weights_bytes[0] - _pad(header, "token_embd_norm.weight")
    if rule == "tied output repacked":  # the host's output layer multiplies by a repacked copy of token_embd
        return "CPU_REPACK", p.repack_bytes - _pad(header, "token_embd.weight")
    if rule == "rows":  # 228 rows: no repacked layout takes them
        return "CPU_REPACK", p.repack_bytes + sum(_pad(header, f"blk.{i}.ffn_up.weight") for i in range(3))
    if rule == "mapped range":  # CPU_Mapped spans output.weight, offloaded, between token_embd and blk.0
        return "CPU_Mapped", p.host_tensor_bytes - p.repack_bytes
    if rule == "mxfp4 repacked":  # without the repacked experts every host tensor would be mapped
        return "CPU_Mapped", place(header, p.n_gpu_layers, [1.0], ContextParams(n_ctx=256), cpu=NO_REPACK).mapped_bytes
    raise AssertionError(rule)


RULES = [
    ("llama", "blocks", "per-layer copy"),
    ("lfm2", "output", "lfm2 output norm"),
    ("qwen3", "none", "tied output repacked"),
    ("starcoder2", "none", "rows"),
    ("qwen2", "output", "mapped range"),
    ("gpt-oss-mxfp4", "none", "mxfp4 repacked"),
]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.skipif("AVX2" not in this_cpu().features, reason="the repacked layouts chosen here are AVX2's")
@pytest.mark.parametrize("name,which,rule", RULES, ids=[r for _, _, r in RULES])
def test_each_weight_rule_shows_in_the_printedmib_printed(zoo, server, name, which, rule) -> None:
    """The rules that move only a few KiB are proven, not assumed: without each, the prediction would
    print otherwise than llama.cpp does (with it, test_weights_match_llama_cpp gets every digit)."""
    header = read_header(zoo[name])
    ngl = _ngl(header.arch.n_layer, which)
    p = place(header, ngl, [1.0], ContextParams(n_ctx=256))
    printed = printed_weights(_load(zoo[name], ngl, server.endpoint).log_lines)
    assert printed == planned_weights(p)
    buffer, without = _without_rule(header, p, rule)
    assert mib_printed(without) != printed[buffer]


@pytest.mark.engine
def test_cpu_features_are_the_engines() -> None:
    """this_cpu() detects what the installed engine's ggml build reports for the features repacking asks."""
    import llama_cpp

    engine = CpuFeatures.from_system_info(llama_cpp.llama_print_system_info().decode())
    assert engine.features & REPACK_FEATURES == this_cpu().features & REPACK_FEATURES


# --- without the engine ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def headers(zoo):
    return {name: read_header(path) for name, path in zoo.items()}


def test_architecture_facts(headers) -> None:
    ds = headers["deepseek2"].arch
    assert ds.is_mla and (ds.kv_lora_rank, ds.key_length, ds.key_length_mla, ds.value_length_mla) == (64, 96, 64, 32)
    assert ds.n_expert == 4 and ds.n_expert_used == 2 and ds.n_ff_expert == (64,) * 3 and ds.n_expert_shared == 1
    m = headers["mamba2"].arch
    assert (m.ssm_conv_kernel, m.ssm_inner_size, m.ssm_state_size, m.ssm_group_count) == (4, 512, 64, 2)
    lfm2 = headers["lfm2"].arch
    assert lfm2.shortconv_l_cache == 3 and lfm2.n_head_kv == (0, 0, 2, 0, 2)


def test_windows_are_llama_cpp_defaults(headers) -> None:
    oss = attention_window(headers["gpt-oss"])
    assert (oss.kind, oss.size, oss.layers, oss.source) == ("standard", 128, (True, False) * 2, "default")
    l4 = attention_window(headers["llama4"])  # no window key at all: chunks of 8192, 3 of 4 layers
    assert (l4.kind, l4.size, l4.layers, l4.period) == ("chunked", 8192, (True, True, True, False), 4)
    c2 = attention_window(headers["cohere2"])
    assert (c2.size, c2.layers) == (256, (True, True, True, False) * 2)
    g2 = attention_window(headers["gemma2"])  # the file's per-layer pattern, not gemma2's every other layer
    assert (g2.kind, g2.size, g2.layers, g2.source) == ("standard", 256, (True, True, False, True), "file")
    # phi3's sliding_window key is ignored by this llama.cpp ("Phi SWA is currently disabled")
    assert headers["phi3"].arch.sliding_window == 128 and attention_window(headers["phi3"]).kind == "none"
    for name in ("qwen2", "qwen3", "qwen3moe", "llama", "deepseek2", "mamba2", "granitehybrid", "lfm2"):
        assert attention_window(headers[name]).kind == "none"


def test_memory_by_layer(headers) -> None:
    cp = ContextParams(n_ctx=4096)
    # MLA: one latent row of kv_lora_rank + rope = 96 f16 per cell, no V
    assert [b.kv_bytes for b in layer_memory_bytes(headers["deepseek2"], cp)] == [96 * 2 * 4096] * 3
    # Mamba-2: conv (4 - 1) x (512 + 2 x 2 x 64) and state 64 x 512, F32 whatever the KV type
    q8 = ContextParams(n_ctx=4096, type_k="q8_0", type_v="q8_0")
    assert {b.rs_bytes for b in layer_memory_bytes(headers["mamba2"], q8)} == {(3 * 768 + 64 * 512) * 4}
    # a hybrid: state on the recurrent layers, KV on the attention ones only
    granite = layer_memory_bytes(headers["granitehybrid"], cp)
    assert [bool(b.rs_bytes) for b in granite] == [True, True, False, True, True, False]
    assert [bool(b.kv_bytes) for b in granite] == [False, False, True, False, False, True]
    assert [b.rs_bytes for b in layer_memory_bytes(headers["lfm2"], cp)] == [512 * 2 * 4, 512 * 2 * 4, 0, 512 * 8, 0]


def test_inspect_shows_memory_facts(zoo) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(zoo["deepseek2"]), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["key_length_mla"] == 64 and out["kv_lora_rank"] == 64 and out["n_expert"] == 4
    assert out["n_ff_expert"] == 64 and out["kv_cache_layers"] == [0, 1, 2] and out["recurrent_layers"] == []
    result = CliRunner().invoke(cli, ["inspect", str(zoo["llama4"])])
    assert result.exit_code == 0, result.output
    assert "chunked attention 8192 on 3 of 4 layers (period 4, llama.cpp's default)" in result.stdout
    result = CliRunner().invoke(cli, ["inspect", str(zoo["mamba2"]), "--json"])
    out = json.loads(result.stdout)
    assert out["ssm"] == {"conv_kernel": 4, "inner_size": 512, "state_size": 64, "time_step_rank": 8, "group_count": 2}
    assert out["recurrent_layers"] == [0, 1, 2] and out["kv_cache_layers"] == [] and out["attention_window"] is None
