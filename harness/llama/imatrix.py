"""Importance matrices, computed the way llama.cpp's imatrix tool does and stored in its GGUF format.

Per weight matrix (blk.* tensors used by a matrix multiplication), the sum over tokens of each input
column's squared activation, and the token count: the scheduler's evaluation callback (cb_eval) hands
over every MUL_MAT whose activations are f32 and at least 16 tokens long, as in imatrix.cpp. The
quantizer receives the mean (sum / count) per column through llama_model_quantize_params.imatrix.
The file has general.type = "imatrix", imatrix.datasets / chunk_count / chunk_size, and tensors
"<name>.in_sum2" and "<name>.counts", which llama-quantize --imatrix reads.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.gguf.reader import parse_gguf
from harness.gguf.source import FileSource
from harness.llama import clib
from harness.llama.engine import c_callback, decode_batch, loaded_model
from harness.llama.quality import chunks_of
from harness.llama.reference_parser import lib
from harness.llama.session import Session
from harness.offload.placement import ContextParams

_GGML_MAX_DIMS, _GGML_MAX_SRC, _GGML_MAX_OP_PARAMS, _GGML_MAX_NAME = 4, 10, 64, 64
_F32 = 0


class _Tensor(ctypes.Structure):
    """struct ggml_tensor (ggml.h of the vendored llama.cpp), read-only."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * _GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * _GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (_GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * _GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * _GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


@cache
def _mul_mat_op() -> int:
    so = clib.declare(lib(), {"ggml_op_name": ([ctypes.c_int], ctypes.c_char_p)})
    for op in range(200):
        name = so.ggml_op_name(op)
        if name == b"MUL_MAT":
            return op
    raise HarnessError("this ggml has no MUL_MAT op name: cannot collect an importance matrix")


@dataclass
class ImportanceMatrix:
    sums: dict[str, np.ndarray]  # name -> per input column sum of squared activations (float64)
    counts: dict[str, int]  # name -> tokens seen
    chunk_size: int
    n_chunks: int
    dataset: str

    def means(self) -> dict[str, np.ndarray]:
        return {k: (v / max(self.counts[k], 1)).astype(np.float32) for k, v in self.sums.items()}

    def save(self, path: Path) -> None:
        """llama.cpp's GGUF imatrix format, written under a temporary name and renamed."""
        from gguf import GGUFWriter

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        w = GGUFWriter(tmp, arch="imatrix")
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", [self.dataset])
        w.add_uint32("imatrix.chunk_count", self.n_chunks)
        w.add_uint32("imatrix.chunk_size", self.chunk_size)
        for name in sorted(self.sums):
            w.add_tensor(f"{name}.in_sum2", self.sums[name].astype(np.float32).reshape(1, -1))
            w.add_tensor(f"{name}.counts", np.array([[float(self.counts[name])]], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ImportanceMatrix:

        with FileSource(path) as src:
            f = parse_gguf(src)
        data = np.memmap(path, dtype=np.uint8, mode="r")
        sums, counts = {}, {}
        for t in f.tensors:
            raw = np.frombuffer(data, dtype=np.float32, count=t.n_elements, offset=f.data_offset + t.offset_bytes)
            if t.name.endswith(".in_sum2"):
                sums[t.name.removesuffix(".in_sum2")] = raw.astype(np.float64)
            elif t.name.endswith(".counts"):
                counts[t.name.removesuffix(".counts")] = int(raw[0])
        md = f.metadata
        return cls(
            sums,
            counts,
            md["imatrix.chunk_size"].value,
            md["imatrix.chunk_count"].value,
            (md["imatrix.datasets"].value.decode() or [""])[0],
        )


def compute(
    path: str,
    text: str,
    dataset: str,
    n_ctx: int = 512,
    max_chunks: int = 16,
    progress: Callable[[str], None] = lambda m: None,
) -> ImportanceMatrix:
    """Run ``text`` through the model in chunks of n_ctx tokens (on the CPU) and collect the matrix."""
    import llama_cpp

    op = _mul_mat_op()
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    @c_callback  # a Ctrl-C while llama.cpp calls this is raised once it returns, not lost in ctypes
    def collect(t_ptr: int, ask: bool, _: int) -> bool:
        t = _Tensor.from_address(t_ptr)
        if t.op != op or not t.src[0] or not t.src[1]:
            return not ask
        w = _Tensor.from_address(t.src[0])
        x = _Tensor.from_address(t.src[1])
        name = w.name.decode(errors="replace")
        if ask:
            return x.ne[1] >= 16 and x.type == _F32 and name.startswith("blk.")
        ne0, rows = x.ne[0], x.ne[1] * x.ne[2] * x.ne[3]
        if x.ne[2] * x.ne[3] != 1 or not x.data:
            return True  # 3-d activations (experts) are not collected here
        span = int(x.nb[1]) * (int(x.ne[1]) - 1) + int(ne0) * 4
        buf = (ctypes.c_char * span).from_address(x.data)
        act = np.ndarray((int(x.ne[1]), int(ne0)), dtype=np.float32, buffer=buf, strides=(int(x.nb[1]), 4))
        acc = sums.get(name)
        sq = np.square(act, dtype=np.float64).sum(axis=0)
        sums[name] = sq if acc is None else acc + sq
        counts[name] = counts.get(name, 0) + int(rows)
        return True

    callback = llama_cpp.ggml_backend_sched_eval_callback(collect)
    n_chunks = 0
    with loaded_model(path, 0, n_ctx, (), n_batch=n_ctx, n_ubatch=n_ctx, flash_attn=True, cb_eval=callback) as lm:
        s = Session(lm, ContextParams(n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx), None, path, ())
        api = lm.llama_cpp
        for i, chunk in enumerate(chunks_of(s, text, n_ctx, max_chunks)):
            progress(f"imatrix: chunk {i + 1}")
            s.clear()
            # logits for every token, as imatrix.cpp asks: otherwise llama.cpp trims the last layer to the
            # rows that produce outputs and its feed-forward matrices would see one token
            if decode_batch(api, lm.ctx, chunk, lambda _: True) != 0:
                raise HarnessError("llama_decode failed while collecting the importance matrix")
            n_chunks += 1
    if not sums:
        raise HarnessError("no matrix multiplication was observed: the importance matrix is empty")
    return ImportanceMatrix(sums, counts, n_ctx, n_chunks, dataset)


def quantize_params_imatrix(im: ImportanceMatrix, keep: list) -> object:
    """A NULL-terminated llama_model_imatrix_data array for llama_model_quantize_params.imatrix;
    ``keep`` holds the buffers alive for the duration of the call."""
    import llama_cpp

    means = im.means()
    entries = (llama_cpp.llama_model_imatrix_data * (len(means) + 1))()
    for entry, (name, values) in zip(entries, sorted(means.items())):
        raw = name.encode()
        keep += [values, raw]
        entry.name = raw
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    keep.append(entries)
    return entries
