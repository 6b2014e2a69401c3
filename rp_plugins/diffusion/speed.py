"""Speed levers for the SDXL UNet, each one measured in benchmarks/RESULTS.md.

CUDA graph replay leaves the computed function unchanged (the same kernels run); regional
compilation changes it by fp16 rounding only (fused elementwise kernels); fp8 matmuls
(row-scaled, fp8.py) are opt-in, with their numeric difference reported.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Class name of the UNet's repeated transformer block (70 instances in SDXL, of two shapes).
TRANSFORMER_BLOCK = "BasicTransformerBlock"


def compile_transformer_blocks(unet: Any, backend: str = "inductor") -> int:
    """Regional compilation: torch.compile each repeated transformer block of the UNet, not the whole UNet.

    The 70 blocks of SDXL come in two shapes, so compiling takes seconds instead of the minutes
    a whole-UNet compile takes, and most of its gain comes with it: the blocks' layer norms,
    GEGLU and residual adds become a few fused kernels. Shapes are static (one compile per
    block shape and batch size). Returns the number of blocks compiled.
    """
    compiled = 0
    for module in unet.modules():
        if type(module).__name__ == TRANSFORMER_BLOCK:
            module.compile(dynamic=False, backend=backend)
            compiled += 1
    return compiled


def persist_compile_cache(folder: Path) -> bool:
    """Keep inductor's compiled kernels (and Triton's) in `folder`, unless the user chose a place; True when set.

    torch's default is a folder under /tmp, which does not outlive a reboot or a fresh container; beside the
    models, a later process finds the blocks' kernels compiled. Importing diffusers already writes torch's
    default into TORCHINDUCTOR_CACHE_DIR, so only a value other than that default counts as the user's choice.
    Inductor reads the variable at each compile: setting it before the first compile is enough.
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        torch_default = os.path.abspath(default_cache_dir())
    except ImportError:  # another torch layout: only an unset variable is ours to set
        torch_default = None
    if current is not None and os.path.abspath(current) != torch_default:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False  # nowhere to keep it: torch's default stays
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return True


@contextlib.contextmanager
def compiled_regions(enabled: bool) -> Iterator[None]:
    """Run compiled blocks compiled (True) or as their plain eager code (False), e.g. per batch size.

    torch before 2.6 has no compile stances: there, every call runs compiled (one more compile per shape).
    """
    import torch

    if enabled or not hasattr(torch.compiler, "set_stance"):
        yield
        return
    with torch.compiler.set_stance("force_eager"):
        yield


def pad_faces(fixed_batch: int | None, latents: Any, identity_uncond: Any, identity_cond: Any, timestep: Any) -> tuple:
    """Repeat the last face so a partial batch keeps the one shape a compiled UNet was built for.

    Returns (latents, identity_uncond, identity_cond, timestep, padded batch). A per-row
    timestep (several timesteps in one call) is padded too; a scalar one is left as it is.
    """
    import torch

    batch = latents.shape[0]
    extra = max(batch, fixed_batch or 0) - batch
    if extra == 0:
        return latents, identity_uncond, identity_cond, timestep, batch

    def repeat_last(tensor: Any) -> Any:
        return torch.cat([tensor, tensor[-1:].expand(extra, *tensor.shape[1:])])

    if timestep.ndim == 1:
        timestep = repeat_last(timestep)
    return repeat_last(latents), repeat_last(identity_uncond), repeat_last(identity_cond), timestep, batch + extra


def unpad_noise(noise: Any, batch: int) -> Any:
    """The real faces' rows of a padded two-branch prediction (unconditional rows first, then conditional)."""
    import torch

    padded = noise.shape[0] // 2
    if padded == batch:
        return noise
    return torch.cat([noise[:batch], noise[padded : padded + batch]])


def quantize_linear_fp8_rowwise(unet: Any, fast_accumulation: bool = False) -> int:
    """Replace the transformer blocks' per-pixel linears (fp8.FP8_ROWWISE_LAYERS) by `RowwiseFp8Linear`s.

    Needs a GPU with fp8 matrix units (compute capability 8.9+) and no extra package. `fast_accumulation`
    lets cuBLAS keep partial sums at the fp8 kernels' own precision (3 % faster at batch 8 on an H200, the same
    error against fp32 within 4 %: benchmarks/RESULTS.md). Returns the count.
    """
    import torch

    from rp_plugins.diffusion.fp8 import FP8_ROWWISE_LAYERS, RowwiseFp8Linear

    chosen = [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear)
        and "transformer_blocks" in name
        and name.endswith(FP8_ROWWISE_LAYERS)
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    ]
    for name, module in chosen:
        parent, _, leaf = name.rpartition(".")
        setattr(unet.get_submodule(parent), leaf, RowwiseFp8Linear(module, fast_accumulation))
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
