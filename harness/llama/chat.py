"""Chat templates from GGUF files, rendered only in a sandbox: the template is untrusted input.

Jinja2's immutable sandbox stops a template reaching Python's internals, but not its cost: nested loops
over `range(100000)` ran until killed (90 s), `'x' * 1000` in a loop built a 100 MB prompt (11 GB at
peak, tokenizing it), and recursion, `lipsum(10**6, 10**6)`, `'a' * 10**10` or an `include` escaped as
internal errors. So a template renders in a child process (`python -c …_child_main()`) with a
wall-clock limit, a CPU-time and an address-space limit, and a bound on what it may produce, and every
way it can fail is one ChatTemplateError line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import subprocess
import sys

from harness.errors import ChatTemplateError
from harness.gguf.header import ModelHeader
from harness.llama import rpc

TEMPLATE_KEY = "tokenizer.chat_template"

RENDER_TIMEOUT_S = 10.0  # a real template renders in milliseconds; starting the child takes ~0.2 s
RENDER_MEMORY_BYTES = 1 << 30  # the child's address space (RLIMIT_AS), plus room for the messages themselves
TEMPLATE_OVERHEAD_CHARS = 1 << 20  # what a template may add to the messages' own text (role markers, a preamble)
_MESSAGE_LIMIT_CHARS = 300  # of an error's own text, in the one line that reports it

_CHILD_CODE = "from harness.llama.chat import _child_main; _child_main()"


def render(header: ModelHeader, prompt: str, system: str | None = None, bos_text: str = "", eos_text: str = "") -> str:
    """The prompt as the model's own chat template lays it out, ready for the model to answer."""
    template = header.get(TEMPLATE_KEY)
    if not isinstance(template, str) or not template.strip():
        return builtin(header, prompt, system)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return render_template(template, messages, bos_text, eos_text)


def render_template(
    template: str,
    messages: list[dict[str, str]],
    bos_text: str = "",
    eos_text: str = "",
    timeout_s: float | None = None,
) -> str:
    """``template`` rendered for ``messages`` with a generation prompt, in a sandboxed child process."""
    timeout_s = RENDER_TIMEOUT_S if timeout_s is None else timeout_s
    given = sum(len(m["content"]) for m in messages) + len(bos_text) + len(eos_text)
    request = {
        "template": template,
        "messages": messages,
        "bos_token": bos_text,
        "eos_token": eos_text,
        "max_chars": given + TEMPLATE_OVERHEAD_CHARS,
        "memory_bytes": RENDER_MEMORY_BYTES + 16 * (given + len(template)),
        "cpu_s": int(timeout_s) + 1,
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_CODE],
            input=json.dumps(request).encode("ascii"),
            capture_output=True,
            timeout=timeout_s,
            env=rpc.child_env(),
        )
    except subprocess.TimeoutExpired:  # run() has killed the child
        raise ChatTemplateError(
            f"the model's chat template did not finish rendering within {timeout_s:g} s (a chat template "
            "renders in milliseconds): refused"
        ) from None
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        answer = None
    if proc.returncode != 0 or not isinstance(answer, dict):
        raise ChatTemplateError(f"the model's chat template could not be rendered: {_death(proc)}")
    if "error" in answer:
        raise ChatTemplateError(str(answer["error"]))
    return str(answer["text"])


def _death(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"the renderer was killed by {name}" + (" (its CPU-time limit)" if name == "SIGXCPU" else "")
    said = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
    return f"the renderer exited with status {proc.returncode}" + (f": {_one_line(said[-1])}" if said else "")


def _one_line(text: str, limit: int = _MESSAGE_LIMIT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the child -----------------------------------------------------------------------------------------------


def _child_main() -> None:
    """Render the request on stdin; answer {"text": …} or {"error": "one line"} on stdout."""
    request = json.loads(sys.stdin.buffer.read())
    _limit_resources(request["memory_bytes"], request["cpu_s"])
    try:
        answer = {"text": _render_sandboxed(request)}
    except ChatTemplateError as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        answer = {
            "error": f"the model's chat template ran out of memory rendering "
            f"(the renderer may use {request['memory_bytes'] / 2**30:.1f} GiB)"
        }
    except RecursionError:
        answer = {"error": "the model's chat template failed to render: it recursed too deeply"}
    except Exception as exc:  # whatever an untrusted template provokes is its failure
        answer = {"error": f"the model's chat template failed to render: {type(exc).__name__}: {_one_line(str(exc))}"}
    sys.stdout.buffer.write(json.dumps(answer).encode("ascii"))
    sys.stdout.flush()


def _limit_resources(memory_bytes: int, cpu_s: int) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: the parent's wall-clock limit still holds
        return
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_s)):
        _, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        with contextlib.suppress(ValueError, OSError):  # refused: the wall-clock limit still holds
            resource.setrlimit(limit, (value, hard))


def _render_sandboxed(request: dict) -> str:
    from jinja2 import BaseLoader, TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class NoLoader(BaseLoader):
        def get_source(self, environment, template):
            raise ChatTemplateError(
                f"the model's chat template tried to load another template ({_one_line(repr(template), 80)}): "
                "include, import and extends are not allowed"
            )

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(f"the model's chat template refused the conversation: {_one_line(str(message))}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=NoLoader())
    env.globals["raise_exception"] = raise_exception
    max_chars = request["max_chars"]
    pieces: list[str] = []
    n_chars = 0
    try:
        stream = env.from_string(request["template"]).generate(
            messages=request["messages"],
            add_generation_prompt=True,
            bos_token=request["bos_token"],
            eos_token=request["eos_token"],
        )
        for piece in stream:
            n_chars += len(piece)
            if n_chars > max_chars:
                raise ChatTemplateError(
                    f"the model's chat template produced more than {max_chars:,} characters for "
                    f"{max_chars - TEMPLATE_OVERHEAD_CHARS:,} characters of messages: refused"
                )
            pieces.append(piece)
    except SecurityError as exc:
        raise ChatTemplateError(f"the model's chat template tried an unsafe operation: {_one_line(str(exc))}") from None
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template failed to render: {_one_line(str(exc))}") from None
    return "".join(pieces)


def builtin(header: ModelHeader, prompt: str, system: str | None = None) -> str:
    """For files without a template: llama.cpp's own built-in template for the architecture (C code,
    not Jinja), as llama-server would choose it."""
    import llama_cpp

    arch = header.arch.name or ""
    messages = ([("system", system)] if system else []) + [("user", prompt)]
    arr = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(r.encode(), c.encode()) for r, c in messages]
    )
    size = 4 * sum(len(c) for _, c in messages) + 1024
    buf = ctypes.create_string_buffer(size)
    n = -1
    # llama.cpp's names: the architecture itself, or its family without the version ("gemma3" -> "gemma")
    for name in dict.fromkeys([arch, arch.rstrip("0123456789")]):
        n = llama_cpp.llama_chat_apply_template(name.encode(), arr, len(messages), True, buf, size)
        if n > size:
            buf = ctypes.create_string_buffer(n)
            n = llama_cpp.llama_chat_apply_template(name.encode(), arr, len(messages), True, buf, n)
        if n >= 0:
            break
    if n < 0:
        raise ChatTemplateError(
            f"{header.paths[0]} has no chat template ({TEMPLATE_KEY}) and llama.cpp has none "
            f"built in for {header.arch.name!r}; run without --chat"
        )
    return buf.raw[:n].decode("utf-8")
