"""Obfuscation generators, end to end through the Anonymizer: no face stays recognisable to dlib."""

from __future__ import annotations

import numpy as np
import pytest

from rp_core.align import align_face
from rp_core.config import resolve_config
from rp_core.orchestrator import Anonymizer
from rp_core.types import GenerationRequest
from rp_plugins._facemask import face_region
from rp_plugins.dlib_faces import DlibDetector
from rp_plugins.obfuscate import Blur, BlurOptions, Pixelate, PixelateOptions, Solid, SolidOptions

GENERATORS = ["pixelate", "blur", "solid"]


def offline_config(host, generator: str):  # type: ignore[no-untyped-def]
    """The offline preset with another generator; the diffusion slots are emptied (not loaded in these tests)."""
    overrides = ["inverter.name=null", f"generator.name={generator}"]  # the preset verifies with dlib
    return resolve_config(host, preset="offline", overrides=overrides, environ={})


@pytest.fixture(scope="module")
def originals(t1: np.ndarray, astronaut: np.ndarray, reidentifier) -> dict[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    found = {"t1": reidentifier.descriptors(t1), "astronaut": reidentifier.descriptors(astronaut)}
    assert (len(found["t1"]), len(found["astronaut"])) == (6, 1)
    return found


@pytest.mark.parametrize("generator", GENERATORS)
def test_faces_are_not_reidentified(generator: str, host, t1, astronaut, originals, reidentifier) -> None:  # type: ignore[no-untyped-def]
    config = offline_config(host, generator)
    assert (config.detector.name, config.merger.name) == ("dlib", "affine")
    anonymizer = Anonymizer(config, host)
    assert anonymizer.sections_in_use() == ["detector", "generator", "merger"]
    for name, image in (("t1", t1), ("astronaut", astronaut)):
        result = anonymizer.anonymize(image)
        assert result.face_count == len(originals[name])
        assert all(r.action == "obfuscated" and r.generator == generator for r in result.records)
        # the attacker upsamples once to look harder than the pipeline's own detector did
        found = reidentifier.descriptors(result.image, upsample=1)
        for original in originals[name]:
            distances = [float(np.linalg.norm(original - d)) for d in found]
            assert min(distances, default=np.inf) > reidentifier.threshold, (name, distances)


def test_offline_preset_is_pixelate(host) -> None:  # type: ignore[no-untyped-def]
    assert (
        resolve_config(host, preset="offline", overrides=["inverter.name=null"], environ={}).generator.name
        == "pixelate"
    )


@pytest.fixture(scope="module")
def request_(astronaut: np.ndarray) -> GenerationRequest:
    face = DlibDetector().detect(astronaut)[0]
    return GenerationRequest(face=align_face(astronaut, face, 256))


@pytest.mark.parametrize(
    "generator",
    [
        Pixelate(),
        Pixelate(PixelateOptions(blocks=12)),
        Blur(),
        Blur(BlurOptions(strength=0.05)),
        Solid(),
        Solid(SolidOptions(color=(255, 0, 0))),
    ],
    ids=lambda g: f"{g.name}-{next(iter(g.options.model_dump().values()))}",
)
def test_only_the_face_region_changes(generator, request_: GenerationRequest) -> None:  # type: ignore[no-untyped-def]
    crop = request_.face.crop
    (new,) = generator.generate([request_])
    assert new.shape == crop.shape and new.dtype == np.uint8
    region = face_region(request_.face)
    assert np.array_equal(new[~region], crop[~region])
    assert (new[region] != crop[region]).any(axis=1).mean() > 0.5
    assert not generator.needs_identity and not generator.needs_inversion


def test_solid_fills_with_its_colour(request_: GenerationRequest) -> None:
    (new,) = Solid(SolidOptions(color=(255, 0, 0))).generate([request_])
    assert (new[face_region(request_.face)] == (255, 0, 0)).all()


def test_batch_of_requests(request_: GenerationRequest) -> None:
    outputs = Pixelate().generate([request_, request_, request_])
    assert len(outputs) == 3 and all(np.array_equal(outputs[0], o) for o in outputs)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        PixelateOptions.model_validate({"block": 8})
    with pytest.raises(ValueError):
        SolidOptions.model_validate({"color": [0, 0, 300]})
    with pytest.raises(ValueError):
        BlurOptions(strength=0)
