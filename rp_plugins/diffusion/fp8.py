"""fp8 (e4m3) linears with one scale per weight row and one per input row: the opt-in `fp8row` lever.

Imported only when that lever is used (it imports torch at the top). One class for every layer, so a
compiled transformer block sees the same module type in all 70 blocks and compiles once per shape.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

#: Largest finite value of float8 e4m3 (the format of both operands here).
FP8_E4M3_MAX = 448.0

#: The transformer linears whose inputs have one row per latent pixel (the matmuls that cost):
#: self-attention's projections, cross-attention's query and output, the feed-forward pair.
#: Cross-attention's keys and values see 77 text tokens (or 4 identity tokens) and stay in 16 bits.
FP8_ROWWISE_LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0",
                      "ff.net.0.proj", "ff.net.2")  # fmt: skip


@functools.cache
def rowwise_output_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """`dtype` where this torch's row-scaled fp8 matmul can write it, else bfloat16 (some builds allow no other)."""
    probe = torch.zeros(16, 16, device=device).to(torch.float8_e4m3fn)
    scale = torch.ones(16, 1, device=device)
    try:
        torch._scaled_mm(probe, probe.t(), scale_a=scale, scale_b=scale.t(), out_dtype=dtype)
    except RuntimeError:
        return torch.bfloat16
    return dtype


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / scale as e4m3, scale) with one float32 scale per row, so each row's largest value maps to 448."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_E4M3_MAX
    return (x.float() / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn), scale


class RowwiseFp8Linear(torch.nn.Module):
    """A Linear computing in fp8: weight quantized once per output channel, input per token at each call.

    The input's per-row scale is a reduction along the row, which a compiled block fuses into the kernel
    that produces the input (the layer norm or GEGLU before it); a per-tensor scale (torchao's only choice
    for fp16 weights) needs the whole tensor's maximum before any element can be cast. The matmul is
    `torch._scaled_mm` (cuBLAS fp8), written in the layer's 16-bit dtype. It changes the numbers
    (benchmarks/RESULTS.md gives by how much), so it is opt-in only.
    """

    weight_t: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear, fast_accumulation: bool = False) -> None:
        super().__init__()
        weight = linear.weight.detach()
        quantized, scale = quantize_rows(weight)
        self.register_buffer("weight_t", quantized.t())  # column-major (K, N), as _scaled_mm wants it
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, N)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        self.dtype = weight.dtype
        self.out_dtype = rowwise_output_dtype(weight.dtype, weight.device)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.fast_accumulation = fast_accumulation

    def forward(self, x: torch.Tensor) -> Any:
        quantized, scale = quantize_rows(x.reshape(-1, self.in_features))
        out = torch._scaled_mm(
            quantized,
            self.weight_t,
            scale_a=scale,
            scale_b=self.weight_scale,
            out_dtype=self.out_dtype,
            use_fast_accum=self.fast_accumulation,
        )
        if self.bias is not None:
            out = out + self.bias
        return out.to(self.dtype).reshape(*x.shape[:-1], self.out_features)
