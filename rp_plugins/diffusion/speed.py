"""Speed levers for the SDXL UNet, each one measured in benchmarks/RESULTS.md.

CUDA graph replay leaves the computed function unchanged (the same kernels run); fp8
matmuls are opt-in, with their numeric difference reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def quantize_linear_fp8(unet: Any) -> int:
    """fp8 (e4m3) weights and dynamically scaled fp8 activations for the transformer linears.

    Opt-in only: it changes the numbers (RESULTS.md reports by how much). Needs torchao and a GPU
    with fp8 matrix units (compute capability 8.9+). Convolutions and the small embedding layers stay
    in 16 bits. Returns the number of layers quantized.
    """
    import torch
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    chosen: list[str] = []

    def wanted(module: Any, name: str) -> bool:
        ok = isinstance(module, torch.nn.Linear) and "transformer_blocks" in name
        ok = ok and module.in_features % 16 == 0 and module.out_features % 16 == 0
        if ok:
            chosen.append(name)
        return ok

    # torchao scales per row only from bf16 weights; fp16 models get one scale per tensor
    granularity = PerRow() if unet.dtype == torch.bfloat16 else PerTensor()
    quantize_(unet, Float8DynamicActivationFloat8WeightConfig(granularity=granularity), filter_fn=wanted)
    return len(chosen)


def call_unet(
    unet: Callable[..., Any],
    sample: Any,
    timestep: Any,
    encoder_hidden_states: Any,
    text_embeds: Any,
    time_ids: Any,
    image_embeds: Any,
) -> Any:
    """One SDXL + FaceID UNet evaluation: the noise prediction for every row of `sample`."""
    return unet(
        sample,
        timestep,
        encoder_hidden_states=encoder_hidden_states,
        added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids, "image_embeds": [image_embeds]},
        return_dict=False,
    )[0]


class GraphCaptureError(RuntimeError):
    """The UNet could not be captured as a CUDA graph (the caller falls back to plain calls)."""


class CudaGraphUnet:
    """Replays a captured CUDA graph of the UNet per input shape instead of launching its kernels one by one.

    The denoising loop calls the UNet with the same shapes hundreds of times; replaying a graph
    removes the Python and launch cost of its thousands of kernels, which dominates when few
    faces share a call. The graph runs the very kernels the eager call runs. Inputs are copied
    into the graph's static buffers. Python-side state the UNet reads (the IP-Adapter scale) is
    baked into a capture, so callers pass it as `state` and a new value gets its own graph.

    All graphs share one memory pool: only their outputs outlive a replay, and each call clones
    its output right after its own replay, so reusing one graph's dead intermediates in another
    is safe in any replay order.
    """

    def __init__(self, unet: Callable[..., Any], warmup: int = 2) -> None:
        self.unet = unet
        self.warmup = warmup
        self._graphs: dict[tuple[Any, ...], tuple[Any, dict[str, Any], Any]] = {}
        self._pool: Any = None

    def __call__(
        self,
        sample: Any,
        timestep: Any,
        encoder_hidden_states: Any,
        text_embeds: Any,
        time_ids: Any,
        image_embeds: Any,
        state: tuple[Any, ...] = (),
    ) -> Any:
        import torch

        inputs = {
            "sample": sample,
            "timestep": timestep.reshape(-1).expand(sample.shape[0]).contiguous(),
            "encoder_hidden_states": encoder_hidden_states,
            "text_embeds": text_embeds,
            "time_ids": time_ids,
            "image_embeds": image_embeds,
        }
        key = (*((name, tuple(t.shape), t.dtype, t.device) for name, t in inputs.items()), state)
        with torch.cuda.device(sample.device):  # streams and the pool belong to the model's GPU, not GPU 0
            if key not in self._graphs:
                try:
                    self._graphs[key] = self._capture(inputs)
                except Exception as exc:
                    raise GraphCaptureError(
                        f"CUDA graph capture of the UNet failed ({type(exc).__name__}: {exc})"
                    ) from exc
            graph, static, output = self._graphs[key]
            for name, tensor in inputs.items():
                static[name].copy_(tensor)
            graph.replay()
            return output.clone()  # the next replay overwrites the static output

    def _capture(self, inputs: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
        import torch

        static = {name: tensor.clone() for name, tensor in inputs.items()}
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup):  # kernels pick their algorithms (and compiled code compiles) outside capture
                call_unet(self.unet, **static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
            output = call_unet(self.unet, **static)
        return graph, static, output
