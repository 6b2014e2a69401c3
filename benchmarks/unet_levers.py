"""One guided UNet call (both branches, full-size random SDXL + fused FaceID) under each speed lever.

Prints median ms per call at a fixed batch, each lever on top of the previous ones where noted,
and the max difference of its output from the eager fp16 call.

    python benchmarks/unet_levers.py --batch 8 --levers eager,cudnn_benchmark,compile,channels_last_compile
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

LEVERS = ("eager", "cudnn_benchmark", "compile", "channels_last_compile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("/tmp/rp-full-random"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from benchmarks.full_size import unet_call_ms
    from rp_core.interfaces import RuntimeContext
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.random_weights import write_random_models
    from rp_plugins.diffusion.sdxl import load_bundle

    if not (args.models / "sdxl" / "model_index.json").exists():
        torch.set_default_device("cuda")
        write_random_models(args.models, "full", seed=0, dtype=torch.float16)
        torch.set_default_device("cpu")
    options = InverterOptions(
        sd_model=str(args.models / "sdxl"), ip_adapter=str(args.models / "faceid" / "ip-adapter-faceid_sdxl.bin")
    )
    bundle = load_bundle(options, RuntimeContext(device="cuda", dtype="float16"))
    eager_unet = bundle.pipe.unet
    generator = torch.Generator().manual_seed(0)
    latent = eager_unet.config.sample_size
    x = torch.randn(args.batch, 4, latent, latent, generator=generator).cuda()
    ids = torch.randn(args.batch, 1, 512, generator=generator).cuda()
    text = bundle.prompt_conditioning(None)

    def call() -> Any:
        return bundle.guided_noise(x, torch.tensor(299, device="cuda"), text, torch.zeros_like(ids), ids, -10.0)

    reference = call()
    results: dict[str, Any] = {"card": torch.cuda.get_device_name(0), "batch": args.batch, "levers": {}}
    for lever in args.levers.split(","):
        torch._dynamo.reset()
        bundle.pipe.unet = eager_unet.to(memory_format=torch.contiguous_format)
        torch.backends.cudnn.benchmark = lever != "eager"
        if lever == "channels_last_compile":
            bundle.pipe.unet = eager_unet.to(memory_format=torch.channels_last)
        setup_s = 0.0
        if lever.endswith("compile"):
            bundle.pipe.unet = torch.compile(bundle.pipe.unet, dynamic=False)
            start = time.perf_counter()
            call()
            torch.cuda.synchronize()
            setup_s = time.perf_counter() - start
        diff = float((call() - reference).abs().max())
        ms = unet_call_ms(bundle, args.batch)
        tflops = 2 * args.batch * 6.76 / (ms / 1000)
        results["levers"][lever] = {"ms": ms, "setup_s": setup_s, "max_abs_diff": diff, "plain_unet_tflops": tflops}
        print(
            f"{lever:24s} {ms:7.1f} ms/call  setup {setup_s:6.1f} s  ~{tflops:4.0f} TFLOP/s  max|diff| {diff:.3g}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
