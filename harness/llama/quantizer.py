"""llama.cpp's quantizer (llama_model_quantize): the file it writes defines what a quant file contains."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.llama.engine import LogCapture, captured_log
from harness.llama.imatrix import ImportanceMatrix, quantize_params_imatrix
from harness.quant.rules import file_type


def quantize(
    source: Path,
    target: Path,
    quant: str,
    imatrix: ImportanceMatrix | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> None:
    """Quantize ``source`` to ``quant`` at ``target`` (requantizing when ``source`` is itself quantized),
    written under a temporary name and renamed when complete; llama.cpp's own reason when it refuses."""
    import llama_cpp

    tmp = target.with_name(target.name + ".part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(file_type(quant))  # gguf's LlamaFileType values are llama.cpp's LLAMA_FTYPE_*
    params.allow_requantize = True
    keep: list = []  # the C arrays of the importance matrix live until the quantizer returns
    if imatrix is not None:
        params.imatrix = ctypes.cast(quantize_params_imatrix(imatrix, keep), type(params.imatrix))
    log(f"{quant}: quantizing {source.name} with llama.cpp" + (" and the importance matrix" if imatrix else ""))
    capture = LogCapture()
    with captured_log(capture):
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        reasons = "; ".join(capture.errors()[:3]) or "no reason logged"
        raise HarnessError(f"llama.cpp could not quantize {source.name} to {quant}: {reasons}")
    tmp.replace(target)
