"""Pixels to an image file: encoded in memory, then published by `rp_core.files.write` only once it decodes.

Pillow's JPEG and BMP encoders ignore a short write on a full disk, so the image is encoded into
memory and written with checked writes; the written file is decoded again before it replaces the target.
"""

from __future__ import annotations

import errno
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from rp_core.files.decode import to_rgb_array
from rp_core.files.formats import UsageError, format_for
from rp_core.files.metadata import ImageMetadata, exif_from_bytes, safe_metadata
from rp_core.files.write import atomic_write_bytes

#: Quality of lossy outputs whose input gives no better hint (a PNG written as JPEG, any WebP output).
JPEG_QUALITY = 95
#: zlib level of PNG outputs. PNG is lossless at every level; level 1 encodes a 1280x886 photo ~3x faster than
#: Pillow's default 6 (86 against 255-325 ms, on a CPU core where that is an eighth of a photo's time) for a file
#: ~12 % larger.
PNG_COMPRESS_LEVEL = 1


def write_image(
    path: Path | str,
    image: np.ndarray | Image.Image,
    *,
    metadata: ImageMetadata | None = None,
    keep_metadata: bool | None = None,
    keep_gps: bool = False,
    quality: int | None = None,
    before_publish: Callable[[], None] | None = None,
) -> Path:
    """Encode `image` and publish it at `path` with `atomic_write_bytes`; the target is untouched on any failure.

    `metadata` (from `read_image_with_metadata`) is written back, filtered by `safe_metadata`, when
    `keep_metadata` is true (None, the default, means "when `metadata` is given"); its JPEG hints are
    used either way. `quality` (1-100) applies to JPEG and WebP; None means: a JPEG input written as
    JPEG reuses its own quantization tables and subsampling, anything else gets `JPEG_QUALITY`.
    `before_publish` runs once the temporary file is complete, synced and checked, just before it
    replaces `path`: a run notes its intent there, so after a kill every output it wrote is known.
    Raises UsageError for an unsupported extension or quality, OSError (one line) when writing fails.
    """
    path = Path(path)
    fmt = format_for(path)
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"quality must be between 1 and 100, got {quality}")
    array = to_rgb_array(image)
    pil = Image.fromarray(array, mode="RGB")  # pixels only: no `info` of the input can be written out
    keep = metadata is not None if keep_metadata is None else keep_metadata
    kept = safe_metadata(metadata, keep_gps=keep_gps) if keep and metadata is not None else None
    options = _save_options(fmt, kept, metadata, quality)
    buffer = io.BytesIO()
    try:
        pil.save(buffer, format=fmt, **options)
    except (OSError, ValueError, TypeError) as exc:
        raise OSError(errno.EIO, f"cannot encode as {fmt}: {exc}", str(path)) from None

    def check(temp: Path) -> None:
        _check_decodes(temp, fmt, pil.size, path)

    return atomic_write_bytes(path, buffer.getbuffer(), before_publish=before_publish, check=check)


def _check_decodes(temp: Path, fmt: str, size: tuple[int, int], path: Path) -> None:
    """The written file must decode fully as the image just encoded (same format and size)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(temp) as written:
                found_format, found_size = written.format, written.size
                written.load()
    except Exception as exc:
        raise OSError(errno.EIO, f"the written file does not decode ({exc})", str(path)) from None
    if found_format != fmt or found_size != size:
        raise OSError(
            errno.EIO,
            f"the written file decodes as {found_format} {found_size}, expected {fmt} {size}",
            str(path),
        )


def _save_options(
    fmt: str, kept: ImageMetadata | None, hints: ImageMetadata | None, quality: int | None
) -> dict[str, object]:
    options: dict[str, object] = {}
    if fmt == "JPEG":
        options["optimize"] = True  # Huffman tables fitted to the image: smaller, same pixels
        tables = hints.jpeg_qtables if hints is not None and hints.source_format == "JPEG" else None
        if quality is None and tables and all(len(t) == 64 for t in tables):
            # the input's own tables: the output is about as large as the input and barely changes
            options["qtables"] = [list(tables[0]), list(tables[1] if len(tables) > 1 else tables[0])]
            if hints is not None and hints.jpeg_subsampling is not None:
                options["subsampling"] = hints.jpeg_subsampling
        else:
            options["quality"] = quality if quality is not None else JPEG_QUALITY
    elif fmt == "WEBP":
        options["quality"] = quality if quality is not None else JPEG_QUALITY
    elif fmt == "PNG":
        options["optimize"] = False
        options["compress_level"] = PNG_COMPRESS_LEVEL
    if kept is None or fmt == "BMP":
        return options
    if kept.icc_profile:
        options["icc_profile"] = kept.icc_profile
    if fmt == "TIFF":
        tags = exif_from_bytes(kept.exif) if kept.exif else Image.Exif()
        if kept.xmp:
            tags[700] = kept.xmp  # TIFF keeps XMP in its own tag
        if len(tags):
            options["exif"] = tags
        return options
    if kept.exif:
        options["exif"] = kept.exif
    if kept.xmp and fmt in ("JPEG", "WEBP"):
        options["xmp"] = kept.xmp
    elif kept.xmp and fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", kept.xmp.decode("utf-8"))
        options["pnginfo"] = info
    return options
