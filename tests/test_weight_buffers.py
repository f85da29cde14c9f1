"""Which buffer llama.cpp loads each weight into: the tensor roles (harness.gguf.roles), the CPU's repacked
layouts per CPU (harness.offload.placement.is_repacked) and the bytes place() gives each device and host
buffer. llama.cpp's own buffer report holds all of it to the printed digit on the zoo in tests/test_zoo.py
and on the two real models here; without the engine, the rules are pinned on CPUs this machine is not, and
the per-device invariants the solver relies on are checked on every zoo model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import read_header
from harness.gguf import ggml_types
from harness.gguf.format import GGMLQuantizationType as T
from harness.gguf.reader import TensorInfo
from harness.gguf.roles import matmul_op, offload_layer, per_layer_bytes
from harness.llama.engine import load_and_report
from harness.llama.rpc import RpcServer
from harness.offload.placement import NO_REPACK, ContextParams, CpuFeatures, is_repacked, offloaded_layer_bytes, place
from tests.support.zoo import ZOO, planned_weights, printed_weights

AVX2 = CpuFeatures(frozenset({"AVX2", "REPACK"}))
AVX512 = CpuFeatures(frozenset({"AVX2", "AVX512", "REPACK"}))
ARM_DOTPROD = CpuFeatures(frozenset({"NEON", "DOTPROD", "REPACK"}))
ARM_I8MM = CpuFeatures(frozenset({"NEON", "DOTPROD", "MATMUL_INT8", "REPACK"}))
CP = ContextParams(n_ctx=256)


def _t(name: str, shape: tuple[int, ...] = (256, 64), ggml_type: int = int(T.F32)) -> TensorInfo:
    return TensorInfo(name, shape, ggml_type, 0, 0)


def test_layers_by_name() -> None:
    n = 4
    layer = {name: offload_layer(_t(name), n) for name in ("token_embd.weight", "position_embd.weight")}
    assert layer == {"token_embd.weight": None, "position_embd.weight": None}
    for name in ("output.weight", "output_norm.weight", "output_norm.bias", "cls.output.weight", "dense_2.weight"):
        assert offload_layer(_t(name), n) == n, name
    for name in ("blk.2.ffn_up_exps.weight", "blk.2.ffn_gate_shexp.weight", "blk.2.exp_probs_b.bias"):
        assert offload_layer(_t(name), n) == 2, name
    assert offload_layer(_t("blk.2.ffn_gate_inp.weight"), n) == 2
    assert offload_layer(_t("enc.blk.3.attn_q.weight"), n) == 3
    assert offload_layer(_t("rope_freqs.weight"), n) == 0 and offload_layer(_t("rope_factors_long.weight"), n) == 0
    # token_embd_norm: BERT's first-layer norm, but LFM2's output norm
    assert offload_layer(_t("token_embd_norm.weight"), n, "bert") == 0
    assert offload_layer(_t("token_embd_norm.weight"), n, "lfm2") == n


def test_matrix_products_by_name() -> None:
    ops = {
        "token_embd.weight": None,  # GET_ROWS
        "output.weight": "mul_mat",
        "blk.0.attn_q.weight": "mul_mat",
        "blk.0.attn_q.bias": None,
        "blk.0.attn_norm.weight": None,
        "blk.0.ssm_conv1d.weight": None,
        "blk.0.shortconv.conv.weight": None,
        "blk.0.ffn_down_exps.weight": "mul_mat_id",
        "blk.0.ffn_gate_shexp.weight": "mul_mat",
        "blk.0.ffn_gate_inp.weight": "mul_mat",
        "rope_freqs.weight": None,
    }
    assert {name: matmul_op(_t(name)) for name in ops} == ops


@pytest.mark.parametrize(
    "ggml_type,rows,repacked_on",
    [
        (T.Q4_0, 64, {"avx2", "avx512", "arm_dotprod", "arm_i8mm"}),
        (T.Q4_0, 36, {"arm_dotprod", "arm_i8mm"}),  # 36 rows: NEON's 4-row layouts only
        (T.Q4_0, 30, set()),
        (T.Q4_K, 64, {"avx2", "avx512", "arm_dotprod", "arm_i8mm"}),
        (T.Q4_K, 36, set()),  # every Q4_K layout takes 8 rows
        (T.Q2_K, 64, {"avx512"}),
        (T.Q5_K, 64, {"arm_dotprod", "arm_i8mm"}),
        (T.Q6_K, 64, {"arm_dotprod", "arm_i8mm"}),
        (T.Q8_0, 64, {"arm_dotprod", "arm_i8mm"}),
        (T.IQ4_NL, 64, {"avx2", "avx512", "arm_dotprod", "arm_i8mm"}),
        (T.MXFP4, 36, {"arm_dotprod", "arm_i8mm"}),
        (T.Q4_1, 64, set()),
        (T.Q5_0, 64, set()),
        (T.F16, 64, set()),
    ],
)
def test_repacked_layouts_per_cpu(ggml_type, rows, repacked_on) -> None:
    cpus = {"avx2": AVX2, "avx512": AVX512, "arm_dotprod": ARM_DOTPROD, "arm_i8mm": ARM_I8MM, "none": NO_REPACK}
    weight = _t("blk.0.attn_q.weight", (256, rows), int(ggml_type))
    assert {name for name, cpu in cpus.items() if is_repacked(weight, cpu)} == repacked_on


def test_only_matrix_weights_are_repacked() -> None:
    q4 = int(T.Q4_0)
    assert not is_repacked(_t("token_embd.weight", (256, 64), q4), AVX2)  # a row lookup
    assert is_repacked(_t("token_embd.weight", (256, 64), q4), AVX2, op="mul_mat")  # a tied output's use
    assert is_repacked(_t("blk.0.ffn_up_exps.weight", (256, 64, 8), q4), AVX2)
    assert not is_repacked(_t("blk.0.ffn_up_exps.weight", (256, 64, 1), q4), AVX2)  # MUL_MAT_ID wants 3 dims
    assert not is_repacked(_t("blk.0.attn_k_b.weight", (256, 64, 8), q4), AVX2)  # MUL_MAT wants 2
    assert not is_repacked(_t("blk.0.attn_q.weight", (256, 64), q4), CpuFeatures(frozenset({"AVX2"})))  # no REPACK


def test_features_from_llama_cpps_system_info() -> None:
    x86 = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 | "
    assert {"AVX2", "REPACK"} <= CpuFeatures.from_system_info(x86).features
    arm = "Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | DOTPROD = 1 | SVE_CNT = 16 | REPACK = 1 | "
    assert CpuFeatures.from_system_info(arm).features >= {"NEON", "DOTPROD", "SVE_CNT=16", "REPACK"}
    assert "EMBED_LIBRARY" not in CpuFeatures.from_system_info(arm).features


@pytest.fixture(scope="module")
def headers(tmp_path_factory) -> dict:
    d: Path = tmp_path_factory.mktemp("zoo")
    return {name: read_header(write(d / f"{name}.gguf")) for name, write in ZOO.items()}


@pytest.mark.parametrize("name", list(ZOO))
def test_each_device_holds_its_layers_and_one_instance_of_the_per_layer_tensors(headers, name) -> None:
    """On every split: a device holds what offloaded_layer_bytes counts for its layers, plus per_layer_bytes
    once when it holds any block; nothing else moves but the tied output's copy."""
    h = headers[name]
    costs = offloaded_layer_bytes(h, CP)
    n = h.arch.n_layer
    for ngl in range(n + 2):
        for split in ([1.0], [1.0, 1.0], [3.0, 2.0, 2.0]):
            p = place(h, ngl, split, CP, cpu=AVX2)
            for d in range(len(split)):
                here = [il for il, dev in enumerate(p.layer_device) if dev == d]
                blocks = [il for il in here if il < n]
                expected = sum(costs[il] for il in here) + (per_layer_bytes(h) if blocks else 0)
                assert p.weights_bytes.get(d, 0) + p.kv_bytes.get(d, 0) == expected, (ngl, split, d)


def test_the_host_buffers(headers) -> None:
    qwen3 = headers["qwen3"]  # tied Q4_0 embeddings and matrices
    p = place(qwen3, 0, [1.0], CP, cpu=AVX2)
    embd = ggml_types.pad(qwen3.tensor("token_embd.weight").n_bytes, 32)
    matrices = [t for t in qwen3.tensors if t.ggml_type == T.Q4_0 and t.name != "token_embd.weight"]
    # every Q4_0 matrix repacked, and the output's copy of token_embd beside the mapped one
    assert p.repack_bytes == sum(ggml_types.pad(t.n_bytes, 32) for t in matrices) + embd
    assert p.weights_bytes[-1] == p.mapped_bytes + p.repack_bytes and p.duplicated_bytes == embd
    assert set(p.repacked) == {t.name for t in matrices} | {"token_embd.weight"}
    # without repacked layouts (a CUDA device's host buffer, or a CPU without them) all of it is mapped
    flat = place(qwen3, 0, [1.0], CP, cpu=NO_REPACK)
    assert flat.repack_bytes == 0 and flat.weights_bytes[-1] == flat.mapped_bytes == flat.host_tensor_bytes
    # without mmap the host's tensors are allocated, each padded, and nothing spans offloaded bytes
    q2 = headers["qwen2"]
    loaded = place(q2, 1, [1.0], CP, cpu=AVX2, mmap=False)
    mapped = place(q2, 1, [1.0], CP, cpu=AVX2)
    assert loaded.mapped_bytes == 0 and loaded.weights_bytes[-1] == loaded.host_tensor_bytes
    out = ggml_types.pad(q2.tensor("output.weight").n_bytes, 32) + ggml_types.pad(
        q2.tensor("output_norm.weight").n_bytes, 32
    )
    assert mapped.mapped_bytes == loaded.host_tensor_bytes + out  # the range spans the offloaded output layer


@pytest.mark.engine
@pytest.mark.rpc
def test_real_models_buffers_match_llama_cpp(gemma_path, smollm_path) -> None:
    """Gemma 3 270M Q4_K_M (this CPU repacks its Q4_K matrices where the host holds them; its tied 170 MiB
    embedding is copied to the output's device) and SmolLM2 Q4_1 (nothing repacked): every model buffer as
    printed, with none, all blocks but block 0, and all layers offloaded. Measured here: gemma3 at 0 layers
    CPU_Mapped 235.16 + CPU_REPACK 12.66 MiB; at 18 of 19, CPU_Mapped 173.81 (token_embd and block 0) +
    CPU_REPACK 0.35."""
    with RpcServer() as server:
        for path in (gemma_path, smollm_path):
            h = read_header(path)
            for ngl in (0, h.arch.n_layer, h.arch.n_layer + 1):
                report = load_and_report(path, ngl, 256, [server.endpoint], decode=False, isolated=True)
                assert planned_weights(place(h, ngl, [1.0], CP)) == printed_weights(report.log_lines), (path, ngl)
