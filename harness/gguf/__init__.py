"""Floor 1, bytes -> header: the GGUF format's tables (from gguf-py), a streaming strict reader,
ModelHeader with typed accessors, split shards, tensor roles, and headers built from a published
architecture. Imports nothing above itself and neither numpy nor llama.cpp."""
