"""Encoding on its own thread, so the frames' checks never wait for the encoder.

The encoder (PyAV: the colour conversion and libx264) releases the GIL, so the thread runs beside the
verification of the next frames; on a 2-core machine it was ~3 s of the main thread's ~20 s on the 720p clip.
Frames are written in the order they are given; the first error stops the thread and is raised by the next
`write` or by `close`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np

from rp_core.video.codec import DecodedFrame, VideoWriter

#: Frames handed over and not yet encoded, at most (720p: 2.7 MB each).
PENDING = 8
_DONE = object()


class WriterThread:
    """A `VideoWriter` driven from one thread of its own; `write` returns once the frame is queued."""

    def __init__(self, writer: VideoWriter, pending: int = PENDING) -> None:
        self.writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rp-encode", daemon=True)
        self._thread.start()

    @property
    def pix_fmt(self) -> str:
        return self.writer.pix_fmt

    def write(self, frame: DecodedFrame, image: np.ndarray) -> None:
        self._raise()
        self._queue.put((frame, image))

    def close(self) -> None:
        """Encode what is queued, flush the encoder and write the trailer; raise the thread's error if any."""
        self._finish()
        self._raise()
        self.writer.close()

    def abort(self) -> None:
        """Stop without encoding what is left (the partial file is deleted by the caller)."""
        self._error = self._error or _Aborted()
        self._finish()
        self.writer.abort()

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_DONE)  # the thread takes every item, also after an error: this never blocks for good
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # failed or aborted: drain, so no `write` blocks on a full queue
            try:
                self.writer.write(*item)
            except BaseException as exc:  # raised again on the caller's thread
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None and not isinstance(self._error, _Aborted):
            raise self._error


class _Aborted(Exception):
    """Marks a writer stopped on purpose."""
