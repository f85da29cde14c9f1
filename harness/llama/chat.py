"""Chat templates from GGUF files, rendered only in a sandbox: the template is untrusted input."""

from __future__ import annotations

import ctypes

from harness.errors import ChatTemplateError
from harness.gguf.header import ModelHeader

TEMPLATE_KEY = "tokenizer.chat_template"


def render(header: ModelHeader, prompt: str, system: str | None = None, bos_text: str = "", eos_text: str = "") -> str:
    """The prompt as the model's own chat template lays it out, ready for the model to answer."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    template = header.get(TEMPLATE_KEY)
    if not isinstance(template, str) or not template.strip():
        return builtin(header, prompt, system)

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(f"the model's chat template refused the conversation: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=bos_text, eos_token=eos_text
        )
    except SecurityError as exc:
        raise ChatTemplateError(f"the model's chat template tried an unsafe operation: {exc}") from None
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template failed to render: {exc}") from None


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
