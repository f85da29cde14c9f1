"""Floor 4, the engine: the one package that drives llama.cpp (llama-cpp-python, and ggml through
ctypes), always imported lazily by what sits above. Loads on chosen devices with llama.cpp's own
buffer report, RPC servers and devices, sessions, chat templates, the bench loop, quality scores,
importance matrices, and llama.cpp's C GGUF parser as a reference."""
