"""Video: every face of every frame anonymized, one new identity per tracked person, audio copied unchanged.

`anonymize_video(pipeline, source, target, options, on_event) -> VideoResult` is the entry point.
Importing this package is cheap (planning needs only `is_video`); the orchestrator, PyAV (the
`video` extra) and the `trackers` package load when a video is processed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rp_core.video.probe import MUXERS, VIDEO_EXTENSIONS, VideoInfo, is_video, probe

if TYPE_CHECKING:
    from rp_core.video.codec import EncodeSettings
    from rp_core.video.run import VideoOptions, VideoProgress, VideoResult, anonymize_video, video_warnings

_LAZY = {
    "EncodeSettings": "rp_core.video.codec",
    "VideoOptions": "rp_core.video.run",
    "VideoProgress": "rp_core.video.run",
    "VideoResult": "rp_core.video.run",
    "anonymize_video": "rp_core.video.run",
    "video_warnings": "rp_core.video.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rp_core.video' has no attribute {name!r}")


__all__ = [
    "MUXERS",
    "VIDEO_EXTENSIONS",
    "EncodeSettings",
    "VideoInfo",
    "VideoOptions",
    "VideoProgress",
    "VideoResult",
    "anonymize_video",
    "is_video",
    "probe",
    "video_warnings",
]
