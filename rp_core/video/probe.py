"""What a video file holds: size, frame rate, frame count, display rotation, audio.

Which files are videos, and their muxers, is `rp_core.files.formats`'s to say (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rp_core.files.formats import MUXERS, VIDEO_EXTENSIONS, is_video

if TYPE_CHECKING:
    from fractions import Fraction

__all__ = ["MUXERS", "VIDEO_EXTENSIONS", "VideoInfo", "is_video", "normalized_rotation", "probe"]


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream of a file, as decoded (width/height are the stored, unrotated size)."""

    width: int
    height: int
    #: Average frame rate; timestamps are kept as they are, so variable-rate clips stay variable.
    fps: Fraction
    #: Frames the container declares (0 when it does not say); the output has exactly as many as decode.
    frames: int
    #: Counter-clockwise display rotation in degrees (a phone's portrait clip is stored sideways).
    rotation: int
    codec: str
    pix_fmt: str
    has_audio: bool
    audio_codec: str | None
    duration_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "fps": float(self.fps),
            "frames": self.frames,
            "rotation": self.rotation,
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "audio_codec": self.audio_codec,
            "duration_s": self.duration_s,
        }


def probe(path: Path | str) -> VideoInfo:
    """Read the header (and the first frame, for its rotation) of `path`; raises InputError if no video stream."""
    import av

    from rp_core.errors import InputError

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: cannot open as video ({exc})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        rotation = 0
        for frame in container.decode(stream):
            rotation = normalized_rotation(frame.rotation)
            break
        from fractions import Fraction

        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=Fraction(rate),
            frames=int(stream.frames or 0),
            rotation=rotation,
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt or "yuv420p",
            has_audio=audio is not None,
            audio_codec=None if audio is None else audio.codec_context.name,
            duration_s=duration,
        )


def normalized_rotation(degrees: float | int | None) -> int:
    """A display rotation snapped to 0, 90, 180 or 270 (other angles do not occur in practice)."""
    return int(round((degrees or 0) / 90.0)) % 4 * 90
