"""Compatibility names: image files in and out now live in `rp_core.files` (one module per job).

New code imports from `rp_core.files.<module>`; this module only re-exports, so code written
against `rp_core.io` keeps working.
"""

from __future__ import annotations

from rp_core.files.decode import MAX_PIXELS, convert_to_rgb, read_image, read_image_with_metadata, to_rgb_array
from rp_core.files.encode import JPEG_QUALITY, write_image
from rp_core.files.formats import (
    FORMATS,
    IMAGE_LIKE_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    UsageError,
    format_for,
    is_supported,
)
from rp_core.files.metadata import ImageMetadata, filter_xmp, safe_metadata
from rp_core.files.plan import InputPlan, Job, Skipped, plan_in_place, plan_inputs, plan_reading
from rp_core.files.write import (
    atomic_write_bytes,
    cannot_write,
    check_writable_folder,
    fsync_folder,
    glob_escape,
    publish,
    temporary_files_for,
)

__all__ = [
    "FORMATS",
    "IMAGE_LIKE_EXTENSIONS",
    "JPEG_QUALITY",
    "MAX_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "ImageMetadata",
    "InputPlan",
    "Job",
    "Skipped",
    "UsageError",
    "atomic_write_bytes",
    "cannot_write",
    "check_writable_folder",
    "convert_to_rgb",
    "filter_xmp",
    "format_for",
    "fsync_folder",
    "glob_escape",
    "is_supported",
    "plan_in_place",
    "plan_inputs",
    "plan_reading",
    "publish",
    "read_image",
    "read_image_with_metadata",
    "safe_metadata",
    "temporary_files_for",
    "to_rgb_array",
    "write_image",
]
