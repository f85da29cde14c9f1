"""One error hierarchy. Library code raises these; the CLI maps them to one-line messages."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness reports to a user. The message says what and what to do."""

    exit_code = 1


class GGUFError(HarnessError):
    """A GGUF file (or set of split shards) is malformed, inconsistent or unreadable.

    Messages name the file, the field, the byte offset and the offending value.
    """

    exit_code = 2


class ModelNotFoundError(HarnessError):
    """A model name resolves to nothing: not a path, not in the registry, or not installed."""

    exit_code = 3


class RegistryError(HarnessError):
    """models.toml (or another data file) is invalid."""

    exit_code = 4


class AssetError(HarnessError):
    """A packaged model could not be fetched, assembled or verified."""

    exit_code = 5
