"""The CLI end to end: real models through CliRunner, the error boundary's exit codes (through CliRunner and a
real process), the exit-code table in README.md, and commands that load only when they run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from harness import read_header
from harness.cli import COMMANDS, cli
from harness.cli.options import SIZE
from harness.errors import EXIT_CODES, INTERNAL_ERROR_EXIT_CODE, CannotRunHere, UsageError
from tests.support.ggufbytes import base_model
from tests.support.models import GEMMA, SMOLLM


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120)


def test_inspect_json_on_gemma(gemma_path) -> None:
    result = CliRunner().invoke(cli, ["inspect", GEMMA, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    h = read_header(gemma_path)
    assert out["path"] == str(gemma_path)
    assert (out["architecture"], out["file_type"], out["n_tensors"]) == ("gemma3", "Q4_K_M", 236)
    assert out["tensor_bytes"] == h.tensor_bytes == 246587904
    assert out["n_params"] == h.n_params and out["n_layer"] == 18
    assert out["data_offset"] == 6525120 and out["file_bytes"] == 253113024
    assert out["types"]["Q5_0"] == {"count": 81, "bytes": 43591680}
    assert (
        len(out["layers"]) == 18
        and sum(layer["bytes"] for layer in out["layers"]) + sum(t["bytes"] for t in out["non_layer"])
        == out["tensor_bytes"]
    )
    assert out["truncated"] is False and len(out["shards"]) == 1
    assert "tensors" not in out


def test_inspect_tensors_json(smollm_path) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(smollm_path), "--json", "--tensors"])
    out = json.loads(result.output)
    assert len(out["tensors"]) == 272 == out["n_tensors"]
    assert sum(t["bytes"] for t in out["tensors"]) == out["tensor_bytes"]


def test_inspect_human_output(gemma_path) -> None:
    result = CliRunner().invoke(cli, ["inspect", GEMMA])
    assert result.exit_code == 0
    for fragment in (
        "gemma3",
        "Q4_K_M",
        "246,587,904",
        "| Q5_0 |",
        "blk.15-17",
        "sliding window 512",
        "vocabulary     262144",
    ):
        assert fragment in result.output


def test_inspect_split_model_lists_shards(tmp_path) -> None:
    from tests.support.writer import write_llama

    paths = write_llama(tmp_path / "m.gguf", split_max_tensors=6)
    result = CliRunner().invoke(cli, ["inspect", str(paths[1]), "--json"])
    out = json.loads(result.output)
    assert out["paths"] == [str(p) for p in paths] and len(out["shards"]) == 3
    assert sum(s["tensor_bytes"] for s in out["shards"]) == out["tensor_bytes"]


def test_malformed_file_is_one_line_and_exit_2(tmp_path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(base_model(version=7).build())
    r = _run("inspect", str(bad))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: {bad}: version at byte 4: 7 is not a supported GGUF version (2 or 3)\n"


def test_unknown_model_name(tmp_path) -> None:
    r = _run("inspect", "no-such-model")
    assert r.returncode == 3
    assert r.stderr.startswith("error: no model named 'no-such-model'") and "Traceback" not in r.stderr
    r = _run("inspect", str(tmp_path / "absent.gguf"))
    assert r.returncode == 3 and "no such file" in r.stderr


@pytest.mark.real_model
def test_models_lists_the_registry() -> None:
    result = CliRunner().invoke(cli, ["models", "--json"])
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows[GEMMA]["default"] and rows[GEMMA]["state"] == "downloaded"
    assert rows[SMOLLM]["quant"] == "Q4_1"


# The error boundary, through CliRunner: the exit codes a shell sees.


def _invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args))


def test_missing_model_is_exit_3_and_one_error_line(tmp_path) -> None:
    r = _invoke("inspect", str(tmp_path / "absent.gguf"))
    assert r.exit_code == 3 and r.stdout == ""
    assert r.stderr == f"error: {tmp_path / 'absent.gguf'}: no such file\n"


def test_bad_budget_is_exit_2_naming_the_option() -> None:
    r = _invoke("plan", "8b-q4_k_m", "--budget", "12XB")
    assert r.exit_code == 2 and r.stdout == ""
    assert "Invalid value for --budget: '12XB' is not a size; write e.g. 40GiB" in r.stderr


def test_malformed_gguf_is_exit_2(tmp_path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(base_model(version=7).build())
    r = _invoke("inspect", str(bad), "--json")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == f"error: {bad}: version at byte 4: 7 is not a supported GGUF version (2 or 3)\n"


def test_library_usage_error_is_exit_2() -> None:
    r = _invoke("plan", "8b-q4_k_m", "--rpc", "127.0.0.1:50052")
    assert r.exit_code == 2
    assert r.stderr == "error: --rpc '127.0.0.1:50052': write HOST:PORT=SIZE, e.g. 127.0.0.1:50052=8GiB\n"


def _raise(exc: BaseException):
    def f(*args, **kwargs):
        raise exc

    return f


def test_unexpected_exception_is_exit_70_without_traceback(monkeypatch) -> None:
    import harness.cli.inspect

    monkeypatch.delenv("HARNESS_DEBUG", raising=False)
    monkeypatch.setattr(harness.cli.inspect, "resolve_model", _raise(RuntimeError("the header walked away")))
    r = _invoke("inspect", "8b-q4_k_m")
    assert r.exit_code == INTERNAL_ERROR_EXIT_CODE == 70 and r.stdout == ""
    assert r.stderr == ("internal error: RuntimeError: the header walked away (HARNESS_DEBUG=1 shows the traceback)\n")


def test_harness_debug_shows_the_traceback(monkeypatch) -> None:
    import harness.cli.inspect

    monkeypatch.setenv("HARNESS_DEBUG", "1")
    monkeypatch.setattr(harness.cli.inspect, "resolve_model", _raise(RuntimeError("the header walked away")))
    r = _invoke("inspect", "8b-q4_k_m")
    assert r.exit_code == 70 and r.stderr.startswith("Traceback") and "resolve_model" not in r.stdout
    assert r.stderr.endswith(
        "internal error: RuntimeError: the header walked away (HARNESS_DEBUG=1 shows the traceback)\n"
    )


def test_cannot_run_here_is_a_result_on_stdout_and_exit_10(monkeypatch) -> None:
    import harness.cli.bench

    monkeypatch.setattr(harness.cli.bench, "bench_model", _raise(CannotRunHere("x cannot run on this machine.")))
    r = _invoke("bench", "405b-q4_k_m")
    assert (r.exit_code, r.stdout, r.stderr) == (10, "x cannot run on this machine.\n", "")


def test_interrupt_is_exit_130(monkeypatch) -> None:
    import harness.cli.plan

    monkeypatch.setattr(harness.cli.plan, "make_plan", _raise(KeyboardInterrupt()))
    r = _invoke("plan", "8b-q4_k_m")
    assert (r.exit_code, r.stderr) == (130, "interrupted\n")


def test_closed_pipe_is_a_quiet_exit_0(monkeypatch) -> None:
    import harness.cli.plan

    monkeypatch.setattr(harness.cli.plan, "make_plan", _raise(BrokenPipeError()))
    r = _invoke("plan", "8b-q4_k_m")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")


def test_readme_exit_codes_are_the_table() -> None:
    """README's table and harness.errors.EXIT_CODES list the same codes with the same meanings."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\|\s*(\d+) \| (.+?)\s*\|$", readme, flags=re.MULTILINE)
    assert rows, "README.md has no exit-code table"
    assert {int(code): meaning for code, meaning in rows} == dict(EXIT_CODES)
    assert len(rows) == len(EXIT_CODES)


# Start-up: commands load when they run.


def test_help_lists_the_commands_as_an_eager_group_would() -> None:
    """`harness --help` reads the stored summaries; the listing is the one the imported commands would give."""
    commands = {name: cli.get_command(click.Context(cli), name) for name in COMMANDS}
    assert all(c is not None and c.name == name for name, c in commands.items())
    eager = click.Group(
        cli.name, commands=commands, help=cli.help, params=cli.params, context_settings=cli.context_settings
    )
    lazy = _invoke("--help")
    assert lazy.exit_code == 0 and lazy.output == CliRunner().invoke(eager, ["--help"]).output
    assert "\n  rpc-server  Serve this host's CPU backend" in lazy.output


_IMPORTS_AFTER = """
import json, sys
from click.testing import CliRunner
from harness.cli import cli
result = CliRunner().invoke(cli, sys.argv[1:])
assert result.exit_code == 0, result.output
print(json.dumps(sorted(sys.modules)))
"""
_HEAVY = (
    "llama_cpp",
    "huggingface_hub",
    "matplotlib",
    "jinja2",
    "numpy",
    "harness.offload",
    "harness.plan",
    "harness.llama",
)


def _modules_after(*args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", _IMPORTS_AFTER, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1]))


def test_help_and_inspect_load_nothing_heavy(tmp_path) -> None:
    from tests.support.writer import write_llama

    (path,) = write_llama(tmp_path / "m.gguf")
    for args in (["--help"], ["inspect", str(path), "--json"]):
        loaded = _modules_after(*args)
        assert not {m for m in loaded for heavy in _HEAVY if m == heavy or m.startswith(heavy + ".")}, args
        others = {f"harness.cli.{module}" for module, _ in COMMANDS.values()} - {"harness.cli.inspect"}
        assert not loaded & others, args


def test_plan_options_reach_the_library_as_bytes(monkeypatch) -> None:
    import harness.cli.plan
    from harness.plan import PlanRequest

    seen = []

    def make_plan(req: PlanRequest):
        seen.append(req)
        raise UsageError("recorded")

    monkeypatch.setattr(harness.cli.plan, "make_plan", make_plan)
    r = _invoke(
        "plan",
        "8b-q4_k_m",
        "--budget",
        "40GiB",
        "--host-ram",
        "64GB",
        "--reserve",
        "512MiB",
        "--kv-type",
        "q8_0",
        "--rpc",
        "10.0.0.2:50052=8GiB",
        "--ctx",
        "8192",
    )
    assert (r.exit_code, r.stderr) == (2, "error: recorded\n")
    assert seen == [
        PlanRequest(
            model="8b-q4_k_m",
            budget_bytes=40 << 30,
            host_ram_bytes=64 * 10**9,
            reserve_bytes=512 << 20,
            kv_type="q8_0",
            rpc=("10.0.0.2:50052=8GiB",),
            n_ctx=8192,
        )
    ]


def test_kv_type_choices_are_the_clis_three() -> None:
    import harness.cli.bench
    import harness.cli.plan
    import harness.cli.run

    for command in (harness.cli.plan.plan, harness.cli.run.run, harness.cli.bench.bench):
        (kv,) = [p for p in command.params if p.name == "kv_type"]
        assert (tuple(kv.type.choices), kv.default) == (("f16", "q8_0", "q4_0"), "f16")
    r = _invoke("plan", "8b-q4_k_m", "--kv-type", "q5_0")
    assert r.exit_code == 2 and "q5_0" in r.stderr


def test_size_option_type() -> None:
    assert SIZE.convert("40GiB", None, None) == 40 << 30 and SIZE.convert("40GiB", None, None).text == "40GiB"
    with pytest.raises(click.BadParameter, match="'4 apples' is not a size"):
        SIZE.convert("4 apples", None, None)


def test_compare_text_too_short_is_a_usage_error() -> None:
    """compare --text with fewer tokens than one 512-token chunk: exit 2 and both counts, not an internal error."""
    from harness.llama.quality import chunks_of

    session = SimpleNamespace(
        tokenize=lambda text, add_special: list(range(len(text.split()))),
        api=SimpleNamespace(llama_vocab_bos=lambda vocab: 1),
        vocab=None,
    )
    with pytest.raises(UsageError, match=r"^the text has 300 tokens; scoring needs at least 512 "):
        chunks_of(session, "word " * 300, 512, 8)
    assert len(chunks_of(session, "word " * 1100, 512, 8)) == 2
