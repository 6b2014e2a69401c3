"""--only-largest / --max-faces on a clip decide per track: the person chosen stays chosen in every frame."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from helpers.throwaway import throwaway_host

pytest.importorskip("trackers")
cv2 = pytest.importorskip("cv2")

from rp_core import hookimpl  # noqa: E402
from rp_core.config import resolve_config  # noqa: E402
from rp_core.interfaces import Detector  # noqa: E402
from rp_core.pipeline import assemble  # noqa: E402
from rp_core.types import Face  # noqa: E402
from rp_core.video.frames import FrameAnonymizer  # noqa: E402
from rp_core.video.tracks import FaceTracker  # noqa: E402

FRAMES = 10
WHITE = 250


class SquareDetector(Detector):
    """Every white square of the frame is a face (found from the pixels, not from the test's plan)."""

    name = "squares"

    def detect(self, image: np.ndarray) -> list[Face]:
        mask = (image.min(axis=2) >= WHITE - 5).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        faces = []
        for x, y, w, h, _area in stats[1:count]:
            points = [
                (x + w * fx, y + h * fy) for fx, fy in ((0.3, 0.4), (0.7, 0.4), (0.5, 0.55), (0.35, 0.75), (0.65, 0.75))
            ]
            faces.append(
                Face(box=(x, y, x + w, y + h), score=1.0, landmarks=np.array(points, float), detector=self.name)
            )
        return faces


class SquarePlugin:
    @hookimpl
    def rp_register_detectors(self, register: Callable[[type], None]) -> None:
        register(SquareDetector)


def _frame(left: int, right: int) -> np.ndarray:
    """Two white squares of sides `left` and `right` on grey, centred at fixed points."""
    image = np.full((240, 360, 3), 60, np.uint8)
    for cx, side in ((90, left), (270, right)):
        image[120 - side // 2 : 120 + side // 2, cx - side // 2 : cx + side // 2] = WHITE
    return image


@pytest.mark.parametrize("selection", ["select.only_largest=true", "select.max_faces=1"])
def test_the_track_largest_at_first_stays_the_one_changed_when_the_other_grows(selection: str) -> None:
    host = throwaway_host()
    host.register_plugin(SquarePlugin(), name="squares")
    settings = ["detector.name=squares", "generator.name=flat", "merger.name=box", "verify.enabled=false"]
    config = resolve_config(host, overrides=[*settings, "coverage.detector=null", selection], environ={})
    pipeline = assemble(config, host)
    pipeline.load()
    # the left square shrinks from 80 to 44 px while the right one grows from 44 to 80: they swap sizes halfway
    frames = [_frame(80 - 4 * n, 44 + 4 * n) for n in range(FRAMES)]
    stream = FrameAnonymizer(pipeline, FaceTracker(fps=10.0))
    outcomes = [o for n, image in enumerate(frames) for o in stream.push(n, image, n / 10)]
    outcomes += list(stream.flush())
    assert len(outcomes) == FRAMES
    for n, outcome in enumerate(outcomes):
        assert len(outcome.faces) == 2 and None not in outcome.tracks, f"frame {n}: both squares tracked"
        left = min(range(2), key=lambda k: outcome.faces[k].box[0])
        assert outcome.generators[left] == "flat" and outcome.generators[1 - left] is None, f"frame {n}"
        # what an attacker sees: the left square replaced in every frame, the right one untouched
        assert outcome.image[120, 90].max() < WHITE - 50 and (outcome.image[120, 270] >= WHITE - 5).all(), f"frame {n}"
    assert len({o.tracks[min(range(2), key=lambda k: o.faces[k].box[0])] for o in outcomes}) == 1  # one track
