"""What the review page shows and changes: the photos, their faces from the faces JSON, the decisions.

Every change is written back at once (atomically) to the faces JSON, in the format `rp detect`
writes and `rp anonymize --faces-json` reads, so closing the page loses nothing and the same
decisions render from the command line. Photos are named as the manifest names them (relative
to the deepest folder holding them all), and the page refers to them by number only: no path
from a request ever reaches the file system.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rp_core.errors import InputError, RpError

#: The longest side of the pictures the page shows (boxes are given in the photo's own pixels).
PREVIEW_SIDE = 1600


@dataclass(frozen=True)
class ReviewImage:
    """One input photo: its name in the faces JSON and manifest, where it is read and where its result goes."""

    index: int
    name: str
    source: Path
    target: Path
    #: Why it cannot be read (None: readable); the page says so instead of showing it.
    error: str | None = None


def faces_json_path(output: Path, to_folder: bool) -> Path:
    """Where the decisions are kept by default: `faces.json` in the output folder (beside a single output file)."""
    return output / "faces.json" if to_folder else output.with_name(output.name + ".faces.json")


class ReviewState:
    """The photos under review and the faces JSON holding the decisions (thread-safe)."""

    def __init__(self, images: Sequence[ReviewImage], faces_path: Path, document: dict[str, Any]) -> None:
        self.images = tuple(images)
        self.faces_path = faces_path
        self.document = document
        self._entries = {str(e["input"]): e for e in document.get("images", [])}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, sources: Sequence[Path], targets: Sequence[Path], faces_path: Path) -> ReviewState:
        """The photos of a plan (sources paired with targets) and the faces JSON `rp detect` wrote for them."""
        from rp_core.io import read_image
        from rp_core.session import common_root

        try:
            document = json.loads(faces_path.read_text(encoding="utf-8"))
            entries = {str(e["input"]) for e in document["images"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{faces_path}: not a faces JSON written by `rp detect` ({exc})") from None
        root = common_root(list(sources))
        images = []
        for index, (source, target) in enumerate(zip(sources, targets, strict=True)):
            name = os.path.relpath(source.absolute(), root)
            error = None
            if name not in entries:
                try:
                    read_image(source)
                except RpError as exc:
                    error = str(exc)
                else:
                    raise InputError(
                        f"{faces_path} has no faces for {name}: it was made for other photos; "
                        "remove it or give another --faces-json"
                    )
            images.append(ReviewImage(index, name, source, target, error))
        return cls(images, faces_path, document)

    # -- reading ----------------------------------------------------------------------------------

    def image(self, index: int) -> ReviewImage:
        """The photo with this number; KeyError for any other number."""
        if not 0 <= index < len(self.images):
            raise KeyError(index)
        return self.images[index]

    def entry(self, index: int) -> dict[str, Any]:
        """The faces JSON entry of a readable photo; KeyError otherwise."""
        return self._entries[self.image(index).name]

    def to_json(self) -> list[dict[str, Any]]:
        """Every photo with its faces and decisions, as the page shows them."""
        with self._lock:
            shown = []
            for image in self.images:
                entry = self._entries.get(image.name, {})
                faces = [
                    {
                        "box": f["box"],
                        "keep": bool(f.get("keep")),
                        "prompt": f.get("prompt"),
                        "detector": f.get("detector"),
                    }
                    for f in entry.get("faces", [])
                ]
                shown.append(
                    {
                        "index": image.index,
                        "name": image.name,
                        "size": entry.get("size"),
                        "error": image.error,
                        "faces": faces,
                    }
                )
            return shown

    # -- deciding ---------------------------------------------------------------------------------

    def decide(self, index: int, face: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply `{"keep": bool, "prompt": str | None}` (either key) to one face and save; KeyError for an unknown face.

        An empty prompt clears it (the generator's own prompt applies).
        """
        with self._lock:
            faces = self.entry(index)["faces"]
            if not 0 <= face < len(faces):
                raise KeyError(face)
            if "keep" in changes:
                faces[face]["keep"] = bool(changes["keep"])
            if "prompt" in changes:
                faces[face]["prompt"] = (changes["prompt"] or "").strip() or None
            self._save()
            return {"keep": bool(faces[face].get("keep")), "prompt": faces[face].get("prompt")}

    def keep_all(self, chosen: Sequence[tuple[int, int]]) -> None:
        """Mark these (photo, face) pairs to stay unchanged, and save."""
        with self._lock:
            for index, face in chosen:
                self.entry(index)["faces"][face]["keep"] = True
            self._save()

    def _save(self) -> None:
        from rp_core.io import atomic_write_bytes

        atomic_write_bytes(self.faces_path, (json.dumps(self.document, indent=2) + "\n").encode("utf-8"))
