"""Helpers shared by the tests: GGUF writers, a loopback Hub, the malformed-file table, and what the
engine and the real models need. Imported as ``tests.support.<module>`` (pytest's pythonpath is the
repository root)."""
