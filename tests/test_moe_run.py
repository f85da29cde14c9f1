"""Expert offload carried through run, plan --verify and compare (issue 13).

run/bench load with the plan's split and its tensor overrides (--n-cpu-moe); on a loopback RPC device a greedy
run with the routed experts of some or all blocks on the host makes the same tokens as the run with every
layer on the host. plan --verify loads with the plan's overrides and says whether llama.cpp put every
overridden tensor where the plan did. compare plans a mixture of experts both ways, per quant.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from harness import read_header
from harness.cli import cli
from harness.compare import compare
from harness.gguf.roles import block_of, is_routed_expert
from harness.llama.engine import MIB_PRINT_TOLERANCE_BYTES
from harness.llama.session import Sampling, Session, tensor_overrides
from harness.plan import PlanRequest, make_plan
from harness.run import run_prompt
from tests.support.zoo import write_qwen3moe

N_LAYER = 3  # the zoo's qwen3moe
# Q8_0 and IQ4_NL blocks begin with their scale, an f16
_SCALED = (T.Q8_0, T.IQ4_NL)


def _give_weights(path: Path) -> Path:
    """The zoo's weights are zeros (floats) and random bytes (quants, their scales random f16s, inf and NaN
    among them): a model that says the same token forever, or NaN. Give every tensor finite random weights
    (norms 1, quant scales small) so that each token and each router's choice of experts depends on them."""
    reader = GGUFReader(path, "r+")
    rng = np.random.default_rng(13)
    for t in reader.tensors:
        data = t.data
        if t.tensor_type == T.F32:
            if t.name.endswith("norm.weight"):
                data[...] = 1.0
            else:
                data[...] = rng.normal(0.0, 1.0 / math.sqrt(t.shape[0]), data.shape).astype(np.float32)
        elif t.tensor_type in _SCALED:
            block = 34 if t.tensor_type == T.Q8_0 else 18
            blocks = data.reshape(-1, block)
            blocks[:, 2:] = rng.integers(0, 256, blocks[:, 2:].shape, dtype=np.uint8)
            scale = np.float16(3.0 / (127 * math.sqrt(t.shape[0])))
            blocks[:, :2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
        else:
            raise AssertionError(f"{t.name}: a type this helper does not know ({t.tensor_type!r})")
    reader.data.flush()
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _give_weights(write_qwen3moe(tmp_path_factory.mktemp("moe-run") / "qwen3moe.gguf"))


PROMPT_IDS = [1, 5, 9, 17, 30, 41]  # <s> and five of the zoo's "tok<i>"


@pytest.fixture
def fixed_prompt(monkeypatch):
    """The zoo's vocabulary has no byte tokens, so llama.cpp's SentencePiece tokenizer cannot take text in it
    (it crashed here): the prompt is given as token ids, the rest of run_prompt is the real path."""
    monkeypatch.setattr(Session, "tokenize", lambda self, text, add_special=True, max_tokens=None: list(PROMPT_IDS))


def _run(path: Path, **req):
    return run_prompt(
        PlanRequest(model=str(path), n_ctx=256, compute="formula", **req),
        "tok5 tok9 tok17 tok30 tok41",
        8,
        Sampling(),  # greedy
        n_threads=2,
    )


@pytest.mark.engine
@pytest.mark.rpc
def test_expert_offload_generates_what_the_host_does(model, server, fixed_prompt) -> None:
    host = _run(model, n_gpu_layers=0)
    assert host.plan.devices == () and host.report.n_layers_on_devices == 0
    assert host.generation.completion_tokens == 8 and len(set(host.generation.token_ids)) > 1  # not one token forever
    for k in (1, N_LAYER):
        r = _run(model, rpc=(f"{server.endpoint}=1GiB",), n_cpu_moe=k)
        # the plan: every layer on the device, the experts of blocks 0..k-1 on the host; llama.cpp did so
        assert (r.plan.n_gpu_layers, r.plan.n_cpu_moe, r.plan.strategy) == (N_LAYER + 1, k, "experts")
        assert r.report.n_layers_on_devices == N_LAYER + 1
        moved = {name for name, _ in r.report.overridden}
        assert moved and all(is_routed_expert(n) and block_of(n) < k for n in moved)
        assert {block_of(n) for n in moved} == set(range(k))
        [device] = r.plan.devices
        assert abs(r.report.actual_bytes(device.name) - (device.weights_bytes + device.kv_bytes)) <= (
            device.compute_bytes + 3 * MIB_PRINT_TOLERANCE_BYTES
        )
        assert r.generation.token_ids == host.generation.token_ids, k


@pytest.mark.engine
@pytest.mark.rpc
def test_verify_reports_the_overridden_tensors_placed(model, server) -> None:
    n_cpu_moe = 2
    req = PlanRequest(model=str(model), rpc=(f"{server.endpoint}=1GiB",), n_ctx=256, n_cpu_moe=n_cpu_moe, verify=True)
    r = make_plan(req)
    assert (r.plan.n_gpu_layers, r.plan.n_cpu_moe) == (N_LAYER + 1, n_cpu_moe)
    assert r.placement_mismatches == ()
    n = sum(1 for t in read_header(model).tensors if is_routed_expert(t.name) and block_of(t.name) < n_cpu_moe)
    assert n == 3 * n_cpu_moe  # gate, up, down
    assert f"llama.cpp placed all {n} overridden tensors where the plan said" in "\n".join(r.notes)
    [device] = r.plan.devices
    assert abs(r.actual[device.name].weights_bytes - device.weights_bytes) <= MIB_PRINT_TOLERANCE_BYTES
    assert abs(r.actual["host"].weights_bytes - r.plan.host.weights_bytes) <= MIB_PRINT_TOLERANCE_BYTES
    # through the CLI too
    out = CliRunner().invoke(
        cli, ["plan", str(model), "--rpc", f"{server.endpoint}=1GiB", "--ctx", "256", "--n-cpu-moe", "2", "--verify"]
    )
    assert out.exit_code == 0, out.output
    assert f"llama.cpp placed all {n} overridden tensors where the plan said" in out.output


def test_the_plans_overrides_are_llama_cpps_n_cpu_moe(model) -> None:
    req = PlanRequest(model=str(model), budget_bytes=1 << 30, n_ctx=256, n_cpu_moe=2, compute="formula")
    plan = make_plan(req).plan
    assert tensor_overrides(plan) == (
        ("blk\\.0\\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),
        ("blk\\.1\\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),
    )
    assert tensor_overrides(None) == ()


def test_compare_shows_both_strategies_of_a_mixture_of_experts() -> None:
    req = PlanRequest(model="qwen3-235b-a22b-q4_k_m", host_ram_bytes=256 << 30)
    c = compare(req, ["Q4_K_M", "IQ2_XXS"])
    for row in c.rows:
        assert row.other is not None and {row.strategy, row.other.strategy} == {"layers", "experts"}
        chosen_tg = row.predicted_tg_tokens_per_s
        assert chosen_tg >= row.other.predicted_tg_tokens_per_s or not row.other.devices_fit
    q4 = c.rows[0]
    # on one A100 40GB, 132 GiB of Q4_K_M: every layer on the GPU, most experts on the host, faster than layers
    assert (q4.strategy, q4.n_layers_total, q4.n_gpu_layers) == ("experts", 95, 95)
    assert 0 < q4.n_cpu_moe < 94 and q4.other.strategy == "layers" and q4.other.n_gpu_layers < 95
    js = c.to_json()["rows"][0]
    assert js["strategy"] == "experts" and js["n_cpu_moe"] == q4.n_cpu_moe
    assert js["other_strategy"]["strategy"] == "layers"
    out = CliRunner().invoke(
        cli, ["compare", "qwen3-235b-a22b-q4_k_m", "--quants", "Q4_K_M,IQ2_XXS", "--host-ram", "256GiB"]
    )
    assert out.exit_code == 0, out.output
    assert f"experts (n_cpu_moe {q4.n_cpu_moe})" in out.output
    assert f"layers: {q4.other.n_gpu_layers} layers, partial offload" in out.output


def test_compare_of_a_dense_model_has_no_strategy_columns() -> None:
    out = CliRunner().invoke(cli, ["compare", "8b-q4_k_m", "--quants", "Q4_K_M"])
    assert out.exit_code == 0, out.output
    assert "strategy" not in out.output
