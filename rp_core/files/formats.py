"""Which files rp reads and writes: image extensions and their Pillow formats, video containers and their muxers."""

from __future__ import annotations

from pathlib import Path

from rp_core.errors import RpError

#: Extension -> Pillow format used to write it (reading sniffs the content instead).
FORMATS: dict[str, str] = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(FORMATS)

#: Container extensions rp reads and writes as video (the output keeps the input's container).
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
#: The libavformat muxer for each extension (a temporary `.part` file has no telling extension).
MUXERS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
}
#: Files rp does not process but that may show a face: a skipped one is worth a warning.
IMAGE_LIKE_EXTENSIONS: frozenset[str] = SUPPORTED_EXTENSIONS | frozenset(
    ".jpe .jfif .gif .heic .heif .avif .jxl .jp2 .j2k .jpx .psd .psb .xcf .ico .icns .tga .ppm .pgm .pbm .pnm "
    ".pcx .dds .exr .hdr .dng .cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .orf .rw2 .raf .srw .pef .raw .rwl .3fr "
    ".mp4 .mov .m4v .avi .mkv .webm .3gp .mts .m2ts .wmv .mpg .mpeg".split()
)


class UsageError(RpError):
    """The command asks for something rp cannot do (`-o out.gif`, `-o -`): exit code 2, like a bad flag."""

    exit_code = 2


def supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_EXTENSIONS))


def is_video(path: Path | str) -> bool:
    """True for a file rp anonymizes as a video (by extension, like images)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_supported(path: Path | str) -> bool:
    """An image rp reads and writes, or a video (rp_core.video: every frame, audio kept)."""
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS or is_video(path)


def format_for(path: Path | str) -> str:
    """The Pillow format an output path's extension asks for; an unsupported one is a UsageError (exit 2)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"{path}: cannot write {suffix or 'files without an extension'!r}; use one of {supported_list()}"
        )
    return FORMATS[suffix]


def check_output_format(source: Path, target: Path) -> None:
    """A video is written as a video (its container named by the extension), an image as an image."""
    if is_video(source):
        if target.suffix.lower() not in MUXERS:
            raise UsageError(f"{target}: a video is written as a video; use one of {', '.join(sorted(MUXERS))}")
    else:
        format_for(target)
