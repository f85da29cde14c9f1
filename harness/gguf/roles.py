"""Which of llama.cpp's offloadable layers each tensor is loaded with, and when the output is tied.

llama.cpp gives every tensor a layer kind (llama-arch.cpp LLM_TENSOR_INFOS) and loads it into that
layer's device context (llama-model.cpp load_tensors). n_gpu_layers counts n_layer + 1 layers: the
repeating blocks ``blk.N`` and the output layer, the "+1" (``output.weight``, ``output_norm``, a
classifier's ``cls*``). Input tensors (``token_embd``, position and token-type embeddings) stay on the
host. ``rope_freqs`` is counted with the first block; llama.cpp creates it with every block (a
duplicate after block 0), so a further device holding blocks gets a copy of its own, which is not
modelled (measured: 8 KiB more on RPC0 holding blocks 2-3 of 4, head size 4096). A model without
``output.weight`` has its output tied to the token embeddings: the loader copies ``token_embd`` to the
output layer's device (SmolLM2: token_embd's 28.69 MiB on RPC0 at 1 layer), and the quantizer gives it
the output rules.

Placement, the solver's layer costs, the speed model and the bench's bytes per token all read these
rules from here.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.gguf import ggml_types
from harness.gguf.header import ModelHeader
from harness.gguf.reader import TensorInfo

TOKEN_EMBD = "token_embd.weight"
OUTPUT_WEIGHT = "output.weight"
_OUTPUT_LAYER_PREFIXES = ("output", "cls")  # output.weight, output_norm.*, cls.*, cls.output.*
_FIRST_LAYER_TENSORS = ("rope_freqs.weight",)


def offload_layer(tensor: TensorInfo, n_layer: int) -> int | None:
    """The layer a tensor is loaded with, counted as n_gpu_layers counts them: N for a tensor of block
    ``blk.N``, 0 for rope_freqs, ``n_layer`` for the output layer's; None for input tensors, which stay
    on the host."""
    if tensor.layer is not None:
        return tensor.layer
    if tensor.name.startswith(_OUTPUT_LAYER_PREFIXES):
        return n_layer
    if tensor.name in _FIRST_LAYER_TENSORS:
        return 0
    return None


def has_tied_output(tensor_names: Iterable[str]) -> bool:
    """True when there is no ``output.weight``: the output layer multiplies by the token embeddings."""
    return OUTPUT_WEIGHT not in tensor_names


def tied_embedding(header: ModelHeader) -> TensorInfo | None:
    """The ``token_embd`` tensor that the output layer reuses (llama.cpp loads a copy of it on the output
    layer's device), or None when the model has its own output weight (or no embeddings)."""
    if not has_tied_output(t.name for t in header.tensors):
        return None
    return header.tensor(TOKEN_EMBD)


def layer_weights_bytes(header: ModelHeader, alignment: int = 32) -> list[int]:
    """Weight bytes each of the n_layer + 1 offloadable layers brings to an offload device (the output
    layer last, with the tied embedding copy), each tensor padded to ``alignment`` as a ggml backend
    buffer pads it (32 for CPU and RPC)."""
    n_layer = header.arch.n_layer
    out = [0] * (n_layer + 1)
    for t in header.tensors:
        il = offload_layer(t, n_layer)
        if il is not None:
            out[il] += ggml_types.pad(t.n_bytes, alignment)
    embd = tied_embedding(header)
    if embd is not None:
        out[n_layer] += ggml_types.pad(embd.n_bytes, alignment)
    return out


def embedding_bytes_not_read(header: ModelHeader, output_on_host: bool) -> int:
    """Bytes of ``token_embd`` that generation does not read per token: all of it (a row lookup), unless
    it is also the tied output weight on the host, which reads it whole."""
    embd = header.tensor(TOKEN_EMBD)
    if embd is None or (output_on_host and tied_embedding(header) is not None):
        return 0
    return embd.n_bytes
