"""One guided UNet call (both branches, full-size random SDXL + fused FaceID) under each speed lever.

Each lever is applied alone to the eager fp16 UNet unless its name joins several with '+'.
`graph` (CUDA graph replay), `regional` (each transformer block compiled on its own) and `fp8row`/`fp8fast`
(row-scaled fp8 linears, without/with fast accumulation; `runtime.fp8` is `fp8fast`) are the product's own code
(rp_plugins.diffusion.speed); `fp8` is torchao's per-tensor fp8 and `sage` SageAttention for self-attention;
`cudnn` (prefer cuDNN's attention kernel) and `qkv` (one matmul for Q/K/V of each self-attention)
were measured here and left out of the product because they gained nothing (RESULTS.md).
Prints the median ms per call, the plain-UNet TFLOP/s it implies, the setup time (compiling,
graph capture) and the max difference of the noise prediction from the eager call. With
--profile, a per-kernel-class breakdown of one call under the named levers.

    python -m benchmarks.unet_levers --batch 8 --levers eager,cudnn,qkv,graph,compile,compile+cudnn
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARTS = (
    "cudnn", "qkv", "graph", "compile", "tuned", "fp8", "regional", "resnets", "dynres", "cl", "sage", "fp8row", "fp8fast",
)  # fmt: skip
DEFAULT_LEVERS = "eager,cudnn,qkv,graph"


@contextlib.contextmanager
def prefer_cudnn_attention(enabled: bool) -> Iterator[None]:
    """cuDNN's fused attention first in PyTorch's kernel order (torch.compile bakes in the choice it traced)."""
    if not enabled:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(order, set_priority=True):
        yield


def fuse_self_attention_projections(unet: Any) -> int:
    """One matmul for Q, K and V of every plain self-attention (FaceID's cross-attention processors stay)."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0

    merged = 0
    for module in unet.modules():
        if isinstance(module, Attention) and not module.is_cross_attention:
            if type(module.processor) is AttnProcessor2_0:
                module.fuse_projections()
                module.set_processor(FusedAttnProcessor2_0())
                merged += 1
    return merged


class SageSelfAttention:
    """Self-attention (attn1 of the transformer blocks) through SageAttention's kernel: 8-bit Q.K, fp16 P.V.

    Measured only (RESULTS.md). The projections, head split and output projection are those the default
    processor computes; only the attention kernel differs. Cross-attention keeps PyTorch's SDPA.
    """

    def __init__(self) -> None:
        from sageattention import sageattn

        self.kernel = sageattn

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None, attention_mask: Any = None,
                 temb: Any = None, **_: Any) -> Any:  # fmt: skip
        batch, tokens, _channels = hidden_states.shape
        heads = attn.heads
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        split = [t.view(batch, tokens, heads, t.shape[-1] // heads) for t in (query, key, value)]
        out = self.kernel(*split, tensor_layout="NHD", is_causal=False).reshape(batch, tokens, -1)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def use_sage_attention(unet: Any) -> int:
    """SageSelfAttention for every plain self-attention of the UNet's transformer blocks; returns the count."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    processor, swapped = SageSelfAttention(), 0
    for name, module in unet.named_modules():
        plain = isinstance(module, Attention) and not module.is_cross_attention and name.endswith("attn1")
        plain = plain and type(module.processor) is AttnProcessor2_0
        if plain and module.group_norm is None and module.spatial_norm is None and module.norm_q is None:
            module.set_processor(processor)
            swapped += 1
    return swapped


def quantize_linear_fp8(unet: Any) -> int:
    """torchao's fp8 (the `fp8` lever; the product's runtime.fp8 is row-scaled instead, rp_plugins/diffusion/fp8.py).

    fp8 (e4m3) weights and dynamically scaled fp8 activations for the transformer linears, per-tensor scales for
    fp16 weights. Needs torchao. Returns the number of layers quantized.
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


def kernel_class(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("triton"):
        return "fused elementwise/norm (triton)"
    if any(k in lowered for k in ("flash", "fmha", "sdpa", "attention", "attn")):
        return "attention"
    if any(k in lowered for k in ("conv", "fprop", "implicit", "dgrad", "wgrad")):
        return "convolution"
    if any(k in lowered for k in ("gemm", "cutlass", "xmma", "nvjet", "matmul", "_mm_", "scaled_mm")):
        return "matmul"
    return "other (eager elementwise, norm, copies)"


def profile_call(call: Any, label: str) -> dict[str, Any]:
    """GPU time of one call split by kernel class, and the top kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    classes: dict[str, float] = {}
    kernels = []
    for event in prof.key_averages():
        ms = float(getattr(event, "self_device_time_total", 0.0)) / 1000
        if ms <= 0 or event.key.startswith(("aten::", "cuda", "Activity Buffer")):
            continue
        classes[kernel_class(event.key)] = classes.get(kernel_class(event.key), 0.0) + ms
        kernels.append((ms, event.count, event.key[:110]))
    total = sum(classes.values())
    print(f"\nprofile [{label}]: {total:.1f} ms of kernels in one call")
    for name, ms in sorted(classes.items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {ms:7.1f} ms  {100 * ms / total:5.1f}%")
    print("  top kernels:")
    for ms, count, key in sorted(kernels, reverse=True)[:15]:
        print(f"    {ms:7.2f} ms  x{count:<4d} {key}")
    return {"total_ms": total, "classes": classes, "top": sorted(kernels, reverse=True)[:30]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("/tmp/rp-full-random"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--levers", default=DEFAULT_LEVERS, help=f"comma list; each a '+' join of {PARTS} or 'eager'")
    parser.add_argument("--profile", default="", help="comma list of levers to profile")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--fp32-reference", action="store_true", help="also each lever's difference from fp32")
    args = parser.parse_args()

    import torch

    from benchmarks.full_size import PLAIN_UNET_TFLOP, ensure_random_models, unet_call_ms
    from rp_core.interfaces import RuntimeContext
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle
    from rp_plugins.diffusion.speed import compile_transformer_blocks, quantize_linear_fp8_rowwise

    ensure_random_models(args.models)
    options = InverterOptions(
        sd_model=str(args.models / "sdxl"),
        ip_adapter=str(args.models / "faceid" / "ip-adapter-faceid_sdxl.bin"),
    )
    # plain calls, and the eager reference: `regional` compiles a copy
    context = RuntimeContext(device="cuda", dtype="float16", cuda_graphs=False, compile_blocks=False)
    bundle = load_bundle(options, context)
    eager_unet = bundle.pipe.unet
    generator = torch.Generator().manual_seed(0)
    latent = eager_unet.config.sample_size
    x = torch.randn(args.batch, 4, latent, latent, generator=generator).cuda()
    ids = torch.randn(args.batch, 1, 512, generator=generator).cuda()
    text = bundle.prompt_conditioning(None)

    cudnn = False

    def call() -> Any:
        with prefer_cudnn_attention(cudnn):
            return bundle.guided_noise(x, torch.tensor(299, device="cuda"), text, torch.zeros_like(ids), ids, -10.0)

    reference = call()
    scale = float(reference.abs().max())
    exact = None
    if args.fp32_reference:  # the same call in fp32: each lever's error next to plain fp16's own (the noise floor)
        bundle.pipe.unet, bundle.dtype = copy.deepcopy(eager_unet).float(), torch.float32
        bundle._size_conditioning.clear()
        exact = call()
        bundle.pipe.unet, bundle.dtype = eager_unet, torch.float16
        bundle._size_conditioning.clear()
        torch.cuda.empty_cache()
        floor = float((reference - exact).abs().max())
        print(f"eager fp16 vs fp32: max|diff| {floor:.3g} ({floor / scale:.2g} of max|eps|)", flush=True)
    to_profile = set(filter(None, args.profile.split(",")))
    results: dict[str, Any] = {"card": torch.cuda.get_device_name(0), "batch": args.batch, "levers": {}}
    print(f"card {results['card']}, torch {torch.__version__}, batch {args.batch} faces ({2 * args.batch} rows)")
    for lever in args.levers.split(","):
        parts = set(lever.split("+")) - {"eager"}
        unknown = parts - set(PARTS)
        if unknown:
            raise SystemExit(f"unknown lever part(s) {sorted(unknown)}; known: {PARTS}")
        torch._dynamo.reset()
        bundle.cuda_graphs = "graph" in parts
        cudnn = "cudnn" in parts
        bundle._graphed = None
        unet = eager_unet
        setup_s = 0.0
        start = time.perf_counter()
        if parts & {"qkv", "fp8", "regional", "resnets", "dynres", "cl", "sage", "fp8row", "fp8fast"}:
            unet = copy.deepcopy(eager_unet)
            if "qkv" in parts:
                print(f"  merged Q/K/V of {fuse_self_attention_projections(unet)} self-attentions", flush=True)
            if "fp8" in parts:
                print(f"  {quantize_linear_fp8(unet)} linear layers in fp8", flush=True)
            if parts & {"fp8row", "fp8fast"}:
                count = quantize_linear_fp8_rowwise(unet, fast_accumulation="fp8fast" in parts)
                print(f"  {count} linear layers in rowwise fp8", flush=True)
            if "sage" in parts:
                print(f"  {use_sage_attention(unet)} self-attentions through SageAttention", flush=True)
            if "cl" in parts:  # channels-last: no NCHW<->NHWC conversions around cuDNN's convolutions
                unet.to(memory_format=torch.channels_last)
            if "regional" in parts:
                print(f"  {compile_transformer_blocks(unet)} transformer blocks compiled", flush=True)
            if "resnets" in parts:  # measured only: 12 distinct resnet shapes in SDXL, past dynamo's default limit
                torch._dynamo.config.recompile_limit = 64
                resnets = [m for m in unet.modules() if type(m).__name__ == "ResnetBlock2D"]
                for module in resnets:
                    module.compile(dynamic=False)
                print(f"  {len(resnets)} resnet blocks compiled", flush=True)
            if "dynres" in parts:  # one symbolic-shape compile for the 12 resnet shapes instead of one each
                resnets = [m for m in unet.modules() if type(m).__name__ == "ResnetBlock2D"]
                for module in resnets:
                    module.compile(dynamic=True)
                print(f"  {len(resnets)} resnet blocks compiled with dynamic shapes", flush=True)
        if "tuned" in parts:
            import torch._inductor.config as inductor

            inductor.conv_1x1_as_mm = True
            inductor.coordinate_descent_tuning = True
            inductor.coordinate_descent_check_all_directions = True
        if parts & {"compile", "tuned"}:
            unet = torch.compile(unet, dynamic=False)
        bundle.pipe.unet = unet
        try:
            first = call()
            torch.cuda.synchronize()
            setup_s = time.perf_counter() - start
            diff = float((first - reference).abs().max())
            diff32 = None if exact is None else float((first - exact).abs().max())
            with prefer_cudnn_attention(cudnn):
                ms = unet_call_ms(bundle, args.batch)
        except Exception as exc:  # a lever that cannot run here is reported, not fatal to the others
            print(f"{lever:28s} FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            results["levers"][lever] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
            continue
        tflops = 2 * args.batch * PLAIN_UNET_TFLOP / (ms / 1000)
        row = {
            "ms": ms,
            "setup_s": setup_s,
            "max_abs_diff": diff,
            "rel_diff": diff / scale,
            "max_abs_diff_vs_fp32": diff32,
            "plain_unet_tflops": tflops,
        }
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results["levers"][lever] = row
        print(
            f"{lever:28s} {ms:7.1f} ms/call  setup {setup_s:6.1f} s  ~{tflops:4.0f} TFLOP/s  "
            f"max|diff| {diff:.3g} ({diff / scale:.2g} of max|eps|)"
            + ("" if diff32 is None else f", vs fp32 {diff32:.3g}"),
            flush=True,
        )
        if lever in to_profile:
            row["profile"] = profile_call(call, lever)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    bundle.pipe.unet = eager_unet
    print("\n| lever | ms/call | setup s | plain-UNet TFLOP/s | max abs diff vs eager |")
    print("|---|---|---|---|---|")
    for lever, row in results["levers"].items():
        if "ms" in row:
            print(
                f"| {lever} | {row['ms']:.1f} | {row['setup_s']:.0f} | {row['plain_unet_tflops']:.0f} | "
                f"{row['max_abs_diff']:.3g} |"
            )
        else:
            print(f"| {lever} | failed: {row['error'][:80]} | | | |")


if __name__ == "__main__":
    main()
