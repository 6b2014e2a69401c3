"""One way to open an onnxruntime session on a model file or its bytes (the plugins' cached, derived networks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def onnx_session(model: Path | bytes, providers: list[Any], threads: int, *, memory_patterns: bool = True) -> Any:
    """An onnxruntime session of `model` on `providers`, `threads` intra-op threads (0: onnxruntime's default).

    `memory_patterns=False` for networks fed many input sizes: a pattern's buffers fit one size, and every new
    size allocated them again.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_mem_pattern = memory_patterns
    if threads:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model
    return onnxruntime.InferenceSession(source, sess_options=options, providers=providers)
