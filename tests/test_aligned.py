"""--aligned: the whole image is one already-aligned face; a photo of several people is refused, not half done."""

from __future__ import annotations

import numpy as np
import pytest

from rp_core.config import resolve_config
from rp_core.errors import InputError
from rp_core.orchestrator import Anonymizer
from rp_core.plugins import PluginHost


@pytest.fixture(scope="module")
def offline() -> Anonymizer:
    host = PluginHost()
    return Anonymizer(resolve_config(host, preset="offline", environ={}), host)


def test_an_aligned_face_crop_is_anonymized_whole(offline: Anonymizer, astronaut: np.ndarray) -> None:
    crop = np.ascontiguousarray(astronaut[40:220, 140:320])
    result = offline.anonymize(crop, aligned=True)
    assert result.face_count == 1
    assert np.abs(result.image.astype(int) - crop.astype(int)).mean() > 5


def test_aligned_mode_refuses_a_photo_with_several_faces(offline: Anonymizer, t1: np.ndarray) -> None:
    with pytest.raises(InputError, match="found 6"):
        offline.anonymize(t1, aligned=True)
