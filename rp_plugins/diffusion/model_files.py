"""Where the SDXL base and IP-Adapter-FaceID weights live: locating them on disk and downloading them.

Nothing here imports torch or loads weights, so `rp models`, `rp doctor` and a missing-model
error stay fast; sdxl.py loads what these functions found.
"""

from __future__ import annotations

import json
from pathlib import Path

from rp_core.interfaces import RuntimeContext
from rp_core.models import ModelFile
from rp_plugins.diffusion.options import FACEID_REPO, SDXL_BASE, SdxlOptions

#: The file name FaceID's SDXL weights have in h94/IP-Adapter-FaceID.
FACEID_WEIGHT_NAME = "ip-adapter-faceid_sdxl.bin"
#: SDXL base 1.0's noise schedule (its scheduler_config.json), for model folders that lack one.
SDXL_SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="leading",
)

#: What `rp models download` fetches of SDXL base: configs, tokenizers and fp16 weights (~7 GB).
SDXL_PATTERNS = [
    "model_index.json",
    "*/config.json",
    "scheduler/*",
    "tokenizer/*",
    "tokenizer_2/*",
    "*/*.fp16.safetensors",
]


def _local_name(repo_or_path: str) -> str:
    return repo_or_path.rstrip("/").split("/")[-1]


def _hf_cache_dir() -> Path:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return Path(HF_HUB_CACHE)
    except ImportError:
        return Path("~/.cache/huggingface/hub").expanduser()


def _from_hf_cache(repo_or_path: str, filename: str, looked: list[Path]) -> Path | None:
    """`filename` of a Hugging Face repo id in the local HF cache (noting where it looked); None for paths."""
    if Path(repo_or_path).expanduser().exists() or repo_or_path.count("/") != 1:
        return None
    looked.append(_hf_cache_dir() / ("models--" + repo_or_path.replace("/", "--")))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_or_path, filename)
    return Path(found) if isinstance(found, str) else None


def locate_sdxl(sd_model: str, models_dir: Path | None) -> ModelFile:
    """Find an SDXL folder (holding model_index.json): local path, --models folder, or the HF cache."""
    candidates = [Path(sd_model).expanduser()]
    if models_dir is not None:
        candidates.append(models_dir / _local_name(sd_model))
    found = next((c for c in candidates if (c / "model_index.json").is_file()), None)
    looked = [c / "model_index.json" for c in candidates]
    if found is None:
        cached = _from_hf_cache(sd_model, "model_index.json", looked)
        if cached is not None and (cached.parent / "unet" / "config.json").is_file():
            found = cached.parent
    return ModelFile(
        component="ledits_sdxl / ipadapter_faceid",
        description=f"Stable Diffusion XL base 1.0 ({sd_model})",
        found_at=found,
        looked_in=tuple(looked),
        how_to_get=f"`rp models download` (fetches {SDXL_BASE} from Hugging Face, ~7 GB), or pass --sd-model /path/to/sdxl-folder",
    )


def locate_faceid(ip_adapter: str, models_dir: Path | None) -> ModelFile:
    """Find ip-adapter-faceid_sdxl.bin: a file, a folder holding it, the --models folder, or the HF cache."""
    path = Path(ip_adapter).expanduser()
    candidates = [path] if path.suffix in (".bin", ".safetensors") else [path / FACEID_WEIGHT_NAME]
    if models_dir is not None:
        candidates.append(models_dir / _local_name(FACEID_REPO) / FACEID_WEIGHT_NAME)
    found = next((c for c in candidates if c.is_file()), None)
    looked = list(candidates)
    if found is None:
        found = _from_hf_cache(ip_adapter, FACEID_WEIGHT_NAME, looked)
    return ModelFile(
        component="ledits_sdxl / ipadapter_faceid",
        description=f"IP-Adapter-FaceID SDXL weights {FACEID_WEIGHT_NAME} ({ip_adapter})",
        found_at=found,
        looked_in=tuple(looked),
        how_to_get=f"`rp models download` (fetches {FACEID_WEIGHT_NAME} from {FACEID_REPO}), or pass --ip-adapter /path/to/{FACEID_WEIGHT_NAME}",
    )


def sdxl_model_files(options: SdxlOptions, context: RuntimeContext) -> list[ModelFile]:
    return [locate_sdxl(options.sd_model, context.models_dir), locate_faceid(options.ip_adapter, context.models_dir)]


def download_sdxl(options: SdxlOptions, target: Path | None) -> list[Path]:
    """Fetch SDXL (fp16 files) and the FaceID weights into the HF cache, or into `target`."""
    from huggingface_hub import hf_hub_download, snapshot_download

    paths = []
    if not Path(options.sd_model).expanduser().exists():
        local = str(target / _local_name(options.sd_model)) if target else None
        paths.append(Path(snapshot_download(options.sd_model, allow_patterns=SDXL_PATTERNS, local_dir=local)))
    if not Path(options.ip_adapter).expanduser().exists():
        local = str(target / _local_name(options.ip_adapter)) if target else None
        paths.append(Path(hf_hub_download(options.ip_adapter, FACEID_WEIGHT_NAME, local_dir=local)))
    return paths


def is_full_size(sdxl_dir: Path) -> bool:
    """Whether the folder holds a full-size SDXL UNet (hours per face on a CPU) rather than a tiny test one."""
    try:
        config = json.loads((sdxl_dir / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return True
    return int(config.get("block_out_channels", [0])[-1]) >= 1280
