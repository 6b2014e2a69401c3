"""The pictures the page shows: decoded like a run decodes them (EXIF orientation applied), re-encoded.

Re-encoding rather than sending the file means the page sees exactly the pixels the face boxes
refer to, any format rp reads can be shown, and no metadata (GPS, names) reaches the browser.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from rp_core.review.state import PREVIEW_SIDE

_CACHE: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_CACHE_SIZE = 16
_LOCK = threading.Lock()


def preview_jpeg(path: Path) -> bytes:
    """A JPEG of the photo at `path`, at most PREVIEW_SIDE pixels on its longer side (InputError if unreadable)."""
    from rp_core.io import read_image

    stat = path.stat()
    key = (str(path.absolute()), stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    picture = Image.fromarray(read_image(path))
    picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    with _LOCK:
        _CACHE[key] = data
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return data
