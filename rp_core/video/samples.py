"""Synthetic clips for tests, benchmarks and docs: a still photo panned and zoomed, with a sine tone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rp_core.files.formats import MUXERS
from rp_core.files.write import publishing


def pan_zoom_clip(
    photo: np.ndarray,
    path: Path | str,
    *,
    frames: int = 60,
    size: tuple[int, int] = (640, 360),
    fps: int = 30,
    zoom: tuple[float, float] = (0.91, 1.1),
    tone_hz: float | None = 440.0,
    rotation: int = 0,
    metadata: dict[str, str] | None = None,
    span: float = 1.0,
) -> Path:
    """Write an H.264 clip that pans across `photo` left to right while zooming (faces move and change size).

    `zoom` is the scale from photo pixels to clip pixels at the first and last frame; a `span` below 1
    covers only that part of the path (slower motion). With `tone_hz`
    the clip has an AAC sine tone as long as the video; `rotation` sets a display rotation; `metadata`
    goes into the container's tags (what an anonymized copy must not carry).
    """
    import av
    import cv2

    width, height = size
    path = Path(path)
    container: Any
    # the clip is encoded into a temporary file (its muxer named, the name does not tell) and published whole
    with publishing(path) as draft, av.open(str(draft.path), mode="w", format=MUXERS[path.suffix.lower()]) as container:
        container.metadata.update(metadata or {})
        video: Any = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "16", "preset": "veryfast"}
        if rotation:
            video.set_display_rotation(rotation)
        audio: Any = None
        if tone_hz is not None:
            audio = container.add_stream("aac", rate=48000)
            audio.layout = "mono"
        for i in range(frames):
            t = span * i / max(frames - 1, 1)
            scale = zoom[0] + (zoom[1] - zoom[0]) * t
            window_w, window_h = width / scale, height / scale
            x0 = (photo.shape[1] - window_w) * t
            y0 = (photo.shape[0] - window_h) * (0.35 + 0.1 * np.sin(np.pi * t))
            matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
            image = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
            frame: Any = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None and tone_hz is not None:
            tone, rate, chunk = float(tone_hz), 48000, 1024
            total = int(rate * frames / fps)
            for start in range(0, total, chunk):
                n = min(chunk, total - start)
                times = (start + np.arange(n)) / rate
                samples = (0.3 * np.sin(2 * np.pi * tone * times)).astype(np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return path
