"""Which torch device a run's `runtime.device` names: the one place that decides it.

"auto" is the first CUDA GPU when torch sees one, else the CPU; an explicit CUDA device that
does not exist is a DeviceError naming the setting. torch is imported only when called.
"""

from __future__ import annotations

from typing import Any

from rp_core.errors import DeviceError


def resolve_torch_device(device: str) -> Any:
    """A `torch.device` for `runtime.device` ("auto", "cpu", "cuda", "cuda:N", "mps")."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"runtime.device={device!r}, but this torch build sees no CUDA GPU; use --device cpu or auto"
            )
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"runtime.device={device!r}, but only {torch.cuda.device_count()} CUDA device(s) exist")
        resolved = torch.device("cuda", index)
    return resolved


def onnx_providers(device: str) -> list[Any]:
    """onnxruntime execution providers for `runtime.device`, never onnxruntime's implicit choice.

    CUDA on the GPU `cuda:N` names when the run asks for it (or "auto") and the installed onnxruntime has it;
    the CPU otherwise. `pip install onnxruntime` is CPU-only, so an explicit `--device cuda` (meant for the
    diffusion models) runs the small ONNX models on the CPU rather than failing; onnxruntime-gpu moves them.
    """
    import onnxruntime

    if device.startswith("cuda") or device == "auto":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
