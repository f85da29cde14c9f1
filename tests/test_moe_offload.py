"""Expert offload (issue 13): llama.cpp's --n-cpu-moe as tensor overrides, in placement and in the engine.

Without the engine: n_cpu_moe_patterns are the strings llama.cpp's common/common.h builds, they match what
llama.cpp's regex matches, and place() moves exactly the routed experts of the named blocks to the host.
With it: each MoE model of the zoo (qwen3moe with IQ4_NL experts, gpt-oss with F32 and MXFP4 experts and
expert biases, deepseek2 with a dense first layer and shared experts, llama4 with MoE on every other layer)
is loaded with every layer on one loopback RPC device and n_cpu_moe = 0..n_layer; llama.cpp's model buffers
on RPC0 and on the host (CPU_Mapped, CPU_REPACK) print as place() predicts them, the KV cache stays on the
device, and llama.cpp's own log puts every tensor where the plan does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import read_header
from harness.errors import EngineError, UsageError
from harness.gguf.roles import ROUTED_EXPERTS_PATTERN, block_of, is_routed_expert, matches_any, routed_expert_bytes
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES, load_and_report, parse_placement
from harness.offload.placement import ContextParams, n_cpu_moe_patterns, place
from tests.support.zoo import ZOO, planned_weights, printed_weights

MOE = ("qwen3moe", "gpt-oss", "gpt-oss-mxfp4", "deepseek2", "llama4")
CP = ContextParams(n_ctx=256)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("moe")
    return {name: ZOO[name](d / f"{name}.gguf") for name in MOE}


@pytest.fixture(scope="module")
def headers(zoo) -> dict:
    return {name: read_header(path) for name, path in zoo.items()}


# --- the rule, without the engine --------------------------------------------------------------------------------


def test_patterns_are_llama_cpps() -> None:
    # common/common.h: LLM_FFN_EXPS_REGEX = "\\.ffn_(up|down|gate|gate_up)_(ch|)exps", llm_ffn_block_regex =
    # "blk\\.%d" + it; as C string literals, i.e. with one backslash each at run time
    assert ROUTED_EXPERTS_PATTERN == "\\.ffn_(up|down|gate|gate_up)_(ch|)exps"
    assert n_cpu_moe_patterns(0) == ()
    assert n_cpu_moe_patterns(2) == (
        "blk\\.0\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
        "blk\\.1\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
    )
    with pytest.raises(UsageError, match="negative"):
        n_cpu_moe_patterns(-1)


def test_what_the_patterns_match() -> None:
    two = n_cpu_moe_patterns(2)
    moved = (
        "blk.1.ffn_up_exps.weight",
        "blk.1.ffn_gate_up_exps.weight",  # fused gate and up (gpt-oss converters, LFM2-MoE)
        "blk.0.ffn_down_chexps.weight",  # chunked experts
        "blk.1.ffn_down_exps.bias",  # gpt-oss's expert biases go with their experts
    )
    kept = (
        "blk.1.ffn_up_shexp.weight",  # shared experts stay with their layer
        "blk.1.ffn_gate_inp.weight",  # the router
        "blk.1.exp_probs_b.bias",
        "blk.1.ffn_up.weight",  # a dense FFN
        "blk.11.ffn_up_exps.weight",  # blk\.1\. is not a prefix of blk.11.
        "blk.2.ffn_up_exps.weight",
    )
    assert [n for n in moved + kept if matches_any(n, two)] == list(moved)
    assert all(is_routed_expert(n) for n in moved) and not any(is_routed_expert(n) for n in kept[:4])


def test_a_pattern_that_is_no_regex_is_refused(headers) -> None:
    with pytest.raises(UsageError, match="not a regular expression"):
        place(headers["qwen3moe"], 4, [1.0], CP, host_patterns=("blk\\.(0",))


@pytest.mark.parametrize("name", MOE)
def test_n_cpu_moe_moves_exactly_the_routed_experts(headers, name) -> None:
    """Each named block gives the host its routed experts and nothing else: the device loses those bytes
    exactly, the KV cache and every other tensor stay, and the host holds each moved tensor once."""
    h = headers[name]
    n = h.arch.n_layer
    experts = routed_expert_bytes(h)
    full = place(h, n + 1, [1.0], CP)
    assert full.overridden == ()
    for k in range(n + 2):  # one more than there are blocks: matches nothing more
        p = place(h, n + 1, [1.0], CP, host_patterns=n_cpu_moe_patterns(k))
        assert p.weights_bytes[0] == full.weights_bytes[0] - sum(experts[:k])
        assert p.host_tensor_bytes == full.host_tensor_bytes + sum(experts[:k])
        assert p.kv_bytes == full.kv_bytes and set(p.kv_bytes) == {0}
        for t in h.tensors:
            moved = is_routed_expert(t.name) and block_of(t.name) < k
            assert (p.tensor_device[t.name] == -1) == (moved or t.name == "token_embd.weight"), (k, t.name)
        assert set(p.overridden) == {t.name for t in h.tensors if p.tensor_device[t.name] == -1} - {"token_embd.weight"}


def test_overrides_on_a_host_layer_change_nothing(headers) -> None:
    h = headers["qwen3moe"]
    every = n_cpu_moe_patterns(h.arch.n_layer)
    for cpu_moe in ((ROUTED_EXPERTS_PATTERN,), every):
        p, q = place(h, 0, [1.0], CP), place(h, 0, [1.0], CP, host_patterns=cpu_moe)
        assert (p.weights_bytes, p.mapped_bytes, p.repack_bytes) == (q.weights_bytes, q.mapped_bytes, q.repack_bytes)
    # --cpu-moe is --n-cpu-moe with every block
    a = place(h, 4, [1.0], CP, host_patterns=(ROUTED_EXPERTS_PATTERN,))
    b = place(h, 4, [1.0], CP, host_patterns=every)
    assert a.weights_bytes == b.weights_bytes and a.overridden == b.overridden


def test_placement_lines_are_parsed() -> None:
    lines = [
        "load_tensors: layer   0 assigned to device CPU, is_swa = 0",
        "load_tensors: layer   1 assigned to device RPC0, is_swa = 1",
        "load_tensors: layer   2 assigned to device RPC0, is_swa = 0",
        "tensor blk.0.ffn_gate_exps.weight (0 MiB iq4_nl) buffer type overridden to CPU_REPACK",
        "tensor blk.0.ffn_down_exps.bias (0 MiB f32) buffer type overridden to CPU",
    ]
    layers, overridden = parse_placement(lines)
    assert layers == ("CPU", "RPC0", "RPC0")
    assert overridden == (("blk.0.ffn_gate_exps.weight", "CPU_REPACK"), ("blk.0.ffn_down_exps.bias", "CPU"))


# --- against llama.cpp -------------------------------------------------------------------------------------------


N_LAYER = {"qwen3moe": 3, "gpt-oss": 4, "gpt-oss-mxfp4": 4, "deepseek2": 3, "llama4": 4}
CASES = [(name, k) for name in MOE for k in range(N_LAYER[name] + 1)]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name,k", CASES, ids=[f"{n}-ncmoe{k}" for n, k in CASES])
def test_expert_offload_matches_llama_cpp(zoo, headers, server, name, k) -> None:
    h = headers[name]
    n = h.arch.n_layer
    assert n == N_LAYER[name]
    patterns = n_cpu_moe_patterns(k)
    report = load_and_report(
        zoo[name],
        n + 1,
        CP.n_ctx,
        [server.endpoint],
        decode=False,
        tensor_overrides=[(pattern, "CPU") for pattern in patterns],
        isolated=True,  # a model llama.cpp disliked would abort the test process
    )
    p = place(h, n + 1, [1.0], CP, host_patterns=patterns)
    assert report.n_layers_on_devices == n + 1
    # every model buffer, on RPC0 and on the host, to the printed 0.01 MiB
    assert planned_weights(p) == printed_weights(report.log_lines)
    # the KV cache stays on the device, whatever the experts do
    [rpc] = report.rpc_buffers
    assert abs(p.kv_bytes[0] - rpc.kv_bytes) <= len(report.kv_caches) * MIB_PRINT_TOLERANCE_BYTES
    assert not any(b.kv_bytes for b in report.host_buffers)
    # llama.cpp's log puts every block's tensor where the plan does, overridden ones in the buffer planned
    assert report.layer_devices == ("RPC0",) * (n + 1)
    assert {name for name, _ in report.overridden} == set(p.overridden)
    for t in h.tensors:
        if block_of(t.name) is None:
            continue
        if p.tensor_device[t.name] == 0:
            expected = "RPC0"
        else:
            expected = "CPU_REPACK" if t.name in p.repacked else "CPU"
        assert report.tensor_placed(t.name) == expected, t.name


@pytest.mark.engine
def test_the_engine_refuses_overrides_it_cannot_apply(zoo) -> None:
    with pytest.raises(EngineError, match="only CPU"):
        load_and_report(zoo["qwen3moe"], 0, 256, decode=False, tensor_overrides=[("exps", "CUDA0")])
    with pytest.raises(EngineError, match="not a regular expression"):
        load_and_report(zoo["qwen3moe"], 0, 256, decode=False, tensor_overrides=[("blk\\.(0", "CPU")])


# overrides beyond experts, each with a rule of its own: a tied output's copy of token_embd (the host output's
# repacked copy, also with the output layer offloaded), a per-layer tensor (one instance on the host, no copy
# on the device), longrope factors, any matrix by name
OTHER_OVERRIDES = [
    ("qwen3", 1, "token_embd"),
    ("qwen3", 5, "token_embd"),
    ("llama", 4, "rope_freqs"),
    ("llama", 2, "rope_freqs"),
    ("phi3", 3, "rope_factors"),
    ("qwen2", 5, "attn_q\\.weight"),
]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("name,ngl,pattern", OTHER_OVERRIDES, ids=[f"{n}-{g}-{p}" for n, g, p in OTHER_OVERRIDES])
def test_other_overrides_match_llama_cpp(tmp_path, server, name, ngl, pattern) -> None:
    path = ZOO[name](tmp_path / f"{name}.gguf")
    h = read_header(path)
    report = load_and_report(
        path, ngl, CP.n_ctx, [server.endpoint], decode=False, tensor_overrides=[(pattern, "CPU")], isolated=True
    )
    p = place(h, ngl, [1.0], CP, host_patterns=(pattern,))
    assert p.overridden and planned_weights(p) == printed_weights(report.log_lines)
    assert {name for name, _ in report.overridden} == set(p.overridden)
