"""llama.cpp's log as the engine report reads it: parsed without loading the engine."""

from __future__ import annotations

from harness.llama.engine import LogCapture, parse_log


def test_log_capture_joins_continuations_and_drops_debug() -> None:
    capture = LogCapture()
    capture.feed(2, "load_tensors: offloaded 3/31 layers to GPU\n")
    capture.feed(1, "create_tensor: debug\n")
    capture.feed(2, "llama_model_load: loading")
    capture.feed(5, ".")
    capture.feed(5, ".\n")
    capture.feed(2, "sched_reserve:        CPU compute buffer size =    46.38 MiB\n")
    capture.flush()
    assert capture.text_lines() == (
        "load_tensors: offloaded 3/31 layers to GPU",
        "llama_model_load: loading..",
        "sched_reserve:        CPU compute buffer size =    46.38 MiB",
    )
    parsed = parse_log(capture.text_lines())
    assert parsed.buffers["CPU"] == {"compute_mib": 46.38, "compute_bytes": round(46.38 * 2**20)}
    assert (parsed.n_layers_offloaded, parsed.n_layers_total) == (3, 31)
