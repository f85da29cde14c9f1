"""The published CUDA load logs (../shared/data/cuda-logs-published.json), replayed by the planner
(tests/support/cuda_logs.py; `make cuda-logs` prints the table).

Weights and KV are the header's and llama.cpp's rules: every such figure a log printed is matched to its 0.01 MiB,
or the case says why not and the test holds the cause (the file's own quantizer, a runtime's cache or mapping).
Compute buffers come from llama.cpp's dry run of this llama.cpp: they are held within 1% where the logged build's
graph is comparable, and elsewhere the cause is checked where it can be (the older builds' host buffer is exactly
their graph inputs; a 2026 build's host buffer is the dry run's).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.cuda_logs import (
    CASES,
    COMPUTE,
    KV,
    LOGS_FILE,
    MAINLINE,
    NOT_EXPRESSED,
    WEIGHTS,
    Row,
    load_logs,
    pre_2026_host_compute_bytes,
    predicted_buffers,
    reproduce,
)

MIB = 1 << 20
pytestmark = pytest.mark.skipif(not LOGS_FILE.is_file(), reason=f"{LOGS_FILE} (the published logs) is not here")


@pytest.fixture(scope="module")
def logs() -> dict:
    return load_logs()


def test_every_log_is_a_case_or_says_why_not(logs) -> None:
    assert set(CASES) | set(NOT_EXPRESSED) == set(logs)
    assert not set(CASES) & set(NOT_EXPRESSED)


@pytest.mark.parametrize("log_id", sorted(CASES))
def test_weights_and_kv_as_logged(logs, log_id: str) -> None:
    """Every model and KV buffer the log printed, to its 0.01 MiB, unless the case records why not (and then it
    must differ: a stale reason fails too)."""
    rows = reproduce(CASES[log_id], logs[log_id], with_compute=False)
    assert rows, f"log {log_id} printed no model or KV buffer"
    for r in rows:
        assert (r.why is None) == r.exact, _say(r)


def test_mainline_logs_weights_and_kv_exact(logs) -> None:
    """The mainline logs with model and KV lines: all exact, but the two files whose quantizer predates this
    llama.cpp's rules (test_files_as_written)."""
    mainline = [i for i, c in CASES.items() if c.runtime == MAINLINE]
    assert set(mainline) == {"F", "I", "K", "L", "R", "T", "U"}
    for log_id in mainline:
        for r in reproduce(CASES[log_id], logs[log_id], with_compute=False):
            assert r.exact or (log_id, r.buffer, r.quantity) in {("I", "CUDA0", WEIGHTS), ("K", "CUDA0", WEIGHTS)}


@pytest.mark.parametrize("log_id,diff_mib", [("I", 3.375), ("K", -347.0)])
def test_files_as_written(logs, log_id: str, diff_mib: float) -> None:
    """The differing weights are the file's types: with them (Microsoft's April 2024 attn_qkv at Q5_K; TheBloke's
    pre-2024 Q2_K, Q3_K but attn_q/attn_k) every buffer is exact, and this llama.cpp's rules differ by exactly the
    retyped tensors."""
    case = CASES[log_id]
    current = case.header()
    written = case.as_written(current)
    for r in reproduce(case, logs[log_id], with_compute=False, header=written):
        assert r.exact, _say(r)
    assert (current.tensor_bytes - written.tensor_bytes) / MIB == pytest.approx(diff_mib, abs=0.005)


def test_the_fork_allocates_a_full_length_cache(logs) -> None:
    """ik_llama.cpp (case S, Gemma 3) gives every layer n_ctx cells: llama.cpp's swa_full cache, to the MiB."""
    case = CASES["S"]
    full = predicted_buffers(case, with_compute=False, context=replace(case.context, swa_full=True))
    assert full[(KV, "CUDA0")] == round(logs["S"]["kv_buffers_mib"]["CUDA0"] * MIB)


def test_older_builds_host_compute_is_their_graph_inputs(logs) -> None:
    """Why no host compute buffer of a log older than May 2026 is ours: each is exactly its build's graph inputs,
    one n_ubatch x n_embd f32 embedding and n_copies f32 KQ masks (positions and output ids: +0.00..0.02 MiB).
    This llama.cpp reserves the mask in f16 under flash attention and holds a second embedding input."""
    checked = []
    for log_id, case in CASES.items():
        logged = (logs[log_id].get("compute_buffers_mib") or {}).get("CUDA_Host")
        if logged is None or not case.old_graph_inputs:
            continue
        extra_mib = logged - pre_2026_host_compute_bytes(case) / MIB
        assert -0.005 <= extra_mib <= 0.025, (log_id, logged, extra_mib)
        checked.append(log_id)
    assert len(checked) == 11


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.parametrize("log_id", sorted(i for i, c in CASES.items() if c.compute))
def test_compute_as_logged(logs, log_id: str) -> None:
    """llama.cpp's dry run against the log: within 1% where the case records no reason (Mistral 7B without flash
    attention at 32k, +0.19%; the logits phase of Qwen2.5 7B and Gemma 3 27B, exact), and outside it where it does.
    A figure the dry run cannot be asked for (Ollama's layout of case G) must have its reason."""
    for r in reproduce(CASES[log_id], logs[log_id]):
        if r.quantity != COMPUTE:
            continue
        if r.predicted_bytes is None:
            assert r.why, _say(r)
            continue
        assert (r.why is None) == (abs(r.diff_pct) <= 1.0), _say(r)


@pytest.mark.engine
@pytest.mark.rpc
def test_a_2026_build_host_compute_is_the_dry_runs(logs) -> None:
    """Case D's llama-server (June 2026) has this llama.cpp's graph inputs: at full offload, where CUDA's op offload
    plays no part, the dry run's host buffer is the log's CUDA_Host to the 0.01 MiB (two f32 embedding inputs and
    the f16 mask; the log's own --fit projection says the same 48 MiB at 15 and 33 layers)."""
    case = replace(CASES["D"], n_gpu_layers=33)
    ours = predicted_buffers(case)[(COMPUTE, "host")]
    assert Row("D", case.runtime, "CUDA_Host", COMPUTE, ours, logs["D"]["compute_buffers_mib"]["CUDA_Host"]).exact


def _say(r: Row) -> str:
    return (
        f"{r.log_id} {r.buffer} {r.quantity}: predicted {r.predicted_mib} MiB, logged {r.logged_mib} MiB"
        f" ({r.diff_mib} MiB); why: {r.why}"
    )
