"""Every error the harness reports, and the one table of exit codes (documented in README.md).

Library code raises these; the click group (harness.cli) maps each to one line on stderr and its exit
code. Nothing else reaches a user: a bare exception is a bug of ours and says so (exit 70).
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness reports to a user. The message says what and what to do."""

    exit_code = 1


class UsageError(HarnessError):
    """An option or argument value the library cannot work with (a size, a count, a KV type, a file)."""

    exit_code = 2


class GGUFError(HarnessError):
    """A GGUF file (or set of split shards) is malformed, inconsistent or unreadable.

    Messages name the file, the field, the byte offset and the offending value.
    """

    exit_code = 2


class ModelNotFoundError(HarnessError):
    """A model name resolves to nothing: not a path, not in the registry, or not installed."""

    exit_code = 3


class RegistryError(HarnessError):
    """models.toml or hardware.toml (or another data file) is invalid."""

    exit_code = 4


class AssetError(HarnessError):
    """A packaged model could not be fetched, assembled or verified."""

    exit_code = 5


class QuantRuleError(HarnessError):
    """llama.cpp would refuse to quantize this model to this file type; the message says why."""


class EngineError(HarnessError):
    """llama.cpp refused to load a model or create a context; the message carries its own reason."""

    exit_code = 6


class ChatTemplateError(HarnessError):
    """A model's chat template is missing, malformed, or tried something the sandbox forbids."""


class RpcError(HarnessError):
    """The RPC server could not be started, reached, or stopped."""


class HubError(HarnessError):
    """The Hub refused or failed; the message says what to do next."""

    exit_code = 7


class WontFitError(HarnessError):
    """The plan says the model cannot run here (and --force was not given)."""

    exit_code = 10


class CannotRunHere(WontFitError):
    """A bench that cannot run here; the message is the full text of what it would take (a result,
    printed on stdout, not an error line)."""


INTERNAL_ERROR_EXIT_CODE = 70  # a bug of ours (BSD's EX_SOFTWARE); HARNESS_DEBUG=1 shows the traceback
INTERRUPTED_EXIT_CODE = 130  # Ctrl-C, as a shell reports SIGINT

# The whole table, most specific first, as README.md documents it.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (
        1,
        "an error the harness reports with no code of its own: a quant llama.cpp would refuse, a chat "
        "template, an RPC server (its message says what to do)",
    ),
    (2, "malformed input: a GGUF file, or an option or argument (click's usage errors too)"),
    (3, "model not found: not a path, not in the registry, or not installed"),
    (4, "invalid registry or hardware profiles (models.toml, hardware.toml)"),
    (5, "a packaged model could not be fetched, assembled or verified"),
    (6, "llama.cpp refused to load the model or create its context, or aborted (its own reason follows)"),
    (7, "the Hugging Face Hub refused or failed"),
    (10, "the model does not fit or cannot run here (bench prints what it would take)"),
    (INTERNAL_ERROR_EXIT_CODE, "internal error: a bug of ours"),
    (INTERRUPTED_EXIT_CODE, "interrupted (Ctrl-C)"),
)
