"""Full-size SDXL + FaceID with random weights on a GPU: per-face time, UNet call time, peak memory, NaN check.

Compute does not depend on the weight values, so random weights of the real architecture
give real timings without a download. The model folder is written to disk and loaded
through the product's own loading code (the same path `rp anonymize` takes).

    python benchmarks/full_size.py --batch-sizes 1,4,8 --steps 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

PROCESS_START = time.perf_counter()  # for the time from process start to the first image

#: One 1024 px SDXL UNet evaluation (DESIGN.md); the guided call evaluates two per face.
PLAIN_UNET_TFLOP = 6.76


def matrix_ceiling_tflops(size: int = 8192, repeats: int = 10, device: str = "cuda") -> float:
    """The card's fp16 matrix rate on random data: the ceiling the UNet's throughput is compared with."""
    import torch

    a = torch.randn(size, size, device=device, dtype=torch.float16)
    b = torch.randn(size, size, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def ensure_random_models(folder: Path) -> None:
    """Write the full-size random-weight SDXL + FaceID folders once (the product then loads them from disk)."""
    import torch

    from rp_plugins.diffusion.random_weights import write_random_models

    if not (folder / "sdxl" / "model_index.json").exists():
        torch.set_default_device("cuda")  # random init of 3.5 B parameters is much faster on the GPU
        write_random_models(folder, "full", seed=0, dtype=torch.float16)
        torch.set_default_device("cpu")


def synthetic_crops(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random images (low-frequency noise), a stand-in for aligned face crops."""
    rng = np.random.default_rng(seed)
    block = size // 16
    return [
        np.kron(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), np.ones((block, block, 1), np.uint8))
        for _ in range(count)
    ]


def unet_call_ms(bundle: Any, batch: int, repeats: int = 10) -> float:
    """Median milliseconds of one guided UNet call (both guidance branches) at `batch` faces."""
    import torch

    latent = bundle.pipe.unet.config.sample_size
    x = torch.randn(batch, 4, latent, latent, device=bundle.device)
    ids = torch.randn(batch, 1, 512, device=bundle.device)
    text = bundle.prompt_conditioning(None)
    t = torch.tensor(299, device=bundle.device)
    for _ in range(3):
        bundle.guided_noise(x, t, text, torch.zeros_like(ids), ids, -10.0)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        bundle.guided_noise(x, t, text, torch.zeros_like(ids), ids, -10.0)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def run_batch(inverter: Any, generator: Any, batch: int, size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Invert, regenerate and decode `batch` faces at once; time, memory and a NaN/inf check."""
    import torch

    from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding

    crops = synthetic_crops(batch, size, seed=batch)
    faces = [AlignedFace(Face((0, 0, 1, 1), 1.0, np.zeros((5, 2))), crop, np.eye(2, 3)) for crop in crops]
    identities = [IdentityEmbedding(v / np.linalg.norm(v), "buffalo_l") for v in rng.standard_normal((batch, 512))]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    inversions = inverter.invert(faces, [0] * batch)
    torch.cuda.synchronize()
    invert_s = time.perf_counter() - start
    requests = [GenerationRequest(f, i, inv) for f, i, inv in zip(faces, identities, inversions, strict=True)]
    latents = generator.generate_latents(requests)
    images = generator.bundle.decode_latents(latents)
    torch.cuda.synchronize()
    total_s = time.perf_counter() - start
    finite = bool(torch.isfinite(latents).all()) and all(
        bool(torch.isfinite(inv.state.noise_maps).all() and torch.isfinite(inv.state.start).all()) for inv in inversions
    )
    return {
        "batch": batch,
        "per_face_s": total_s / batch,
        "invert_s": invert_s,
        "total_s": total_s,
        "unet_call_ms": unet_call_ms(generator.bundle, batch),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "finite": finite,
        "image_std": float(np.std(np.stack(images).astype(np.float32))),
        "images": images,
    }


def vae_ms_per_face(bundle: Any, batch: int, size: int) -> float:
    """Milliseconds per face of one fp32 VAE encode + decode at `batch` faces."""
    import torch

    crops = synthetic_crops(batch, size)
    bundle.decode_latents(bundle.encode_images(crops))
    torch.cuda.synchronize()
    start = time.perf_counter()
    bundle.decode_latents(bundle.encode_images(crops))
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / batch


def unet_variant(name: str) -> Any:
    """The change a compared variant makes to a loaded UNet before its first call (benchmark levers)."""
    from rp_plugins.diffusion.speed import quantize_linear_fp8_rowwise

    if name == "sage":
        from benchmarks.unet_levers import use_sage_attention

        return use_sage_attention
    if name in ("fp8row", "fp8fast"):
        return lambda unet: quantize_linear_fp8_rowwise(unet, fast_accumulation=name == "fp8fast")
    raise SystemExit(f"unknown variant {name!r}: sage, fp8row, fp8fast")


def compare_paths(
    common: dict[str, Any], steps: int, size: int, with_fp8: bool, variants: tuple[str, ...] = ()
) -> dict[str, dict[str, float]]:
    """Decoded crops of the same faces, seed and identities through: plain fp16 (LoRA unmerged, no
    CUDA graphs, no compiled blocks), the product's fp16 defaults, optionally fp8, and plain fp32.

    The fp16-vs-fp32 difference is the precision noise floor; the product path should sit within it.
    """
    import torch

    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool
    from rp_plugins.diffusion.components import IpAdapterFaceIdGenerator, LeditsSdxlInverter

    outputs = {}
    paths = [
        ("plain_fp16", False, False, "float16"),
        ("product_fp16", True, False, "float16"),  # the defaults: fused LoRA, CUDA graphs, compiled blocks
        ("product_fp8", True, True, "float16"),
        *((f"product_{name}", True, False, "float16") for name in variants),  # the defaults + one lever
        ("plain_fp32", False, False, "float32"),
    ]
    for label, product, fp8, dtype in paths:
        if fp8 and not with_fp8:
            continue
        print(f"compare: {label}", flush=True)
        torch._dynamo.reset()  # each path compiles its own blocks (dynamo's recompile limit is per code object)
        context = RuntimeContext(
            device="cuda",
            dtype=dtype,
            pool=ModelPool(),
            cuda_graphs=product,
            fp8=fp8,
            batch_size=2,
            compile_blocks=product,
        )  # batch 2 = the full batch: compiled blocks apply
        options = {**common, "fuse_faceid_lora": product}
        inverter = LeditsSdxlInverter(LeditsSdxlInverter.Options(**options, num_inversion_steps=steps), context)
        generator = IpAdapterFaceIdGenerator(IpAdapterFaceIdGenerator.Options(**options), context)
        variant = label.removeprefix("product_")
        if variant in variants:
            inverter.load()
            generator.load()
            unet_variant(variant)(generator.bundle.pipe.unet)
        images = run_batch(inverter, generator, 2, size, np.random.default_rng(0))["images"]
        outputs[label] = np.stack(images).astype(int)
        del inverter, generator, context
        torch.cuda.empty_cache()

    def diff(a: str, b: str) -> dict[str, float]:
        d = np.abs(outputs[a] - outputs[b])
        return {"max_abs_uint8": float(d.max()), "mean_abs_uint8": float(d.mean())}

    pairs = [("product_fp16", "plain_fp16"), ("plain_fp16", "plain_fp32"), ("product_fp16", "plain_fp32")]
    for name in ("fp8", *variants):
        if f"product_{name}" in outputs:
            pairs += [(f"product_{name}", "product_fp16"), (f"product_{name}", "plain_fp32")]
    return {"steps": {"value": float(steps)}, **{f"{a}_vs_{b}": diff(a, b) for a, b in pairs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("/tmp/rp-full-random"))
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-fuse", action="store_true", help="keep FaceID's LoRA unmerged (the plain path)")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="launch the UNet's kernels from Python each call")
    parser.add_argument(
        "--fp8", action="store_true", help="runtime.fp8: row-scaled fp8 matmuls in the UNet's transformer layers"
    )
    parser.add_argument(
        "--no-compile-blocks", action="store_true", help="keep the transformer blocks eager (no regional compile)"
    )
    parser.add_argument("--faces-per-call", type=int, default=1, help="inverter option faces_per_call")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (fixed batch = first batch size)"
    )
    parser.add_argument(
        "--compare-steps", type=int, default=0, help="first compare fused vs plain output (2 faces, N steps)"
    )
    parser.add_argument("--compare-fp8", action="store_true", help="with --compare-steps: the fp8 path too")
    parser.add_argument(
        "--compare-variants",
        default="",
        help="with --compare-steps: the defaults plus each lever (sage,fp8row,fp8fast)",
    )
    args = parser.parse_args()

    import torch

    from rp_core.interfaces import RuntimeContext
    from rp_plugins.diffusion.components import IpAdapterFaceIdGenerator, LeditsSdxlInverter

    results: dict[str, Any] = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": args.steps}
    print(f"card: {results['card']}, torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    ensure_random_models(args.models)
    results["write_models_s"] = time.perf_counter() - start
    print(f"random full-size models written in {results['write_models_s']:.1f} s", flush=True)

    batches = [int(b) for b in args.batch_sizes.split(",")]
    context = RuntimeContext(device="cuda", dtype=args.dtype)
    sdxl_dir, faceid = args.models / "sdxl", args.models / "faceid" / "ip-adapter-faceid_sdxl.bin"
    common: dict[str, Any] = dict(sd_model=str(sdxl_dir), ip_adapter=str(faceid))
    if args.compare_steps:
        fp8_ok = torch.cuda.get_device_capability() >= (8, 9)
        with_fp8 = fp8_ok and args.compare_fp8
        variants = tuple(filter(None, args.compare_variants.split(",")))
        results["fused_vs_plain"] = compare_paths(common, args.compare_steps, args.size, with_fp8, variants)
        print("fused vs plain:", json.dumps(results["fused_vs_plain"]), flush=True)
        context.pool.clear()
        torch.cuda.empty_cache()
    common["fuse_faceid_lora"] = not args.no_fuse
    context = RuntimeContext(
        device="cuda",
        dtype=args.dtype,
        compile=args.compile,
        compile_blocks=not args.no_compile_blocks,
        batch_size=batches[0],
        cuda_graphs=not args.no_cuda_graphs,
        fp8=args.fp8,
    )
    inverter = LeditsSdxlInverter(
        LeditsSdxlInverter.Options(**common, num_inversion_steps=args.steps, faces_per_call=args.faces_per_call),
        context,
    )
    generator = IpAdapterFaceIdGenerator(IpAdapterFaceIdGenerator.Options(**common), context)
    start = time.perf_counter()
    inverter.load()
    generator.load()
    results["load_s"] = time.perf_counter() - start
    assert inverter.bundle is generator.bundle, "inverter and generator must share one pipeline"
    print(
        f"pipeline loaded in {results['load_s']:.1f} s (shared: yes), LoRA fused {not args.no_fuse}, "
        f"compile {args.compile}, CUDA graphs {context.cuda_graphs}, fp8 {context.fp8}, "
        f"transformer blocks compiled for calls of >= {generator.bundle.compile_blocks_from} faces",
        flush=True,
    )

    if args.compile:
        start = time.perf_counter()
        unet_call_ms(generator.bundle, batches[0], repeats=1)
        results["compile_s"] = time.perf_counter() - start
        print(f"UNet compiled for batch {batches[0]} in {results['compile_s']:.1f} s", flush=True)
    results["vae_ms_per_face"] = vae_ms_per_face(generator.bundle, batches[0], args.size)
    print(f"VAE encode+decode: {results['vae_ms_per_face']:.0f} ms per face at batch {batches[0]}", flush=True)
    rng = np.random.default_rng(0)
    rows = []
    first_image_s = None
    for batch in batches:
        try:
            row = run_batch(inverter, generator, batch, args.size, rng)
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch}: out of GPU memory", flush=True)
            torch.cuda.empty_cache()
            continue
        row.pop("images")
        rows.append(row)
        print(json.dumps(row), flush=True)
        if first_image_s is None:
            first_image_s = results["load_s"] + row["total_s"]
            # process start -> first decoded crop, less the one-off writing of the random weights
            since_start = time.perf_counter() - PROCESS_START - results["write_models_s"]
            results["first_image_since_process_start_s"] = None if args.compare_steps else since_start
    results["rows"] = rows
    results["first_image_s"] = first_image_s
    ceiling = results["matrix_ceiling_tflops"] = matrix_ceiling_tflops()
    print(f"\nmeasured matrix ceiling (8192^3 {args.dtype} matmul): {ceiling:.0f} TFLOP/s")
    print("| batch | s/face | UNet ms/call | plain-UNet TFLOP/s | of ceiling | peak GiB | finite |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        tflops = 2 * r["batch"] * PLAIN_UNET_TFLOP / (r["unet_call_ms"] / 1000)
        print(
            f"| {r['batch']} | {r['per_face_s']:.2f} | {r['unet_call_ms']:.1f} | {tflops:.0f} | "
            f"{100 * tflops / ceiling:.0f}% | {r['peak_gib']:.1f} | {r['finite']} |"
        )
    print(f"load {results['load_s']:.1f} s, first image after {first_image_s} s (load + first batch)")
    print(f"process start -> first image: {results.get('first_image_since_process_start_s')} s (without --compare)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
