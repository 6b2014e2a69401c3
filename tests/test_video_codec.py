"""The encoder gives the same bytes for the same frames: resumed runs and Ray's outputs depend on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from rp_core.config import resolve_config  # noqa: E402
from rp_core.pipeline import assemble  # noqa: E402
from rp_core.plugins import PluginHost  # noqa: E402
from rp_core.video import anonymize_video  # noqa: E402
from rp_core.video.codec import EncodeSettings, VideoReader, VideoWriter, cpuinfo_has_avx512  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402


def _encode(source: Path, frames: list[np.ndarray], target: Path) -> bytes:
    reader = VideoReader(source)
    writer = VideoWriter(target, "mp4", reader, EncodeSettings())
    try:
        for decoded, image in zip(reader.frames(), frames, strict=True):
            writer.write(decoded, image)
        writer.close()
    finally:
        reader.close()
    return target.read_bytes()


def test_the_same_frames_encode_to_the_same_bytes(tmp_path: Path, t1: np.ndarray, host: PluginHost) -> None:
    """An anonymized small clip (a pixelated face leaving at the border), its frames encoded again and again in
    one process: x264's AVX-512 code gave 11 versions in 12 encodes of these frames on an AMD EPYC before its
    instruction sets were capped (the raw clip's frames happen to encode the same)."""
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=10, size=(320, 192), span=0.2)
    config = resolve_config(host, preset="offline", overrides=["coverage.detector=null"], environ={})
    anonymize_video(assemble(config, host), clip, tmp_path / "anonymized.mp4")
    reader = VideoReader(tmp_path / "anonymized.mp4")
    frames = [f.image for f in reader.frames()] * 3
    reader.close()
    source = pan_zoom_clip(t1, tmp_path / "long.mp4", frames=len(frames), size=(320, 192), tone_hz=None)
    outputs = {_encode(source, frames, tmp_path / f"out{k}.mp4") for k in range(12)}
    assert len(outputs) == 1, f"{len(outputs)} different files from 12 encodes"


def test_avx512_is_read_from_the_cpu_flags_where_numpy_does_not_tell(tmp_path: Path) -> None:
    (tmp_path / "with").write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")
    (tmp_path / "without").write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_bf16x\n")
    assert cpuinfo_has_avx512(tmp_path / "with")
    assert not cpuinfo_has_avx512(tmp_path / "without")
    assert not cpuinfo_has_avx512(tmp_path / "missing")


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="Linux: /proc/cpuinfo")
def test_numpys_runtime_check_agrees_with_the_cpu_flags() -> None:
    from rp_core.video.codec import cpu_has_avx512

    assert cpu_has_avx512() == cpuinfo_has_avx512()
