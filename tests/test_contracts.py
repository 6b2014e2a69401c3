"""rp_core.testing's contract checks pass on our own components and catch the breakages they name."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import ConfigDict

from rp_core.interfaces import ComponentOptions, Detector, RuntimeContext
from rp_core.testing import (
    ContractError,
    check_detector,
    check_generator,
    check_identity_encoder,
    check_light_import,
)
from rp_core.types import Face


def _installed(host, kind: str, name: str):  # type: ignore[no-untyped-def]
    registration = host.registry[kind].get(name)
    if registration is None:
        pytest.skip(f"no {kind} named {name!r} is installed")
    return registration.cls


def test_dlib_detector_keeps_the_contract(host, t1: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    faces = check_detector(host.get("detector", "dlib").cls, t1, min_faces=6)
    assert len(faces) == 6


def test_centerface_keeps_the_contract_when_installed(host, t1: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    check_detector(_installed(host, "detector", "centerface"), t1, min_faces=6)


def test_sfd_keeps_the_contract_when_its_weights_are_here(host, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    cls = _installed(host, "detector", "sfd")
    if not all(f.present for f in cls().model_files()):
        pytest.skip("sfd's weights are not here (rp models download)")
    check_detector(cls, astronaut)


def test_identity_encoders_keep_the_contract(host, t1: np.ndarray, random_buffalo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    faces = host.get("detector", "dlib").cls().detect(t1)
    check_identity_encoder(host.get("identity_encoder", "dlib").cls, t1, faces)
    context = RuntimeContext(device="cpu", models_dir=random_buffalo_dir)
    check_identity_encoder(host.get("identity_encoder", "buffalo_l").cls, t1, faces, context=context)


@pytest.mark.parametrize("name", ["pixelate", "blur", "solid"])
def test_obfuscating_generators_keep_the_contract(host, astronaut: np.ndarray, name: str) -> None:  # type: ignore[no-untyped-def]
    (face,) = host.get("detector", "dlib").cls().detect(astronaut)
    crop = check_generator(host.get("generator", name).cls, astronaut, face)
    assert crop.shape == (256, 256, 3)


# -- the checks catch what they claim to ----------------------------------------------------------


class _Box(Detector):
    """A real detector of one fixed face on any non-uniform image; subclasses break one rule each."""

    name = "box"

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.min() == image.max():
            return []
        points = np.array([(40.0, 40.0), (60.0, 40.0), (50.0, 50.0), (42.0, 60.0), (58.0, 60.0)])
        return [Face(box=(30.0, 30.0, 70.0, 70.0), score=0.9, landmarks=points, detector=self.name)]


class _LaxOptions(ComponentOptions):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Lax(_Box):
    name = "lax"
    Options: ClassVar[type[ComponentOptions]] = _LaxOptions


class _Jittery(_Box):
    name = "jittery"
    calls = 0

    def detect(self, image: np.ndarray) -> list[Face]:
        type(self).calls += 1
        return [
            Face(box=(30.0 + self.calls, 30.0, 70.0, 70.0), score=0.9, landmarks=f.landmarks, detector=self.name)
            for f in super().detect(image)
        ]


class _OffImage(_Box):
    name = "off_image"

    def detect(self, image: np.ndarray) -> list[Face]:
        return [
            Face(box=(5000.0, 30.0, 5040.0, 70.0), score=0.9, landmarks=f.landmarks + 5000, detector=self.name)
            for f in super().detect(image)
        ]


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_Lax, "accepted the unknown key"),
        (_Jittery, "different faces on the same image twice"),
        (_OffImage, "box centre outside the image"),
    ],
)
def test_broken_detectors_are_caught(astronaut: np.ndarray, cls: type[Detector], message: str) -> None:
    check_detector(_Box, astronaut)  # the unbroken one passes
    with pytest.raises(ContractError, match=message):
        check_detector(cls, astronaut)


def test_a_heavy_import_at_module_level_is_caught(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "eager_plugin.py").write_text("import cv2  # at import time: rp --help would pay for it\n")
    (tmp_path / "lazy_plugin.py").write_text("def load():\n    import cv2\n    return cv2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_light_import("lazy_plugin")
    with pytest.raises(ContractError, match="imports cv2"):
        check_light_import("eager_plugin")
    assert "eager_plugin" not in sys.modules  # checked in a fresh interpreter, not this one
