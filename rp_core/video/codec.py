"""Decode and encode with PyAV: RGB frames in display orientation out, the same timing and audio back in.

Frames come out of `VideoReader` upright (a phone clip stored sideways is turned by its display
rotation, so detectors see upright faces) and go into `VideoWriter` upright; the writer turns them
back and writes the same display rotation, so the file keeps its stored size and orientation.
Video timestamps are copied frame by frame (a variable-rate clip stays variable), audio packets
are copied unchanged (no re-encode) and interleaved by time, and nothing else is carried over:
no container or stream metadata, no subtitle, data or attachment streams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rp_core.errors import InputError
from rp_core.video.probe import normalized_rotation

#: Encoders for `codec="auto"` by muxer: H.264 everywhere it is allowed, VP9 where it is not (WebM).
AUTO_CODEC = {"webm": "libvpx-vp9"}
#: The constant-quality option of each encoder we know (its `crf` value means "visually lossless" at ~17-18
#: for x264/x265, ~15-20 for VP9).
CRF_ENCODERS = frozenset({"libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"})


#: x264's instruction sets capped below AVX-512: with its AVX-512 code the same frames encode to different
#: bytes from one encode to the next (small frames, B-frames; seen on an AMD EPYC with PyAV 18.1's x264
#: core 165: 11 versions in 12 encodes of a 320x192 clip, 1 with this cap), which would break resumed runs and
#: Ray's byte-identical outputs. Only set on CPUs that have AVX-512 (so AVX2 is there too): x264 takes the
#: list as given and would use instructions an older CPU lacks. Encoding speed is unchanged within noise.
X264_DETERMINISTIC_ASM = "asm=AVX2"


def cpu_has_avx512() -> bool:
    """Whether this CPU (and its OS) runs AVX-512 Foundation code: numpy's own runtime check where it exposes
    one (any OS), else the flags of /proc/cpuinfo (Linux); False where neither tells."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2, or a build without the table
        __cpu_features__ = {}
    if "AVX512F" in __cpu_features__:
        return bool(__cpu_features__["AVX512F"])
    return cpuinfo_has_avx512()


def cpuinfo_has_avx512(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether a Linux /proc/cpuinfo lists AVX-512 Foundation; False where it cannot be read."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class EncodeSettings:
    """How the anonymized video is encoded."""

    codec: str = "auto"
    crf: int = 18
    #: x264/x265 speed preset (slower: smaller files at the same quality).
    preset: str = "medium"
    #: None: keep the source pixel format when the encoder supports it, else yuv420p.
    pix_fmt: str | None = None


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: RGB uint8 in display orientation, and its source timing."""

    index: int
    image: np.ndarray
    pts: int | None
    time_base: Fraction | None
    time_s: float


class VideoReader:
    """Decodes the first video stream to RGB frames and keeps the first audio stream's packets aside."""

    def __init__(self, path: Path | str) -> None:
        import av

        self.path = Path(path)
        try:
            self.container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"{path}: cannot open as video ({exc})") from None
        if not self.container.streams.video:
            self.container.close()
            raise InputError(f"{path}: no video stream")
        self.video: Any = self.container.streams.video[0]
        self.video.thread_type = "AUTO"  # frame + slice threads: decoding is most of the offline preset's time
        self.audio: Any = self.container.streams.audio[0] if self.container.streams.audio else None
        #: audio packets demuxed but not yet written (the writer takes them in time order)
        self.audio_packets: deque[Any] = deque()
        self.rotation = 0

    def frames(self) -> Iterator[DecodedFrame]:
        """Every frame in decode order (presentation order for all common codecs)."""
        import av

        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        index = 0
        try:
            for packet in self.container.demux(*streams):
                if packet.stream is self.audio:
                    if packet.dts is not None:  # the demuxer's final empty packet carries nothing
                        self.audio_packets.append(packet)
                    continue
                decoded: list[Any] = list(packet.decode())
                for frame in decoded:
                    if index == 0:
                        self.rotation = normalized_rotation(frame.rotation)
                    image = frame.to_ndarray(format="rgb24")
                    if self.rotation:
                        image = np.ascontiguousarray(np.rot90(image, self.rotation // 90))
                    time_s = float(frame.time) if frame.time is not None else index / float(self.rate)
                    yield DecodedFrame(index, image, frame.pts, frame.time_base, time_s)
                    index += 1
        except av.FFmpegError as exc:
            raise InputError(f"{self.path}: cannot decode frame {index} ({exc})") from None

    @property
    def rate(self) -> Fraction:
        return Fraction(self.video.average_rate or self.video.guessed_rate or 30)

    def close(self) -> None:
        self.container.close()


def output_codec(muxer: str, settings: EncodeSettings) -> str:
    return settings.codec if settings.codec != "auto" else AUTO_CODEC.get(muxer, "libx264")


def output_pix_fmt(codec: str, source: str, wanted: str | None) -> str:
    """The source pixel format if the encoder takes it (e.g. 4:2:2 or 10-bit stays), else yuv420p."""
    import av

    if wanted:
        return wanted
    try:
        formats = {f.name for f in (av.Codec(codec, "w").video_formats or ())}
    except Exception:
        formats = set()
    return source if source in formats else "yuv420p"


class VideoWriter:
    """Encodes upright RGB frames with the source's timing and rotation; copies the reader's audio packets."""

    container: Any
    stream: Any
    audio: Any

    def __init__(self, path: Path, muxer: str, reader: VideoReader, settings: EncodeSettings) -> None:
        import av

        self.reader = reader
        self.container = av.open(str(path), mode="w", format=muxer)
        source = reader.video
        codec = output_codec(muxer, settings)
        try:
            self.stream = self.container.add_stream(codec, rate=reader.rate)
        except (av.FFmpegError, ValueError) as exc:
            self.container.close()
            raise InputError(f"video codec {codec!r}: cannot encode ({exc})") from None
        self.stream.width = source.codec_context.width
        self.stream.height = source.codec_context.height
        self.stream.pix_fmt = output_pix_fmt(codec, source.codec_context.pix_fmt or "yuv420p", settings.pix_fmt)
        if source.time_base is not None:
            self.stream.time_base = source.time_base
        if source.codec_context.sample_aspect_ratio:
            self.stream.codec_context.sample_aspect_ratio = source.codec_context.sample_aspect_ratio
        options: dict[str, str] = {}
        if codec in CRF_ENCODERS:
            options["crf"] = str(settings.crf)
        if codec in ("libx264", "libx265"):
            options["preset"] = settings.preset
        if codec == "libx264" and cpu_has_avx512():
            options["x264-params"] = X264_DETERMINISTIC_ASM
        if codec == "libvpx-vp9":
            options.update({"b": "0", "row-mt": "1"})
        self.stream.options = options
        self.codec, self.pix_fmt = codec, self.stream.pix_fmt
        self.audio = None
        if reader.audio is not None:
            try:
                self.audio = self.container.add_stream_from_template(reader.audio)
            except (av.FFmpegError, ValueError) as exc:
                self.container.close()
                raise InputError(
                    f"audio {reader.audio.codec_context.name!r}: cannot copy into {muxer} ({exc})"
                ) from None
        self._rotation_set = False
        self._count = 0

    def write(self, frame: DecodedFrame, image: np.ndarray) -> None:
        """Encode one upright RGB frame at the source frame's timestamp, after the audio that precedes it."""
        import av

        if not self._rotation_set:
            rotation = self.reader.rotation
            if rotation:
                self.stream.set_display_rotation(rotation)
            self._rotation_set = True
        self.copy_audio(until_s=frame.time_s)
        stored = np.rot90(image, -(self.reader.rotation // 90)) if self.reader.rotation else image
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored), format="rgb24")
        if frame.pts is not None and frame.time_base is not None:
            out.pts, out.time_base = frame.pts, frame.time_base
        else:
            out.pts, out.time_base = self._count, 1 / self.reader.rate
        for packet in self.stream.encode(out):
            self.container.mux(packet)
        self._count += 1

    def copy_audio(self, until_s: float | None = None) -> None:
        """Write the reader's pending audio packets up to `until_s` seconds (all of them for None)."""
        queue = self.reader.audio_packets
        while queue:
            packet = queue[0]
            if until_s is not None and packet.time_base is not None and packet.dts * packet.time_base > until_s:
                break
            queue.popleft()
            if self.audio is not None:
                packet.stream = self.audio
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and the remaining audio, write the trailer."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.copy_audio(None)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # the partial file is deleted anyway
            pass
