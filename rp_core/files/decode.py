"""Image files to pixels: RGB uint8, EXIF orientation applied exactly once, every mode converted.

Greyscale, RGBA, palette, 16-bit and CMYK inputs all become RGB, so detectors see what a viewer shows;
an embedded colour profile that LittleCMS can apply is applied (the pixels become sRGB).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rp_core.errors import InputError
from rp_core.files.formats import supported_list
from rp_core.files.metadata import ImageMetadata, clean_icc, metadata_of

#: Larger images are refused: they would exhaust memory long before a face is found.
MAX_PIXELS = 178_956_970


def read_image(path: Path | str) -> np.ndarray:
    """Decode an image file to an RGB uint8 (H, W, 3) array; any failure is one InputError line."""
    return read_image_with_metadata(path)[0]


def read_image_with_metadata(path: Path | str, *, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageMetadata]:
    """Decode like `read_image` and also return the metadata a `--keep-metadata` run may write back."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                with Image.open(path) as opened:
                    frames = int(getattr(opened, "n_frames", 1))
                    if opened.format == "MPO":
                        # a phone's multi-picture JPEG (depth map, gain map of Ultra HDR, ...): frame 0 is
                        # the photo; the other frames are never decoded, so none of them reaches the output
                        opened.seek(0)
                    elif frames > 1:
                        raise InputError(
                            f"{path}: has {frames} frames (animated or multi-page); "
                            "only single-frame images are supported, extract the frames first"
                        )
                    opened.load()
                    metadata = metadata_of(opened)
                    image = ImageOps.exif_transpose(opened)
                    image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read (supported: {supported_list()})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None
    converted = _to_rgb(image)
    icc = metadata.icc_profile
    if converted.icc_applied:
        icc = _srgb_profile()  # the pixels are sRGB now: the input's own profile would misdescribe them
    elif icc is not None and image.mode not in ("RGB", "RGBA", "P", "PA"):
        icc = None  # a CMYK or grey profile (one that could not be applied) cannot describe RGB pixels
    elif icc is not None:
        icc = clean_icc(icc)  # rebuilt from what LittleCMS parsed, or dropped: never the input's bytes
    return converted.array, ImageMetadata(
        exif=metadata.exif,
        icc_profile=icc,
        xmp=metadata.xmp,
        source_format=metadata.source_format,
        jpeg_qtables=metadata.jpeg_qtables,
        jpeg_subsampling=metadata.jpeg_subsampling,
        flattened_transparency=converted.flattened,
    )


def to_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """Any PIL image or uint8 array (greyscale, RGB, RGBA) as an RGB uint8 (H, W, 3) array.

    Transparency is composited on white; a PIL image carrying a profile is colour-managed to sRGB.
    """
    return convert_to_rgb(image)[0]


def convert_to_rgb(image: np.ndarray | Image.Image) -> tuple[np.ndarray, bool]:
    """Like `to_rgb_array`, and whether transparent pixels were flattened on white (worth telling the user)."""
    if isinstance(image, Image.Image):
        converted = _to_rgb(image)
        return converted.array, converted.flattened
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got {array.dtype} {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2)), False
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array), False
    if array.ndim == 3 and array.shape[2] == 4:
        converted = _to_rgb(Image.fromarray(np.ascontiguousarray(array), mode="RGBA"))
        return converted.array, converted.flattened
    raise ValueError(f"expected a greyscale, RGB or RGBA (H, W[, C]) image, got shape {array.shape}")


@dataclass(frozen=True)
class _Converted:
    array: np.ndarray
    icc_applied: bool
    flattened: bool


def _to_rgb(image: Image.Image) -> _Converted:
    image = _to_8bit(image)
    icc_applied = False
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "CMYK", "L"):
        managed = _icc_to_srgb(image, icc)
        if managed is not None:
            image, icc_applied = managed, True
    flattened = False
    if image.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        lowest_alpha = rgba.getchannel("A").getextrema()[0]  # one band: (min, max)
        flattened = isinstance(lowest_alpha, int) and lowest_alpha < 255
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return _Converted(np.ascontiguousarray(array), icc_applied, flattened)


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit and 32-bit greyscale to 8 bits instead of letting Pillow clip them."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        scaled = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        scaled = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    return image


def _icc_to_srgb(image: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        target = ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(image, source, target, outputMode="RGB")
    except Exception:  # a broken profile is not worth refusing the photo for: use the raw values
        return None


def _srgb_profile() -> bytes | None:
    try:
        from PIL import ImageCms

        return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    except Exception:
        return None
