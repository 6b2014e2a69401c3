"""Image files in and out: decode to RGB uint8, encode atomically without metadata, plan inputs.

Reading applies EXIF orientation exactly once and converts every mode (greyscale,
RGBA, palette, 16-bit, CMYK) to RGB, so detectors see what a viewer shows. Writing
starts from a fresh image so nothing from the input (EXIF, GPS, XMP, ICC, comments)
leaks into the output unless asked for, and goes through a temporary file in the
same folder so a crash never leaves a half-written image behind.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rp_core.errors import InputError

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
JPEG_QUALITY = 95
#: Larger images are refused: they would exhaust memory long before a face is found.
MAX_PIXELS = 178_956_970
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageMetadata:
    """Metadata of an input, kept only when the user asks to keep it."""

    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    comment: bytes | None = None


def _supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_EXTENSIONS))


def read_image(path: Path | str) -> np.ndarray:
    """Decode an image file to an RGB uint8 (H, W, 3) array; any failure is one InputError line."""
    return read_image_with_metadata(path)[0]


def read_image_with_metadata(path: Path | str, *, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageMetadata]:
    """Decode like `read_image` and also return the metadata a `--keep-metadata` run writes back."""
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
    metadata = _metadata_of(image)
    array, converted_colours = _to_rgb(image)
    if converted_colours:
        metadata = ImageMetadata(metadata.exif, None, metadata.xmp, metadata.comment)
    return array, metadata


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image (any mode) as an RGB uint8 (H, W, 3) array, colour-managed to sRGB when it carries a profile."""
    return _to_rgb(image)[0]


def _to_rgb(image: Image.Image) -> tuple[np.ndarray, bool]:
    """Convert to RGB; the flag says the pixels were converted from an embedded ICC profile."""
    image = _to_8bit(image)
    converted = False
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "CMYK", "L"):
        converted_image = _icc_to_srgb(image, icc)
        if converted_image is not None:
            image, converted = converted_image, True
    if image.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(array), converted


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


def _metadata_of(image: Image.Image) -> ImageMetadata:
    exif_bytes: bytes | None = None
    exif = image.getexif()
    if len(exif):
        exif.pop(_EXIF_ORIENTATION, None)  # orientation is already applied to the pixels
        exif_bytes = exif.tobytes()
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    comment = image.info.get("comment")
    if isinstance(comment, str):
        comment = comment.encode("utf-8")
    return ImageMetadata(exif=exif_bytes, icc_profile=image.info.get("icc_profile"), xmp=xmp, comment=comment)


def format_for(path: Path | str) -> str:
    """The Pillow format an output path's extension asks for."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: cannot write {suffix or 'files without an extension'!r}; use one of {_supported_list()}"
        )
    return FORMATS[suffix]


def write_image(
    path: Path | str,
    image: np.ndarray | Image.Image,
    *,
    metadata: ImageMetadata | None = None,
    quality: int = JPEG_QUALITY,
    before_publish: Callable[[], None] | None = None,
) -> Path:
    """Encode `image` to `path` atomically; with no `metadata` the file carries none at all.

    `before_publish` runs once the temporary file is complete and synced, just before it replaces
    `path`: a run notes its intent there, so after a kill every output it wrote is known to be its own.
    """
    path = Path(path)
    fmt = format_for(path)
    pil = _fresh_image(image)
    options = _save_options(fmt, metadata, quality)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            pil.save(stream, format=fmt, **options)
            stream.flush()
            os.fsync(stream.fileno())
        if before_publish is not None:
            before_publish()
        publish(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def publish(temp_name: str | Path, path: Path) -> None:
    """Give a finished temporary file normal permissions (mkstemp makes it 0600) and move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp_name, 0o666 & ~umask)
    os.replace(temp_name, path)


def _fresh_image(image: np.ndarray | Image.Image) -> Image.Image:
    """A new PIL image built from pixels only, so no `info` of the input can be written out."""
    array = to_rgb_array(image) if isinstance(image, Image.Image) else np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {array.dtype} {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _save_options(fmt: str, metadata: ImageMetadata | None, quality: int) -> dict[str, object]:
    options: dict[str, object] = {}
    if fmt == "JPEG":
        options["quality"] = quality
    elif fmt == "WEBP":
        options["quality"] = quality
    elif fmt == "PNG":
        options["optimize"] = False
    if metadata is None:
        return options
    if metadata.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["exif"] = metadata.exif
    if metadata.icc_profile and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["icc_profile"] = metadata.icc_profile
    if metadata.xmp and fmt in ("JPEG", "WEBP", "PNG"):
        options["xmp"] = metadata.xmp
    if metadata.comment and fmt == "JPEG":
        options["comment"] = metadata.comment
    return options


# -- input planning ------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One input file and where its anonymized version goes."""

    source: Path
    target: Path


@dataclass(frozen=True)
class InputPlan:
    """What a run will read and write; `to_folder` is False only for a single file -> file run."""

    jobs: tuple[Job, ...]
    to_folder: bool
    output: Path
    ignored: tuple[Path, ...] = field(default_factory=tuple)
    manifest_name: str = "manifest.json"
    in_place: bool = False

    @property
    def manifest_path(self) -> Path:
        if self.to_folder:
            return self.output / self.manifest_name
        return self.output.with_name(self.output.name + ".manifest.json")


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_EXTENSIONS


def plan_inputs(inputs: Sequence[Path | str], output: Path | str) -> InputPlan:
    """Pair every input file with its output path.

    One file and an output with an image extension -> file to file. Otherwise the
    output is a folder: files land by name, a single input folder is mirrored into
    it keeping relative paths, and several folders each get a subfolder of their name.
    """
    sources = [Path(p) for p in inputs]
    out = Path(output)
    if not sources:
        raise InputError("no input given")
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or folder")
    single_file = len(sources) == 1 and sources[0].is_file()
    if single_file and not out.is_dir() and out.suffix:
        format_for(out)
        _check_not_same(sources[0], out)
        return InputPlan((Job(sources[0], out),), to_folder=False, output=out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output must be a folder when the input is a folder or several files")

    jobs: list[Job] = []
    ignored: list[Path] = []
    for source in sources:
        if source.is_file():
            jobs.append(Job(source, out / source.name))
            continue
        base = out if len(sources) == 1 else out / source.resolve().name
        files, skipped = _walk(source, exclude=out)
        ignored.extend(skipped)
        jobs.extend(Job(f, base / f.relative_to(source)) for f in files)
    _check_unique(jobs)
    for job in jobs:
        _check_not_same(job.source, job.target)
    return InputPlan(tuple(jobs), to_folder=True, output=out, ignored=tuple(ignored))


def plan_in_place(inputs: Sequence[Path | str]) -> InputPlan:
    """Pair every input file with itself (`--in-place`): each is replaced, atomically, by its anonymized version.

    The manifest goes next to a single file (`photo.jpg.manifest.json`), else into the first
    input folder (or the first file's folder) as `rp-manifest.json`.
    """
    sources = [Path(p) for p in inputs]
    if not sources:
        raise InputError("no input given")
    jobs: list[Job] = []
    ignored: list[Path] = []
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or folder")
        if source.is_file():
            format_for(source)  # it is written back in the format its extension names
            jobs.append(Job(source, source))
            continue
        files, skipped = _walk(source, exclude=source / ".rp-no-such-folder")
        ignored.extend(skipped)
        jobs.extend(Job(f, f) for f in files)
    _check_unique(jobs)
    if len(sources) == 1 and sources[0].is_file():
        return InputPlan(tuple(jobs), to_folder=False, output=sources[0], ignored=tuple(ignored), in_place=True)
    folder = next((s for s in sources if s.is_dir()), sources[0].parent)
    return InputPlan(
        tuple(jobs),
        to_folder=True,
        output=folder,
        ignored=tuple(ignored),
        manifest_name="rp-manifest.json",
        in_place=True,
    )


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


def _walk(folder: Path, exclude: Path) -> tuple[list[Path], list[Path]]:
    """Image files below `folder` (sorted, hidden entries and the output folder left out) and the rest.

    Only an output folder inside `folder` is left out: one that holds `folder` (or is it) would hide every file.
    """
    exclude_resolved = exclude.resolve()
    if _is_within(folder.resolve(), exclude_resolved):
        exclude_resolved = exclude_resolved / ".rp-no-such-folder"
    files: list[Path] = []
    skipped: list[Path] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if _is_within(path.resolve(), exclude_resolved):
            continue
        (files if is_supported(path) else skipped).append(path)
    return files, skipped


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
