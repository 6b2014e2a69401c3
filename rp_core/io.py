"""Image files in and out: decode to RGB uint8, encode with checked atomic writes, keep only safe metadata, plan inputs.

Reading applies EXIF orientation exactly once and converts every mode (greyscale,
RGBA, palette, 16-bit, CMYK) to RGB, so detectors see what a viewer shows.

Writing fails closed. The image is encoded in memory, written to a temporary file
beside the target with checked writes (Pillow's JPEG and BMP encoders ignore a short
write on a full disk), synced, measured and decoded again; only then does it replace
the target. A failure leaves the target (with --in-place: the original) untouched.

Metadata is dropped unless asked for, and even then only an allow-list of technical
EXIF/XMP fields survives: never names, face regions, serial numbers, owners, free
text, thumbnails or (unless asked) GPS.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rp_core.errors import InputError, RpError

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
#: Files rp does not process but that may show a face: a skipped one is worth a warning.
IMAGE_LIKE_EXTENSIONS: frozenset[str] = SUPPORTED_EXTENSIONS | frozenset(
    ".jpe .jfif .gif .heic .heif .avif .jxl .jp2 .j2k .jpx .psd .psb .xcf .ico .icns .tga .ppm .pgm .pbm .pnm "
    ".pcx .dds .exr .hdr .dng .cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .orf .rw2 .raf .srw .pef .raw .rwl .3fr "
    ".mp4 .mov .m4v .avi .mkv .webm .3gp .mts .m2ts .wmv .mpg .mpeg".split()
)
#: Quality of lossy outputs whose input gives no better hint (a PNG written as JPEG, any WebP output).
JPEG_QUALITY = 95
#: Larger images are refused: they would exhaust memory long before a face is found.
MAX_PIXELS = 178_956_970


class UsageError(RpError):
    """The command asks for something rp cannot do (`-o out.gif`, `-o -`): exit code 2, like a bad flag."""

    exit_code = 2


@dataclass(frozen=True)
class ImageMetadata:
    """What a decoded input carried: metadata that is written back only on request, and encoding hints.

    `exif` and `xmp` already hold only allowed fields (see `safe_metadata`); `icc_profile` describes the
    decoded pixels (sRGB when an embedded profile was applied). The JPEG fields let a JPEG input be
    written back with its own quantization tables, so the output is about as large as the input.
    """

    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    source_format: str | None = None
    jpeg_qtables: tuple[tuple[int, ...], ...] | None = None
    jpeg_subsampling: int | None = None
    #: transparent pixels were composited on white: the caller should tell the user
    flattened_transparency: bool = False


def _supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_EXTENSIONS))


# -- reading --------------------------------------------------------------------------------


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
                    metadata = _metadata_of(opened)
                    image = ImageOps.exif_transpose(opened)
                    image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read (supported: {_supported_list()})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None
    converted = _to_rgb(image)
    icc = metadata.icc_profile
    if converted.icc_applied:
        icc = _srgb_profile()  # the pixels are sRGB now: the input's own profile would misdescribe them
    elif icc is not None and image.mode not in ("RGB", "RGBA", "P", "PA"):
        icc = None  # a CMYK or grey profile (one that could not be applied) cannot describe RGB pixels
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


def _metadata_of(opened: Image.Image) -> ImageMetadata:
    """The allowed metadata of an open file (read before orientation is applied: a copy loses TIFF tags)."""
    try:
        exif = _allowed_exif(opened.getexif(), keep_gps=True)
    except Exception:  # unreadable EXIF is dropped, never a reason to refuse the photo
        exif = None
    xmp = opened.info.get("xmp") or opened.info.get("XML:com.adobe.xmp")
    qtables: tuple[tuple[int, ...], ...] | None = None
    subsampling: int | None = None
    if opened.format in ("JPEG", "MPO"):
        from PIL import JpegImagePlugin

        tables = getattr(opened, "quantization", None) or {}
        if tables:
            qtables = tuple(tuple(int(v) for v in tables[k]) for k in sorted(tables))
        sampling = JpegImagePlugin.get_sampling(opened)
        subsampling = sampling if sampling in (0, 1, 2) else None
    return ImageMetadata(
        exif=exif,
        icc_profile=opened.info.get("icc_profile") or None,
        xmp=filter_xmp(xmp, keep_gps=True) if xmp else None,
        source_format="JPEG" if opened.format == "MPO" else opened.format,
        jpeg_qtables=qtables,
        jpeg_subsampling=subsampling,
    )


# -- metadata allowed to be kept ----------------------------------------------------------------

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
#: IFD0: Make, Model, XResolution, YResolution, ResolutionUnit, Software, DateTime.
_IFD0_ALLOWED = frozenset({0x010F, 0x0110, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132})
#: Exif IFD: exposure, lens, date and rendering facts. Left out on purpose: MakerNote (vendors store serial
#: numbers, owner names and face positions in it), UserComment, ImageUniqueID, CameraOwnerName,
#: BodySerialNumber, LensSerialNumber, SubjectArea/SubjectLocation (where the face is).
_EXIF_IFD_ALLOWED = frozenset(
    {
        0x829A, 0x829D, 0x8822, 0x8827, 0x8830, 0x8832, 0x9000, 0x9003, 0x9004, 0x9010, 0x9011, 0x9012,
        0x9201, 0x9202, 0x9203, 0x9204, 0x9205, 0x9206, 0x9207, 0x9208, 0x9209, 0x920A, 0x9290, 0x9291,
        0x9292, 0xA001, 0xA20E, 0xA20F, 0xA210, 0xA217, 0xA300, 0xA301, 0xA401, 0xA402, 0xA403, 0xA404,
        0xA405, 0xA406, 0xA407, 0xA408, 0xA409, 0xA40A, 0xA40C, 0xA432, 0xA433, 0xA434,
    }
)  # fmt: skip


def _allowed_exif(exif: Image.Exif, *, keep_gps: bool) -> bytes | None:
    """A fresh EXIF block with only the allowed tags (no orientation: it is applied to the pixels)."""
    fresh = Image.Exif()
    for tag in _IFD0_ALLOWED:
        if tag in exif:
            fresh[tag] = exif[tag]
    sub = {tag: value for tag, value in exif.get_ifd(_EXIF_IFD).items() if tag in _EXIF_IFD_ALLOWED}
    if sub:
        fresh.get_ifd(_EXIF_IFD).update(sub)
    gps = dict(exif.get_ifd(_GPS_IFD)) if keep_gps else {}
    if gps:
        fresh.get_ifd(_GPS_IFD).update(gps)
    if not len(fresh) and not sub and not gps:
        return None
    return bytes(fresh.tobytes())


def _exif_from_bytes(data: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(data)
    return exif


_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
#: XMP namespace -> (prefix written, properties kept). Everything else (MWG/Microsoft face regions, IPTC
#: persons and creator contacts, dc:creator/rights/description/subject, photoshop by-lines and places,
#: Lightroom/digiKam people keywords, camera serials and owners, embedded images, edit history) is dropped.
_XMP_ALLOWED: dict[str, tuple[str, frozenset[str]]] = {
    "http://ns.adobe.com/xap/1.0/": (
        "xmp",
        frozenset({"CreateDate", "ModifyDate", "MetadataDate", "CreatorTool", "Rating", "Label"}),
    ),
    "http://ns.adobe.com/tiff/1.0/": (
        "tiff",
        frozenset({"Make", "Model", "XResolution", "YResolution", "ResolutionUnit", "Software", "DateTime"}),
    ),
    "http://ns.adobe.com/exif/1.0/": (
        "exif",
        frozenset(
            "ExposureTime FNumber ExposureProgram ISOSpeedRatings ExifVersion DateTimeOriginal DateTimeDigitized "
            "ShutterSpeedValue ApertureValue BrightnessValue ExposureBiasValue MaxApertureValue SubjectDistance "
            "MeteringMode LightSource FocalLength ColorSpace FocalPlaneXResolution FocalPlaneYResolution "
            "FocalPlaneResolutionUnit SensingMethod FileSource SceneType CustomRendered ExposureMode WhiteBalance "
            "DigitalZoomRatio FocalLengthIn35mmFilm SceneCaptureType GainControl Contrast Saturation Sharpness "
            "SubjectDistanceRange".split()
        ),
    ),
    "http://cipa.jp/exif/1.0/": (
        "exifEX",
        frozenset(
            "LensMake LensModel LensSpecification PhotographicSensitivity SensitivityType "
            "RecommendedExposureIndex".split()
        ),
    ),
    "http://ns.adobe.com/exif/1.0/aux/": (
        "aux",
        frozenset({"Lens", "LensInfo", "LensID", "FlashCompensation", "ApproximateFocusDistance"}),
    ),
    "http://ns.adobe.com/photoshop/1.0/": ("photoshop", frozenset({"DateCreated", "ColorMode", "ICCProfile"})),
    "http://purl.org/dc/elements/1.1/": ("dc", frozenset({"format"})),
    "http://ns.adobe.com/xap/1.0/rights/": ("xmpRights", frozenset({"Marked", "UsageTerms", "WebStatement"})),
}
_XMP_GPS_NAMESPACE = "http://ns.adobe.com/exif/1.0/"


def safe_metadata(metadata: ImageMetadata, *, keep_gps: bool = False) -> ImageMetadata:
    """Only what may be written back: allowed EXIF and XMP fields (GPS only with `keep_gps`), the ICC profile.

    Fails closed: EXIF or XMP that cannot be parsed is dropped whole.
    """
    exif: bytes | None = None
    if metadata.exif:
        try:
            exif = _allowed_exif(_exif_from_bytes(metadata.exif), keep_gps=keep_gps)
        except Exception:
            exif = None
    xmp = filter_xmp(metadata.xmp, keep_gps=keep_gps) if metadata.xmp else None
    return ImageMetadata(
        exif=exif,
        icc_profile=metadata.icc_profile,
        xmp=xmp,
        source_format=metadata.source_format,
        jpeg_qtables=metadata.jpeg_qtables,
        jpeg_subsampling=metadata.jpeg_subsampling,
        flattened_transparency=metadata.flattened_transparency,
    )


def filter_xmp(xmp: bytes | str, *, keep_gps: bool = False) -> bytes | None:
    """A new XMP packet holding only allowed properties of `xmp`; None when nothing is left or it cannot be parsed.

    Parsed with a real XML parser; a packet with a DTD (entity tricks) or one that does not parse is dropped whole.
    """
    try:  # XMP in UTF-16/32 is legal but rare: refusing it keeps the DTD check below honest
        text = xmp if isinstance(xmp, str) else bytes(xmp).decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.strip("\x00 \t\r\n\ufeff")
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return None
    try:
        root = ElementTree.fromstring(text.encode("utf-8"))
    except (ElementTree.ParseError, ValueError):
        return None
    kept: list[str] = []
    namespaces: dict[str, str] = {}
    rdf_roots = [root] if root.tag == f"{{{_RDF}}}RDF" else list(root.iter(f"{{{_RDF}}}RDF"))
    for rdf in rdf_roots:
        for description in rdf.findall(f"{{{_RDF}}}Description"):
            for name, value in description.attrib.items():
                allowed = _allowed_property(name, keep_gps)
                if allowed is not None:
                    namespaces[allowed[0]] = allowed[1]
                    kept.append(f"<{allowed[2]}>{escape(value)}</{allowed[2]}>")
            for child in description:
                allowed = _allowed_property(child.tag, keep_gps)
                serialized = _simple_value(child, allowed[2]) if allowed is not None else None
                if allowed is not None and serialized is not None:
                    namespaces[allowed[0]] = allowed[1]
                    kept.append(serialized)
    if not kept:
        return None
    declarations = "".join(f" xmlns:{prefix}={quoteattr(uri)}" for uri, prefix in sorted(namespaces.items()))
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        f'<rdf:RDF xmlns:rdf="{_RDF}"><rdf:Description rdf:about=""{declarations}>'
        + "".join(kept)
        + '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    ElementTree.fromstring(packet.encode("utf-8"))  # what we write must itself be well-formed
    return packet.encode("utf-8")


def _allowed_property(tag: str, keep_gps: bool) -> tuple[str, str, str] | None:
    """(namespace, prefix, prefix:name) of an allowed property given as `{namespace}name`, else None."""
    if not tag.startswith("{"):
        return None
    namespace, _, name = tag[1:].partition("}")
    if namespace == _XMP_GPS_NAMESPACE and name.startswith("GPS"):
        return (namespace, "exif", f"exif:{name}") if keep_gps else None
    entry = _XMP_ALLOWED.get(namespace)
    if entry is None or name not in entry[1]:
        return None
    return namespace, entry[0], f"{entry[0]}:{name}"


def _simple_value(element: ElementTree.Element, qname: str) -> str | None:
    """A property with a text value, or an rdf:Seq/Bag/Alt of text items, re-serialized; anything else None."""
    if element.attrib:
        return None
    children = list(element)
    if not children:
        return f"<{qname}>{escape(element.text or '')}</{qname}>"
    if len(children) != 1 or children[0].tag not in (f"{{{_RDF}}}Seq", f"{{{_RDF}}}Bag", f"{{{_RDF}}}Alt"):
        return None
    container = children[0]
    items: list[str] = []
    for item in container:
        if item.tag != f"{{{_RDF}}}li" or len(item) or set(item.attrib) - {_XML_LANG}:
            return None
        lang = f" xml:lang={quoteattr(item.attrib[_XML_LANG])}" if _XML_LANG in item.attrib else ""
        items.append(f"<rdf:li{lang}>{escape(item.text or '')}</rdf:li>")
    kind = container.tag.rpartition("}")[2]
    return f"<{qname}><rdf:{kind}>{''.join(items)}</rdf:{kind}></{qname}>"


# -- writing --------------------------------------------------------------------------------


def format_for(path: Path | str) -> str:
    """The Pillow format an output path's extension asks for; an unsupported one is a UsageError (exit 2)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"{path}: cannot write {suffix or 'files without an extension'!r}; use one of {_supported_list()}"
        )
    return FORMATS[suffix]


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


def atomic_write_bytes(
    path: Path | str,
    data: bytes | bytearray | memoryview,
    *,
    before_publish: Callable[[], None] | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write `data` to `path` so that `path` is either untouched or holds exactly `data`, synced to disk.

    The bytes go to a temporary file beside `path` through a loop of checked writes (a short or failed
    write is an error, never ignored), which is synced and its size compared with `len(data)`; then
    `check(temp)` may inspect it (raise to refuse), `before_publish()` runs, and the file atomically
    replaces `path` (keeping an existing target's permissions) and the folder is synced. On any failure
    the temporary file is removed and OSError (with errno, a one-line reason and the path) is raised.
    """
    path = Path(path)
    view = memoryview(data).cast("B")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    temp = Path(temp_name)
    try:
        try:
            _write_all(handle, view, path)
            os.fsync(handle)
            size = os.fstat(handle).st_size
        finally:
            os.close(handle)
        if size != len(view):
            raise OSError(errno.EIO, f"{size} of {len(view)} bytes reached the disk", str(path))
        if check is not None:
            check(temp)
        if before_publish is not None:
            before_publish()
        publish(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def _write_all(handle: int, view: memoryview, path: Path) -> None:
    written = 0
    while written < len(view):
        try:
            count = os.write(handle, view[written:])
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"{reason} (after {written} of {len(view)} bytes)", str(path)) from None
        if count <= 0:
            raise OSError(errno.EIO, f"write stalled after {written} of {len(view)} bytes", str(path))
        written += count


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


def fsync_folder(folder: Path) -> None:
    """Make the rename durable; filesystems (and systems) that cannot sync a folder are let be."""
    if os.name == "nt":
        return
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(handle)


def publish(temp_name: str | Path, path: Path) -> None:
    """Move a finished temporary file into place, with the replaced file's permissions (else the umask's).

    mkstemp makes files 0600; an --in-place original that was 0600 must not come back world-readable either.
    """
    try:
        existing = os.stat(path)
    except OSError:
        existing = None
    if existing is not None and stat.S_ISREG(existing.st_mode):
        os.chmod(temp_name, stat.S_IMODE(existing.st_mode))
        if hasattr(os, "chown"):
            try:
                os.chown(temp_name, existing.st_uid, existing.st_gid)
            except OSError:
                pass  # only root may give a file away; the permissions above still hold
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
    os.replace(temp_name, path)


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
    if kept is None or fmt == "BMP":
        return options
    if kept.icc_profile:
        options["icc_profile"] = kept.icc_profile
    if fmt == "TIFF":
        tags = _exif_from_bytes(kept.exif) if kept.exif else Image.Exif()
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


# -- input planning ------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One input file and where its anonymized version goes."""

    source: Path
    target: Path


@dataclass(frozen=True)
class Skipped:
    """A path the run will not process, and why: every one is reported, none is left out silently.

    Reasons: "symlink", "symlinked folder" (in-place without following symlinks), "unsupported format",
    "not readable", "folder not readable", "not a regular file", "broken symlink", "symlink loop",
    "folder already included", "symlink to a processed file".
    """

    path: Path
    reason: str

    @property
    def may_hold_faces(self) -> bool:
        """Whether the untouched file may still show a face: worth a warning, above all with --in-place."""
        if self.reason in ("symlinked folder", "folder not readable"):
            return True
        if self.reason in ("broken symlink", "symlink loop", "folder already included", "symlink to a processed file"):
            return False
        return self.path.suffix.lower() in IMAGE_LIKE_EXTENSIONS


@dataclass(frozen=True)
class InputPlan:
    """What a run will read and write; `to_folder` is False only for a single file -> file run."""

    jobs: tuple[Job, ...]
    to_folder: bool
    output: Path
    skipped: tuple[Skipped, ...] = field(default_factory=tuple)
    manifest_name: str = "manifest.json"
    in_place: bool = False
    #: --in-place inputs with hard links outside the plan: replacing this name leaves the original
    #: photo readable under its other name(s), which the run cannot find
    linked_elsewhere: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def manifest_path(self) -> Path:
        if self.to_folder:
            return self.output / self.manifest_name
        return self.output.with_name(self.output.name + ".manifest.json")

    @property
    def ignored(self) -> tuple[Path, ...]:
        """Files skipped as not supported images (kept for callers written before `skipped`)."""
        return tuple(s.path for s in self.skipped if s.reason == "unsupported format")

    @property
    def may_hold_faces(self) -> tuple[Skipped, ...]:
        """Skipped paths that may still show a face (image-like files, symlinked folders)."""
        return tuple(s for s in self.skipped if s.may_hold_faces)


def is_supported(path: Path) -> bool:
    """An image rp reads and writes, or a video (rp_core.video: every frame, audio kept)."""
    from rp_core.video.probe import is_video

    return path.suffix.lower() in SUPPORTED_EXTENSIONS or is_video(path)


def _check_output_format(source: Path, target: Path) -> None:
    """A video is written as a video (its container named by the extension), an image as an image."""
    from rp_core.video.probe import MUXERS, is_video

    if is_video(source):
        if target.suffix.lower() not in MUXERS:
            raise UsageError(f"{target}: a video is written as a video; use one of {', '.join(sorted(MUXERS))}")
    else:
        format_for(target)


def plan_inputs(inputs: Sequence[Path | str], output: Path | str) -> InputPlan:
    """Pair every input file with its output path.

    One file and an output with an image extension -> file to file. Otherwise the
    output is a folder: files land by name, a single input folder is mirrored into
    it keeping relative paths, and several folders each get a subfolder of their name.
    Hidden files and folders are inputs too (thumbnails show faces). Symlinks are
    followed (reading through them harms nothing), a loop is reported and not entered.
    """
    sources = [Path(p) for p in inputs]
    if str(output) == "-":
        raise UsageError("-o -: rp cannot write images to standard output; give an output file or folder")
    out = Path(output)
    if not sources:
        raise InputError("no input given")
    for source in sources:
        _check_exists(source)
    single_file = len(sources) == 1 and sources[0].is_file()
    if single_file and not out.is_dir() and out.suffix:
        _check_output_format(sources[0], out)
        _check_not_same(sources[0], out)
        return InputPlan((Job(sources[0], out),), to_folder=False, output=out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output must be a folder when the input is a folder or several files")

    walker = _Walker(follow=True, exclude=out)
    jobs: list[Job] = []
    for source in sources:
        if source.is_file():
            _check_output_format(source, source)  # written under its own name, so in the format it names
            jobs.append(Job(source, out / source.name))
        elif source.is_dir():
            base = out if len(sources) == 1 else out / source.resolve().name
            jobs.extend(Job(f, base / f.relative_to(source)) for f in walker.files(source))
        else:
            walker.skipped.append(Skipped(source, "not a regular file"))
    _check_unique(jobs)
    for job in jobs:
        _check_not_same(job.source, job.target)
    return InputPlan(tuple(jobs), to_folder=True, output=out, skipped=tuple(walker.skipped))


def plan_reading(inputs: Sequence[Path | str]) -> InputPlan:
    """Every image below `inputs` for a command that only reads them (`rp detect`); each job's target is its source.

    Files and folders are walked as for `plan_inputs` (symlinks followed, hidden files included).
    """
    sources = [Path(p) for p in inputs]
    if not sources:
        raise InputError("no input given")
    walker = _Walker(follow=True, exclude=None)
    jobs: list[Job] = []
    for source in sources:
        _check_exists(source)
        if source.is_file():
            jobs.append(Job(source, source))
        elif source.is_dir():
            jobs.extend(Job(f, f) for f in walker.files(source))
        else:
            walker.skipped.append(Skipped(source, "not a regular file"))
    _check_unique(jobs)
    return InputPlan(tuple(jobs), to_folder=True, output=sources[0], skipped=tuple(walker.skipped))


def plan_in_place(inputs: Sequence[Path | str], *, follow_symlinks: bool = False) -> InputPlan:
    """Pair every input file with itself (`--in-place`): each is replaced, atomically, by its anonymized version.

    Hidden files and folders are processed. A symlink (to a file or a folder) is skipped and reported:
    replacing the link would leave its target, the real photo, untouched. With `follow_symlinks` the
    resolved target is processed instead, each target once. The manifest goes next to a single file
    (`photo.jpg.manifest.json`), else into the first input folder (or the first file's folder) as
    `rp-manifest.json`.
    """
    sources = [Path(p) for p in inputs]
    if not sources:
        raise InputError("no input given")
    for source in sources:
        _check_exists(source)
    single_file = len(sources) == 1 and sources[0].is_file()
    if single_file:
        plan = InputPlan((), to_folder=False, output=sources[0], in_place=True)
    else:
        folder = next((s for s in sources if s.is_dir() and not s.is_symlink()), None)
        folder = folder or next((s for s in sources if s.is_dir()), sources[0].parent)
        plan = InputPlan((), to_folder=True, output=folder, manifest_name="rp-manifest.json", in_place=True)
    from rp_core.manifest import journal_path  # here: rp_core.manifest imports this module

    own = {plan.manifest_path.resolve(), journal_path(plan.manifest_path).resolve()}
    walker = _Walker(follow=follow_symlinks, exclude=None, own=own, in_place=True)
    jobs: list[Job] = []
    for source in sources:
        if source.is_symlink() and not follow_symlinks:
            walker.skipped.append(Skipped(source, "symlinked folder" if source.is_dir() else "symlink"))
        elif source.is_file():
            real = source.resolve() if source.is_symlink() else source
            _check_output_format(real, real)  # it is written back in the format its extension names
            jobs.append(Job(real, real))
        elif source.is_dir():
            jobs.extend(Job(f, f) for f in walker.files(source))
        else:
            walker.skipped.append(Skipped(source, "not a regular file"))
    unique: dict[Path, Job] = {}
    for job in jobs:
        unique.setdefault(job.source.resolve(), job)  # a file reached twice (directly and by a link) is one job
    skipped = _mark_processed_links(walker.skipped, set(unique))
    return InputPlan(
        tuple(unique.values()),
        to_folder=plan.to_folder,
        output=plan.output,
        skipped=tuple(skipped),
        manifest_name=plan.manifest_name,
        in_place=True,
        linked_elsewhere=_linked_elsewhere(unique.values()),
    )


def _linked_elsewhere(jobs: Iterable[Job]) -> tuple[Path, ...]:
    """Jobs whose file has more hard links than the plan has names for it (the other names keep the original)."""
    names: dict[tuple[int, int], tuple[int, list[Path]]] = {}
    for job in jobs:
        try:
            info = os.stat(job.source)
        except OSError:
            continue
        names.setdefault((info.st_dev, info.st_ino), (info.st_nlink, []))[1].append(job.source)
    return tuple(path for links, paths in names.values() if links > len(paths) for path in paths)


def _check_exists(source: Path) -> None:
    if source.is_symlink() and not source.exists():
        raise InputError(f"{source}: broken symlink (its target does not exist)")
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")


def _mark_processed_links(skipped: list[Skipped], processed: set[Path]) -> list[Skipped]:
    """A skipped link whose target is processed anyway leaves no face behind: say so instead of warning."""
    marked = []
    for entry in skipped:
        if entry.reason == "symlink":
            try:
                target = entry.path.resolve(strict=True)
            except (OSError, RuntimeError):
                target = None
            if target in processed:
                entry = Skipped(entry.path, "symlink to a processed file")
        marked.append(entry)
    return marked


class _Walker:
    """Walks input folders in name order, collecting supported files and reporting everything else."""

    def __init__(self, *, follow: bool, exclude: Path | None, own: Iterable[Path] = (), in_place: bool = False) -> None:
        self.follow, self.in_place = follow, in_place
        self.exclude = exclude.resolve() if exclude is not None else None
        self.own = frozenset(own)
        self.skipped: list[Skipped] = []
        self._visited: set[tuple[int, int]] = set()

    def files(self, root: Path) -> list[Path]:
        """Supported files below `root`, as reached; the rest goes to `skipped`.

        A followed symlink to a file counts as its target in place (that is the file to replace), and under
        its own name otherwise (that is the name its output gets).

        Only an output folder inside `root` is left out: one that holds `root` (or is it) would hide every file.
        """
        exclude = self.exclude
        if exclude is not None and _is_within(root.resolve(), exclude):
            exclude = None
        found: list[Path] = []
        try:
            top = os.stat(root)
        except OSError:
            self.skipped.append(Skipped(root, "folder not readable"))
            return found
        key = (top.st_dev, top.st_ino)
        if key in self._visited:
            self.skipped.append(Skipped(root, "folder already included"))
            return found
        self._visited.add(key)
        self._visit(root, frozenset({key}), exclude, found)
        return found

    def _visit(self, folder: Path, ancestors: frozenset[tuple[int, int]], exclude: Path | None, found: list) -> None:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError:
            self.skipped.append(Skipped(folder, "folder not readable"))
            return
        for entry in entries:
            path = Path(entry.path)
            link = entry.is_symlink()
            try:
                info = os.stat(path)
            except OSError:
                self.skipped.append(Skipped(path, "broken symlink" if link else "not readable"))
                continue
            if link and not self.follow:
                self.skipped.append(Skipped(path, "symlinked folder" if stat.S_ISDIR(info.st_mode) else "symlink"))
                continue
            if stat.S_ISDIR(info.st_mode):
                if exclude is not None and _is_within(path.resolve(), exclude):
                    continue  # the run's own output folder
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    self.skipped.append(Skipped(path, "symlink loop"))
                elif key in self._visited:
                    self.skipped.append(Skipped(path, "folder already included"))
                else:
                    self._visited.add(key)
                    self._visit(path, ancestors | {key}, exclude, found)
            elif stat.S_ISREG(info.st_mode):
                real = path.resolve()
                if (exclude is not None and _is_within(real, exclude)) or real in self.own:
                    continue  # the run's own outputs and manifest are not inputs
                name = real if link and self.in_place else path
                if not is_supported(name):
                    self.skipped.append(Skipped(path, "unsupported format"))
                elif not os.access(path, os.R_OK):
                    self.skipped.append(Skipped(path, "not readable"))
                else:
                    found.append(name)
            else:
                self.skipped.append(Skipped(path, "not a regular file"))


def temporary_files_for(target: Path) -> list[Path]:
    """Leftover temporary files of an interrupted `write_image(target)` (or manifest write)."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{glob_escape(target.name)}.*.part"))


def cannot_write(path: Path, exc: OSError) -> InputError:
    """One line for an output location that cannot be written: `cannot write to PATH: reason`."""
    for ancestor in (path, *path.parents):
        if ancestor.exists() or ancestor.is_symlink():
            if ancestor != path and not ancestor.is_dir():
                return InputError(f"cannot write to {path}: {ancestor} is a file, not a folder")
            break
    reason = exc.strerror or str(exc)
    if exc.filename is not None and Path(os.fsdecode(exc.filename)) != path:
        reason = f"{reason} ({os.fsdecode(exc.filename)})"
    return InputError(f"cannot write to {path}: {reason}")


def check_writable_folder(folder: Path) -> None:
    """Raise the OSError that creating or writing `folder` would meet (pass it to `cannot_write`); creates nothing."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(20, os.strerror(20), str(ancestor))
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise PermissionError(13, os.strerror(13), str(ancestor))
            return


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_unique(jobs: Iterable[Job]) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.target.resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {job.source} would both be written to {job.target}; rename one")
        seen[key] = job.source


def _check_not_same(source: Path, target: Path) -> None:
    if target.exists() and source.resolve() == target.resolve():
        raise InputError(f"{target}: the output would overwrite its own input; choose another output path")
