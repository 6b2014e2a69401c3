"""Smoke tests with the real downloaded weights (opt in: RP_SLOW_TESTS=1, after `rp models download`).

They cannot run on a machine without network or GPU (CI here): they are for users and maintainers with
both, and check what the random-weight tests cannot, that the paper's pipeline really changes who a face is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rp_core.cli import create_cli
from rp_core.io import read_image, write_image

pytestmark = pytest.mark.slow


def test_default_pipeline_on_t1_leaves_nobody_recognisable(tmp_path: Path, t1: np.ndarray, reidentifier) -> None:  # type: ignore[no-untyped-def]
    write_image(tmp_path / "t1.png", t1)
    result = CliRunner().invoke(create_cli(), ["anonymize", str(tmp_path / "t1.png"), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 0, result.output
    output = read_image(tmp_path / "out.png")
    found = reidentifier.descriptors(output, upsample=1)
    for original in reidentifier.descriptors(t1):
        assert min((float(np.linalg.norm(original - d)) for d in found), default=np.inf) > reidentifier.threshold
    records = json.loads((tmp_path / "out.png.manifest.json").read_text())["images"][0]["faces"]
    assert len(records) == 6 and all(r["action"] == "regenerated" for r in records)


def test_sfd_and_buffalo_l_find_and_match_the_same_person(t1: np.ndarray) -> None:
    from rp_core.config import resolve_config
    from rp_core.pipeline import assemble
    from rp_core.plugins import PluginHost

    host = PluginHost()
    pipeline = assemble(resolve_config(host, environ={}), host)
    detector, encoder = pipeline.detect, pipeline.encode
    assert encoder is not None
    detector.load()
    encoder.load()
    faces = detector.detect(t1)
    assert len(faces) == 6
    flipped = np.ascontiguousarray(t1[:, ::-1])
    a = encoder.encode(t1, faces)
    b = encoder.encode(flipped, detector.detect(flipped))
    best = [max(float(x.vector @ y.vector) for y in b) for x in a]
    assert min(best) > encoder.match_threshold
