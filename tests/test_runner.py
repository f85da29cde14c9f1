"""Running and benchmarking the real engine on both real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from gguf import GGUFValueType as V

from harness import read_header
from harness.cli import cli
from harness.gguf.source import BytesSource
from harness.llama.chat import ChatTemplateError, render
from harness.llama.rpc import RpcServer
from harness.llama.session import Sampling
from harness.plan import PlanRequest
from harness.run import run_prompt
from tests.support.ggufbytes import Model, base_tensors, kv
from tests.support.models import GEMMA, SMOLLM


def _run_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["run", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.engine
@pytest.mark.real_model
@pytest.mark.parametrize(
    "model,prompt",
    [
        # gemma3-270m is a base model: "The capital of France is" continues greedily with " the capital of the
        # country of France." (llama-cpp-python's own Llama() says the same); this phrasing it answers
        (GEMMA, "The capital of France is the city of"),
        (SMOLLM, "The capital of France is"),
    ],
)
def test_greedy_answer_is_right(model, prompt) -> None:
    out = _run_json(model, prompt, "--max-tokens", "8")
    assert "Paris" in out["text"]
    assert out["completion_tokens"] > 0 and out["prompt_tokens"] > 0
    assert out["timings"]["tg_tokens_per_s"] > 0 and out["n_layers_offloaded"] == 0
    assert out["memory"]["actual"]["CPU_Mapped"]["weights_bytes"] > 0


@pytest.mark.engine
@pytest.mark.real_model
def test_streaming_delivers_pieces_as_they_come() -> None:
    arrivals: list[tuple[float, str]] = []
    result = run_prompt(
        PlanRequest(model=SMOLLM, n_ctx=512),
        "Once upon a time",
        24,
        Sampling(),
        on_piece=lambda p: arrivals.append((time.perf_counter(), p)),
    )
    assert len(arrivals) >= 10
    assert "".join(p for _, p in arrivals) == result.generation.text
    # pieces arrive spread over the generation, not all at the end
    assert arrivals[-1][0] - arrivals[0][0] > 0.5 * result.generation.generation_s


@pytest.mark.engine
@pytest.mark.real_model
def test_seeded_sampling_is_reproducible() -> None:
    a = _run_json(SMOLLM, "Tell me a story", "--max-tokens", "12", "--temperature", "0.9", "--seed", "7")
    b = _run_json(SMOLLM, "Tell me a story", "--max-tokens", "12", "--temperature", "0.9", "--seed", "7")
    assert a["text"] == b["text"]


@pytest.mark.engine
@pytest.mark.real_model
def test_chat_template_from_the_file_and_built_in(smollm_path, gemma_path) -> None:
    text = render(read_header(smollm_path), "Hi")  # SmolLM2 carries a Jinja template
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    text = render(read_header(gemma_path), "Hi")  # no template in the file: llama.cpp's built-in "gemma"
    assert text == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% set x = messages.append(1) %}",
        "{{ raise_exception('no system messages') }}",
    ],
)
def test_untrusted_templates_are_sandboxed(template) -> None:
    data = Model(
        kvs=[
            kv("general.architecture", V.STRING, "llama"),
            kv("llama.block_count", V.UINT32, 2),
            kv("tokenizer.chat_template", V.STRING, template),
        ],
        tensors=base_tensors(),
    ).build()
    with pytest.raises(ChatTemplateError):
        render(read_header(BytesSource(data, name="evil.gguf")), "Hi")


@pytest.mark.engine
@pytest.mark.real_model
def test_bench_records_are_consistent(tmp_path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["bench", SMOLLM, "--reps", "2", "--pp", "64", "--tg", "16", "--json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    recs = json.loads(result.stdout)
    assert [(r["n_prompt"], r["n_gen"]) for r in recs] == [(64, 0), (0, 16)]
    for r in recs:
        assert len(r["samples_ts"]) == len(r["samples_ns"]) == 2
        assert r["avg_ts"] == pytest.approx(sum(r["samples_ts"]) / 2, rel=1e-3)
        n = r["n_prompt"] or r["n_gen"]
        assert r["avg_ns"] == pytest.approx(sum(r["samples_ns"]) / 2, abs=2)
        assert [round(n / (ns / 1e9), 1) for ns in r["samples_ns"]] == pytest.approx(r["samples_ts"], abs=0.2)
        assert r["model_n_params"] == 134515008 and r["n_gpu_layers"] == 0 and r["overhead_ratio"] > 0
    assert recs[1]["bound_fraction"] is not None and 0 < recs[1]["bound_fraction"] < 2
    assert json.loads((out / "results.json").read_text()) == recs
    assert len((out / "results.jsonl").read_text().splitlines()) == 2 and (out / "results.md").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_rpc_run_reports_actual_device_memory() -> None:
    with RpcServer() as srv:
        out = _run_json(SMOLLM, "The capital of France is", "--max-tokens", "4", "--rpc", f"{srv.endpoint}=200MiB")
    assert out["n_layers_offloaded"] == out["n_gpu_layers"] > 0
    [rpc] = [v for k, v in out["memory"]["actual"].items() if k.startswith("RPC")]
    [planned] = [v for k, v in out["memory"]["predicted"].items() if k.startswith("RPC")]
    assert abs(rpc["weights_bytes"] - planned["weights_bytes"]) <= 5243
    assert "Paris" in out["text"]


@pytest.mark.engine
@pytest.mark.real_model
def test_interrupt_stops_cleanly_with_a_summary() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            SMOLLM,
            "Count to a thousand:",
            "--max-tokens",
            "100000",
            "--ctx",
            "8192",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        first = proc.stdout.read(8)
        assert first
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0
    assert b"stopped: interrupted" in err and b"Traceback" not in err
    # nothing of the session's process group is left
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


@pytest.mark.engine
def test_load_failure_shows_llama_cpps_reason(tmp_path) -> None:
    bad = tmp_path / "unknown-arch.gguf"
    bad.write_bytes(
        Model(
            kvs=[kv("general.architecture", V.STRING, "no-such-arch"), kv("no-such-arch.block_count", V.UINT32, 2)],
            tensors=base_tensors(),
        ).build()
    )
    r = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(bad), "hi"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "unknown model architecture" in r.stderr and "no-such-arch" in r.stderr


def test_405b_bench_says_what_it_would_take() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "405b-q4_k_m"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 10 and "Traceback" not in r.stderr
    assert "cannot run on this machine" in r.stdout and "partial offload" in r.stdout
    assert "8 x a100-40gb" in r.stdout and "download: 226.37 GiB" in r.stdout
