"""Fail closed, incrementally: only faces overlapping a changed face are pasted and checked again, and a
generator that declares it keeps its inversion across retries is not inverted again.

The stages are the real offline ones (dlib detection and verification, pixelate fallback, affine merger)
on t1; the test generators and the counting inverter are real components registered through the hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from unittest.mock import patch

import numpy as np
import pytest
from pydantic import Field

from rp_core import hookimpl
from rp_core.align import align_faces
from rp_core.config import resolve_config
from rp_core.interfaces import ComponentOptions, Generator, Inverter
from rp_core.orchestrator import Anonymizer
from rp_core.pipeline import assemble
from rp_core.plugins import PluginHost
from rp_core.stream import FaceStream
from rp_core.types import AlignedFace, GenerationRequest, Inversion
from rp_core.verify import FailClosed, Regenerate, Verdict, footprint, pixel_rect, rects_meet


def _hidden(face: AlignedFace) -> np.ndarray:
    from rp_plugins._facemask import face_region

    crop = np.array(face.crop)
    crop[face_region(face)] = 128
    return crop


def _t1_with_one_face_left(host: PluginHost, t1: np.ndarray) -> tuple[FaceStream, list[AlignedFace], list[np.ndarray]]:
    """The offline stream, t1's faces, and their crops: face 0 handed back as it was (it leaks), the others
    hidden (most pass as they are)."""
    pipeline = assemble(resolve_config(host, preset="offline", environ={}), host)
    pipeline.load()
    stream = FaceStream(pipeline)
    faces = align_faces(t1, stream.detect(t1), pipeline.config.align.face_image_size)
    assert len(faces) == 6
    return stream, faces, [np.array(f.crop) if i == 0 else _hidden(f) for i, f in enumerate(faces)]


def _enforce(
    stream: FaceStream,
    policy: FailClosed,
    t1: np.ndarray,
    faces: list[AlignedFace],
    crops: list[np.ndarray],
    regenerate: Regenerate,
    stronger: Callable[[int], Generator[Any] | None],
) -> tuple[Verdict, list[int]]:
    """`policy` on t1 with the real check, and how many faces each of its calls checked."""
    verifier = stream.verifier
    with patch.object(verifier, "check", wraps=verifier.check) as spied:  # the real check, its calls recorded
        verdict = policy.enforce(
            t1,
            faces,
            crops,
            verifier.encode(t1, [f.face for f in faces]),
            ["leak"] * len(faces),
            [True] * len(faces),
            stream.merger.merge,
            regenerate,
            lambda i: True,
            stronger,
        )
    return verdict, [len(call.args[2]) for call in spied.call_args_list]


def test_only_faces_overlapping_a_changed_face_are_checked_again_and_the_image_equals_a_full_merge(
    host: PluginHost, t1: np.ndarray
) -> None:
    stream, faces, crops = _t1_with_one_face_left(host, t1)
    verdict, checked = _enforce(stream, stream.fail_closed(), t1, faces, crops, lambda i, g, a: [], lambda a: None)
    fallen = [i for i, v in enumerate(verdict.faces) if v.fallback]
    assert 0 in fallen and len(fallen) < 6 and not any(v.last_resort or v.check.leak for v in verdict.faces)
    rects = [pixel_rect(footprint(f, t1.shape)) for f in faces]
    touched = [j for j in range(6) if any(rects_meet(rects[j], rects[i]) for i in fallen)]
    assert checked == [6, len(touched)] and len(touched) < 6  # the second look: the changed faces and neighbours
    fallback = stream.fallback_generator.generate([GenerationRequest(face=faces[i]) for i in fallen])
    final = list(crops)
    for i, crop in zip(fallen, fallback, strict=True):
        final[i] = crop
    hidden = [True] * len(faces)  # the offline generators hide faces: pasted with the whole-head mask
    np.testing.assert_array_equal(verdict.image, stream.merger.merge(t1, faces, final, hidden))  # a full re-merge


class Unchanged(Generator):
    """Hands every face back the crop it has: a stronger step that changes nothing (a small face's pixelation)."""

    name = "unchanged"
    crops: ClassVar[dict[int, np.ndarray]] = {}  # id of the aligned face -> the crop it has

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [np.array(self.crops[id(r.face)]) for r in requests]


def test_a_step_that_hands_back_the_same_crop_is_not_checked_again_and_the_face_still_goes_to_the_fill(
    host: PluginHost, t1: np.ndarray
) -> None:
    """Retries and a fallback that give a face the crop it had leave the same pixels: they are not pasted or
    checked again (the check would say the same), and the face, still leaking, is filled."""
    from dataclasses import replace

    stream, faces, crops = _t1_with_one_face_left(host, t1)
    Unchanged.crops = {id(f): crop for f, crop in zip(faces, crops, strict=True)}
    asked: list[int] = []

    def regenerate(indices: list[int], generator: Generator[Any], attempt: int) -> list[np.ndarray]:
        asked.append(attempt)
        return [np.array(crops[i]) for i in indices]

    policy = replace(stream.fail_closed(), fallback=Unchanged())
    verdict, checked = _enforce(stream, policy, t1, faces, crops, regenerate, lambda attempt: stream.generator)
    filled = [i for i, v in enumerate(verdict.faces) if v.last_resort]
    assert 0 in filled and not any(v.check.leak for v in verdict.faces)
    assert asked == [1, 2] and all(verdict.faces[i].retries == 2 for i in filled)
    assert all(verdict.faces[i].fallback == "unchanged" and verdict.faces[i].last_resort == "solid" for i in filled)
    rects = [pixel_rect(footprint(f, t1.shape)) for f in faces]
    touched = [j for j in range(6) if any(rects_meet(rects[j], rects[i]) for i in filled)]
    # the first look, then only the fill's: neither retry nor the fallback changed a pixel
    assert checked == [6, len(touched)]


class WeakOptions(ComponentOptions):
    guidance_scale: float = Field(-10.0, ge=-100.0, le=100.0)


class CountingInverter(Inverter):
    """An inversion that records its seed; every call is counted."""

    name = "counting-inverter"
    calls: ClassVar[list[list[int]]] = []

    def invert(self, faces: Sequence[AlignedFace], seeds: Sequence[int]) -> list[Inversion]:
        CountingInverter.calls.append(list(seeds))
        return [Inversion(producer=self.name, state=int(seed)) for seed in seeds]


class ReusingGenerator(Generator):
    """Leaks unless pushed past |guidance| 12; declares that its stronger copies read the first inversion."""

    name = "reusing"
    Options: ClassVar[type[ComponentOptions]] = WeakOptions
    needs_inversion: ClassVar[bool] = True
    retry_keeps_inversion: ClassVar[bool] = True
    seen: ClassVar[list[tuple[int, Any]]] = []

    def stronger(self, attempt: int, factor: float) -> Generator[Any]:
        scale = self.options.guidance_scale * factor**attempt  # type: ignore[attr-defined]
        return type(self)(WeakOptions(guidance_scale=scale), self.context)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        out = []
        for r in requests:
            ReusingGenerator.seen.append((r.seed, None if r.inversion is None else r.inversion.state))
            strong = abs(self.options.guidance_scale) > 12  # type: ignore[attr-defined]
            out.append(_hidden(r.face) if strong else np.array(r.face.crop))
        return out


class InvertingGenerator(ReusingGenerator):
    """The same, without the declaration (the safe default): a retry inverts again with the next seed."""

    name = "inverting"
    retry_keeps_inversion: ClassVar[bool] = False


class RetryPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(ReusingGenerator)
        register(InvertingGenerator)

    @hookimpl
    def rp_register_inverters(self, register: Callable[[type], None]) -> None:
        register(CountingInverter)


@pytest.mark.parametrize(
    ("generator", "inversions", "seen"),
    [("reusing", [[5]], [(5, 5), (5, 5)]), ("inverting", [[5], [6]], [(5, 5), (6, 6)])],
)
def test_a_retry_keeps_the_inversion_only_when_the_generator_declares_it(
    host: PluginHost, astronaut: np.ndarray, generator: str, inversions: list[list[int]], seen: list[Any]
) -> None:
    name = host.register_plugin(RetryPlugin(), name="test-retry")
    try:
        overrides = [f"generator.name={generator}", "inverter.name=counting-inverter", "runtime.seed=5"]
        config = resolve_config(host, preset="offline", overrides=overrides, environ={})
        CountingInverter.calls.clear()
        ReusingGenerator.seen.clear()
        result = Anonymizer(config, host).anonymize(astronaut)
    finally:
        host.unregister_plugin(name)
    verify = result.records[0].notes["verify"]
    assert verify["retries"] == 1 and verify["fallback"] is None and not verify["leak"]
    assert CountingInverter.calls == inversions
    assert ReusingGenerator.seen == seen
