"""Floor 3, bytes per device: hardware profiles, where llama.cpp places weights and KV cache, compute
buffers, the n_gpu_layers solver with its speed model, and advice when a model does not fit."""
