"""Floor 2, llama.cpp's quantizer without running it: its per-tensor type rules (llama-quant.cpp,
ported) and the exact size of any header at any quant level."""
