"""face-alignment's SFD face detector with 2D-FAN 68-point landmarks: the design's default detector.

face-alignment downloads its weights on first use and hangs or fails without network,
so this component looks for the two files itself (models dir, then the torch hub cache
face-alignment uses), raises MissingModelsError before importing torch when they are
absent, and only ever downloads in `download()`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.devices import resolve_torch_device
from rp_core.interfaces import ComponentOptions, Detector, cli_flag
from rp_core.models import ModelFile, first_existing, require_present
from rp_core.types import Face

SFD_FILE = "s3fd-619a316812.pth"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
SFD_URL = f"https://www.adrianbulat.com/downloads/python-fan/{SFD_FILE}"
FAN_URL = f"https://www.adrianbulat.com/downloads/python-fan/{FAN_FILE}"


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, where face-alignment caches its weights, without importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir()) / "checkpoints"
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(home).expanduser() / "hub" / "checkpoints"


class SfdOptions(ComponentOptions):
    """Options of the SFD + FAN detector."""

    det_thresh: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="SFD score a face must exceed (face-alignment's filter_threshold)",
        json_schema_extra=cli_flag("det-thresh"),
    )
    det_size: int | None = Field(
        1280,
        ge=32,
        description="longest image side given to SFD (downscale only; landmarks use the full image); None = full size",
        json_schema_extra=cli_flag("det-size"),
    )
    flip_input: bool = Field(
        True, description="average FAN over the mirrored face too (steadier landmarks, twice the FAN time)"
    )
    sfd_path: str | None = Field(
        None, description=f"explicit path to {SFD_FILE}; default: models dir, then torch hub cache"
    )
    fan_path: str | None = Field(
        None, description=f"explicit path to {FAN_FILE}; default: models dir, then torch hub cache"
    )


class SfdDetector(Detector):
    """S3FD boxes, then 2D-FAN-4 landmarks at full resolution."""

    name: ClassVar[str] = "sfd"
    #: The paper's detector: what a config that names none runs.
    default_for: ClassVar[tuple[str, ...]] = ("detector",)
    Options: ClassVar[type[ComponentOptions]] = SfdOptions
    options: SfdOptions
    recall_option: ClassVar[str | None] = "det_thresh"

    def _candidates(self, filename: str, explicit: str | None) -> list[Path]:
        if explicit:
            return [Path(explicit).expanduser()]
        paths: list[Path] = []
        if self.context.models_dir is not None:
            base = Path(self.context.models_dir).expanduser()
            paths += [base / filename, base / "face_alignment" / filename, base / "hub" / "checkpoints" / filename]
        paths.append(torch_hub_checkpoints() / filename)
        return paths

    def model_files(self) -> list[ModelFile]:
        files = []
        for filename, explicit, url, what in (
            (SFD_FILE, self.options.sfd_path, SFD_URL, "face-alignment S3FD face detector"),
            (FAN_FILE, self.options.fan_path, FAN_URL, "face-alignment 2D-FAN-4 landmark network"),
        ):
            candidates = self._candidates(filename, explicit)
            files.append(
                ModelFile(
                    component=self.name,
                    description=f"{what} ({filename})",
                    found_at=first_existing(candidates),
                    looked_in=tuple(candidates),
                    how_to_get=f"`rp models download`, or download {url} into {candidates[-1].parent}",
                )
            )
        return files

    def download(self, target: Path | None = None) -> list[Path]:
        """Fetch missing weights from face-alignment's URLs into `target` or the torch hub cache."""
        files = self.model_files()
        present = [f.found_at for f in files if f.found_at is not None]
        missing = [(f, url) for f, url in zip(files, (SFD_URL, FAN_URL), strict=True) if f.found_at is None]
        if missing:
            from torch.hub import download_url_to_file

            folder = Path(target) if target is not None else torch_hub_checkpoints()
            folder.mkdir(parents=True, exist_ok=True)
            for _, url in missing:
                destination = folder / url.rsplit("/", 1)[-1]
                download_url_to_file(url, str(destination), progress=True)
                present.append(destination)
        return present

    def load_weights(self) -> None:
        files = self.model_files()
        require_present(files)  # before torch is imported: fails fast, never downloads
        sfd_path, fan_path = (f.found_at for f in files)
        assert sfd_path is not None and fan_path is not None
        device = str(resolve_torch_device(self.context.device))
        key = ("face_alignment", str(sfd_path), str(fan_path), device, self.options.det_thresh, self.options.flip_input)
        self._fa = self.context.pool.get(
            key, lambda: _face_alignment(sfd_path, fan_path, device, self.options.det_thresh, self.options.flip_input)
        )

    def version(self) -> str:
        return "sfd-2dfan4-1"

    def detect(self, image: np.ndarray) -> list[Face]:
        from rp_plugins.dlib_faces import longest_side_scale, resize_for_detection

        self.load()
        image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        scale = longest_side_scale(image.shape, self.options.det_size)
        small = resize_for_detection(image, scale)
        boxes = self._fa.face_detector.detect_from_image(small.copy())
        if len(boxes) == 0:
            return []
        full = [np.array([*(np.asarray(b[:4], dtype=np.float64) / scale), float(b[4])]) for b in boxes]
        landmarks = self._fa.get_landmarks_from_image(image, detected_faces=full)
        return [
            Face(box=tuple(b[:4]), score=float(b[4]), landmarks=np.asarray(points)[:, :2], detector=self.name)
            for b, points in zip(full, landmarks, strict=True)
        ]


def cache_landmark_jit() -> bool:
    """Keep face-alignment's numba-compiled heatmap decoding on disk between runs; True when on.

    Its two jitted helpers compile on the first detection of every process (~8 s on a 2-core
    CPU, part of the time to the first image); cached, a later process loads them in ~0.3 s.
    numba writes next to face-alignment or, where that is read-only, to the user's cache
    folder (NUMBA_CACHE_DIR overrides both); without a writable place it compiles as before.
    """
    try:
        from face_alignment import utils

        for jitted in (utils.transform_np, utils._get_preds_fromhm):
            jitted.enable_caching()
    except Exception:  # another face-alignment layout, or nowhere to write: compile per process
        return False
    return True


def _face_alignment(sfd_path: Path, fan_path: Path, device: str, det_thresh: float, flip_input: bool) -> Any:
    """A face_alignment.FaceAlignment reading both networks from the given files (compile=False: seconds, not minutes)."""
    import torch
    from face_alignment import FaceAlignment, LandmarksType
    from face_alignment.models import FAN

    cache_landmark_jit()

    class _LocalFaceAlignment(FaceAlignment):
        # face-alignment 1.5 loads FAN from its download cache only; read our file instead.
        def _load_native(self, network_name: str, network_size: int, device: str, dtype: Any) -> Any:
            net = FAN(network_size)
            net.load_state_dict(torch.load(str(fan_path), map_location=device, weights_only=True))
            net.to(device, dtype=dtype)
            net.eval()
            return net

    return _LocalFaceAlignment(
        LandmarksType.TWO_D,
        device=device,
        flip_input=flip_input,
        face_detector="sfd",
        face_detector_kwargs={"path_to_detector": str(sfd_path), "filter_threshold": det_thresh},
        compile=False,
    )


@hookimpl
def rp_register_detectors(register: Callable[[type], None]) -> None:
    register(SfdDetector)
