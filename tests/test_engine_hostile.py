"""Hostile input to the engine floor and the CLI's edges (issue #11): untrusted chat templates, an RPC peer
that passes the HELLO and then misbehaves, prompts and options llama.cpp aborts on, Ctrl-C inside llama.cpp's
callbacks, and standard streams that are closed, binary or full. Each ends in one line and an exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gguf import GGUFValueType as V

from harness import read_header
from harness.cli import cli
from harness.errors import ChatTemplateError, EngineError, HarnessError, RpcError, UsageError
from harness.gguf.source import BytesSource
from harness.llama import chat, engine
from harness.llama.rpc import RpcServer
from harness.plan import PlanRequest, make_plan
from tests.support.ggufbytes import Model, base_tensors, kv
from tests.support.models import SMOLLM
from tests.support.rpcpeer import RpcPeer

ROOT = Path(__file__).resolve().parent.parent
RPC_ABORT = "error: llama.cpp aborted: ggml-rpc.cpp:"
RPC_REASON = ": Remote RPC server crashed or returned malformed response\n"


def _harness(*args: str | bytes, **kw) -> subprocess.CompletedProcess:
    if "stdout" not in kw and "stderr" not in kw:
        kw["capture_output"] = True
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, timeout=180, **kw)


def _script(path: Path) -> subprocess.CompletedProcess:
    """Run a Python file with this checkout's harness (a script's own folder comes first on sys.path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)


def _one_line(text: str) -> bool:
    return text.endswith("\n") and text.count("\n") == 1


# --- chat templates ----------------------------------------------------------------------------------------


def _render(template: str, prompt: str = "Hi") -> str:
    data = Model(
        kvs=[
            kv("general.architecture", V.STRING, "llama"),
            kv("llama.block_count", V.UINT32, 2),
            kv("tokenizer.chat_template", V.STRING, template),
        ],
        tensors=base_tensors(),
    ).build()
    return chat.render(read_header(BytesSource(data, name="evil.gguf")), prompt)


@pytest.mark.parametrize(
    "template,says",
    [
        # each escaped as an internal error before (TypeError, RecursionError, MemoryError, ZeroDivisionError)
        ("{% include 'x' %}", "tried to load another template ('x')"),
        ("{% import 'x' as y %}", "tried to load another template ('x')"),
        ("{% extends 'x' %}", "tried to load another template ('x')"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed too deeply"),
        ("{{ 'a' * 10**10 }}", "ran out of memory"),
        ("{{ [1] * 10**10 }}", "ran out of memory"),
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
        ("{% for i in range(10**9) %}{% endfor %}", "OverflowError: Range too big"),
        # 100 MB of prompt (11 GB at peak, tokenizing it) and a 1 GB format width: bounded output
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "produced more than 1,048,578 characters"),
        ("{{ 'a' * 10**8 }}", "produced more than 1,048,578 characters"),
        ("{{ '{:>200000000}'.format(1) }}", "produced more than 1,048,578 characters"),
        ("{{ raise_exception('no\nsystem\nmessages') }}", "refused the conversation: no system messages"),
        ("{% for %}", "failed to render: Expected an expression"),
    ],
)
def test_hostile_templates_are_one_chat_template_error(template, says) -> None:
    with pytest.raises(ChatTemplateError) as info:
        _render(template)
    message = str(info.value)
    assert says in message and "\n" not in message and len(message) < 400, message


@pytest.mark.parametrize(
    "template",
    [
        # ran until killed (90 s) before: no range is too big, three of them nested are
        "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "{{ lipsum(10**6, 10**6) }}",
    ],
)
def test_endless_templates_are_stopped_in_time(template, monkeypatch) -> None:
    monkeypatch.setattr(chat, "RENDER_TIMEOUT_S", 1.5)
    t0 = time.monotonic()
    with pytest.raises(ChatTemplateError, match=r"did not finish rendering within 1\.5 s"):
        _render(template)
    assert time.monotonic() - t0 < 10


def test_a_real_template_still_renders() -> None:
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    prompt = "Grüße, " + "long " * 50000  # a long prompt is the user's: the template's bound is on top of it
    assert _render(template, prompt) == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


# --- prompts and options, refused before the engine sees them ---------------------------------------------------


def test_empty_prompt_is_a_usage_error_before_loading() -> None:
    # llama.cpp sampled from no logits: GGML_ASSERT(logits != nullptr), a gdb backtrace, and no JSON
    r = CliRunner().invoke(cli, ["run", SMOLLM, "", "--json"])
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == 'error: the prompt is empty: give some text (PROMPT "-" reads it from standard input)\n'


def test_binary_stdin_is_a_usage_error() -> None:
    # an internal UnicodeEncodeError (surrogates) before
    r = CliRunner().invoke(cli, ["run", SMOLLM, "-"], input=b"ok \xf3\x00\xff")
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == 'error: PROMPT "-": standard input is not UTF-8 text (byte 0xf3 at offset 3)\n'


def test_endless_stdin_is_bounded(monkeypatch) -> None:
    import harness.cli.run

    monkeypatch.setattr(harness.cli.run, "MAX_STDIN_BYTES", 16)
    r = CliRunner().invoke(cli, ["run", SMOLLM, "-"], input=b"x" * 17)
    assert r.exit_code == 2 and "standard input holds more than 16 B" in r.stderr and _one_line(r.stderr)


def test_closed_stdin_is_a_usage_error() -> None:
    # an internal AttributeError ('NoneType' object has no attribute 'read') before
    r = _harness("run", SMOLLM, "-", text=True, preexec_fn=lambda: os.close(0))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == 'error: PROMPT "-" reads standard input, which is closed\n'


def test_prompt_that_is_not_utf8_is_a_usage_error() -> None:
    r = _harness("run", SMOLLM, b"caf\xe9", text=True)  # argv bytes that are not UTF-8
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "error: the prompt is not UTF-8 text (a byte that is not, at character 3)\n"


def test_thread_counts_ggml_cannot_run_are_refused(tmp_path) -> None:
    # `--threads 100000` crashed ggml with SIGSEGV; the library refuses it before loading anything
    with pytest.raises(UsageError, match=r"--threads 100000: ggml runs 1\.\.512 threads"):
        engine.load_and_report(tmp_path / "never-read.gguf", n_threads=100000)
    with pytest.raises(UsageError, match="--threads -1"):
        engine.check_threads(-1)
    assert engine.check_threads(512) == 512 and engine.check_threads(None) == (os.cpu_count() or 1)
    with pytest.raises(RpcError, match=r"threads 100000: ggml runs 1\.\.512"):
        RpcServer(threads=100000)


# --- the standard streams ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("--help",), ("--version",), ("hardware",), ("inspect", "--help"), ("sizes", "8b-q4_k_m", "--json")]
)
def test_stdout_to_dev_full_is_one_line(args) -> None:
    # a traceback (--help, --version) or "internal error: OSError" (exit 70) before
    with open("/dev/full", "w") as full:
        r = _harness(*args, stdout=full, stderr=subprocess.PIPE, text=True)
    assert (r.returncode, r.stderr) == (1, "error: cannot write to standard output: No space left on device\n")


@pytest.mark.parametrize(
    "args,code", [(("--help",), 0), (("--version",), 0), (("hardware",), 0), (("sizes", "8b-q4_k_m"), 0)]
)
def test_closed_pipe_is_quiet(args, code) -> None:
    # `--help | head -c 5`: exit 1 from click's own handler before
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        r = _harness(*args, stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (code, "")


# --- llama.cpp's aborts -------------------------------------------------------------------------------------------


@pytest.mark.engine
def test_an_abort_is_one_line_without_a_backtrace() -> None:
    script = textwrap.dedent(
        """
        import ctypes, sys
        from harness.llama import engine
        engine._llama_cpp()
        from llama_cpp import llama_cpp
        print("streamed so far", end="")
        abort = llama_cpp._lib.ggml_abort
        abort.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        abort(b"/tmp/pip-build/vendor/llama.cpp/src/llama-sampler.cpp", 940, b"GGML_ASSERT(logits != nullptr) failed")
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    # ggml's default: SIGABRT after gdb's backtrace, partly on stdout
    assert (r.returncode, r.stdout) == (6, "streamed so far")
    assert r.stderr.endswith("error: llama.cpp aborted: llama-sampler.cpp:940: GGML_ASSERT(logits != nullptr) failed\n")


@pytest.mark.engine
@pytest.mark.real_model
def test_a_vocabulary_without_bos_renders_a_chat(tmp_path) -> None:
    # llama_token_to_piece(-1) throws std::out_of_range through the C API: the process aborted
    script = tmp_path / "no_bos.py"
    script.write_text(
        "import sys, llama_cpp\n"
        "llama_cpp.llama_vocab_bos = lambda vocab: -1\n"
        f"sys.argv = ['harness', 'run', {SMOLLM!r}, 'Hi', '--chat', '--max-tokens', '2', '--json']\n"
        "from harness.cli import main\n"
        "main()\n"
    )
    r = _script(script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"prompt_tokens"' in r.stdout


@pytest.mark.engine
@pytest.mark.real_model
def test_session_refuses_an_empty_token_list(smollm_path) -> None:
    from harness.llama.session import open_session
    from harness.offload.placement import ContextParams

    with open_session(str(smollm_path), None, ContextParams(n_ctx=256)) as s:
        with pytest.raises(UsageError, match="no tokens"):
            s.generate([], 4)
        # a prompt no context of 256 tokens holds is refused from its beginning (a 100 MB prompt took 11 GB)
        t0 = time.monotonic()
        with pytest.raises(HarnessError, match="has more than 256 tokens in its first 16,448 bytes"):
            s.tokenize("word " * 2_000_000, max_tokens=256)
        assert time.monotonic() - t0 < 5
        assert len(s.tokenize("word " * 100, max_tokens=256)) == len(s.tokenize("word " * 100))


# --- a misbehaving RPC peer -----------------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
@pytest.mark.parametrize("mode", ["close", "garbage"])
@pytest.mark.parametrize(
    "command",
    [
        ("run", SMOLLM, "Hello", "--max-tokens", "2", "--json"),
        ("bench", SMOLLM, "--reps", "1", "--pp", "8", "--tg", "4", "--json"),
    ],
)
def test_peer_that_misbehaves_after_hello_is_one_line(mode, command) -> None:
    with RpcPeer(mode) as peer:
        r = _harness(*command, "--rpc", f"{peer.endpoint}=1GiB", text=True)
    assert peer.commands, "the peer never got past the HELLO"
    assert (r.returncode, r.stdout) == (6, "")
    last = r.stderr.splitlines(keepends=True)[-1]
    assert last.startswith(RPC_ABORT) and last.endswith(RPC_REASON), r.stderr[-2000:]
    assert "gdb" not in r.stderr and "#0 " not in r.stderr


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_verify_loads_in_a_child_so_a_dying_peer_is_an_error_here(smollm_path) -> None:
    with RpcPeer("close") as peer, pytest.raises(EngineError) as info:  # this process survives to raise it
        make_plan(PlanRequest(model=SMOLLM, rpc=(f"{peer.endpoint}=1GiB",), verify=True))
    message = str(info.value)
    assert message.startswith(f"loading {smollm_path} onto {peer.endpoint} failed: llama.cpp aborted: ggml-rpc.cpp:")
    assert message.endswith(RPC_REASON.strip()) and "\n" not in message


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_a_server_dying_mid_load_is_an_error(smollm_path) -> None:
    with RpcServer() as server, RpcPeer("proxy", server.endpoint, cut_after_bytes=200_000) as peer:
        with pytest.raises(EngineError, match="Remote RPC server crashed or returned malformed response"):
            engine.load_and_report(smollm_path, 31, 512, [peer.endpoint], isolated=True)
        r = _harness("plan", SMOLLM, "--verify", "--rpc", f"{peer.endpoint}=1GiB", text=True)
    assert (r.returncode, r.stdout) == (6, "") and _one_line(r.stderr)
    assert r.stderr.startswith(f"error: loading {smollm_path} onto {peer.endpoint} failed: llama.cpp aborted:")


@pytest.mark.engine
@pytest.mark.rpc
@pytest.mark.real_model
def test_isolated_load_reports_as_in_process(smollm_path) -> None:
    with RpcServer() as server:
        here = engine.load_and_report(smollm_path, 10, 512, [server.endpoint], decode=False)
        there = engine.load_and_report(smollm_path, 10, 512, [server.endpoint], decode=False, isolated=True)
    assert there.buffers == here.buffers and there.n_layers_on_devices == here.n_layers_on_devices == 10


# --- Ctrl-C ----------------------------------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.real_model
def test_ctrl_c_during_load_stops_the_run(tmp_path) -> None:
    # SIGINT while llama.cpp loads is handled in our log callback; the KeyboardInterrupt raised there was
    # swallowed by ctypes ("Exception ignored on calling ctypes callback function") and the run went on
    script = tmp_path / "ctrl_c.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            from harness.llama import engine
            feed = engine.LogCapture.feed
            def feed_then_ctrl_c(self, level, text):
                if not self.lines:
                    os.kill(os.getpid(), signal.SIGINT)
                return feed(self, level, text)
            engine.LogCapture.feed = feed_then_ctrl_c
            sys.argv = ["harness", "run", {SMOLLM!r}, "Count to a thousand:", "--max-tokens", "64"]
            from harness.cli import main
            main()
            """
        )
    )
    r = _script(script)
    assert (r.returncode, r.stdout, r.stderr) == (130, "", "interrupted\n")


@pytest.mark.engine
def test_ctrl_c_outside_callbacks_is_still_a_keyboard_interrupt() -> None:
    capture = engine.LogCapture()
    with pytest.raises(KeyboardInterrupt), engine.captured_log(capture):
        signal.raise_signal(signal.SIGINT)
        time.sleep(1)  # the interrupt lands here, as in a generation loop
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
