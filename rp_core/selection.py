"""Which faces a run changes: keep some people (by a reference photo), only some, the largest few.

A user keeps themselves and anonymizes bystanders with `--keep-face me.jpg`, or anonymizes only
one person with `--only-face them.jpg`. Faces are matched by identity with the pipeline's
verification encoder at the encoder's own match threshold; each reference claims at most the one
face of an image that is closest to it, so a look-alike bystander is not kept along with the user.
Kept faces stay byte-identical; every other face still goes through fail-closed verification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rp_core.errors import InputError
from rp_core.interfaces import IdentityEncoder, compare_embeddings
from rp_core.types import Face, IdentityEmbedding


@dataclass(frozen=True)
class References:
    """Identities to keep or to change, encoded once per run from reference photos."""

    keep: tuple[IdentityEmbedding, ...] = ()
    only: tuple[IdentityEmbedding, ...] = ()


def encode_references(
    paths: Sequence[str | Path], detect: Any, encoder: IdentityEncoder[Any], option: str
) -> tuple[IdentityEmbedding, ...]:
    """The identity of the largest face in each reference photo; a photo without a face is an InputError."""
    from rp_core.io import read_image

    embeddings = []
    for path in paths:
        image = read_image(Path(path))
        faces = detect(image)
        if not faces:
            raise InputError(f"{option} {path}: no face found in the reference photo")
        largest = max(faces, key=lambda f: f.size)
        embeddings.append(encoder.encode(image, [largest])[0])
    return tuple(embeddings)


@dataclass(frozen=True)
class Matches:
    """Faces claimed by a reference photo: by a --keep-face one, by an --only-face one."""

    keep: frozenset[int] = frozenset()
    only: frozenset[int] = frozenset()


def match_references(
    embeddings: Sequence[IdentityEmbedding | None], encoder: IdentityEncoder[Any], references: References
) -> Matches:
    """Which faces each reference photo claims (at most one face per reference)."""
    return Matches(
        keep=frozenset(_claimed(embeddings, encoder, references.keep)) if references.keep else frozenset(),
        only=frozenset(_claimed(embeddings, encoder, references.only)) if references.only else frozenset(),
    )


def kept_faces(
    faces: Sequence[Face],
    keep_matched: set[int] | frozenset[int],
    only_matched: set[int] | frozenset[int] | None,
    *,
    only_largest: bool = False,
    max_faces: int | None = None,
) -> set[int]:
    """Indices of `faces` the run leaves unchanged, given the faces the references claimed.

    `only_matched` is None when there is no --only-face reference (then no face is kept for it).
    """
    keep = set(keep_matched)
    if only_matched is not None:
        keep |= set(range(len(faces))) - set(only_matched)
    limit = 1 if only_largest else max_faces
    if limit is not None:
        changing = sorted((i for i in range(len(faces)) if i not in keep), key=lambda i: -faces[i].size)
        keep |= set(changing[limit:])
    return keep


def faces_to_keep(
    faces: Sequence[Face],
    embeddings: Sequence[IdentityEmbedding | None],
    encoder: IdentityEncoder[Any],
    references: References,
    *,
    only_largest: bool = False,
    max_faces: int | None = None,
) -> set[int]:
    """Indices of `faces` the run leaves unchanged."""
    matches = match_references(embeddings, encoder, references)
    return kept_faces(
        faces,
        matches.keep,
        matches.only if references.only else None,
        only_largest=only_largest,
        max_faces=max_faces,
    )


def _claimed(
    embeddings: Sequence[IdentityEmbedding | None],
    encoder: IdentityEncoder[Any],
    references: Sequence[IdentityEmbedding],
) -> set[int]:
    """For each reference, the closest face that matches it (at most one per reference)."""
    claimed = set()
    sign = 1.0 if encoder.metric == "cosine" else -1.0
    for reference in references:
        scored = [
            (sign * compare_embeddings(reference, e, encoder.metric), i)
            for i, e in enumerate(embeddings)
            if e is not None and encoder.is_match(reference, e)
        ]
        if scored:
            claimed.add(max(scored)[1])
    return claimed


def face_choices_from_json(entry: dict[str, Any], image_shape: tuple[int, ...], where: str) -> list[Any]:
    """The faces of one image of a faces JSON (`rp detect`), checked against the image they are for."""
    from rp_core.types import FaceChoice

    height, width = image_shape[:2]
    size = entry.get("size")
    if size is not None and list(size) != [width, height]:
        raise InputError(
            f"{where}: the faces JSON was made for a {size[0]}x{size[1]} image, this one is {width}x{height}"
        )
    choices = []
    for k, item in enumerate(entry.get("faces") or []):
        try:
            face = Face(
                box=tuple(float(v) for v in item["box"]),  # type: ignore[arg-type]
                score=float(item.get("score", 1.0)),
                landmarks=np.asarray(item["landmarks"], dtype=np.float64),
                detector=str(item.get("detector", "faces-json")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: face {k} of the faces JSON is not valid: {exc}") from None
        prompt = item.get("prompt")
        choices.append(FaceChoice(face, keep=bool(item.get("keep", False)), prompt=str(prompt) if prompt else None))
    return choices


FACES_JSON_VERSION = 1


def read_faces_json(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of a faces JSON by image name (relative to the folder `rp detect` was given)."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        images = data["images"]
        return {str(entry["input"]): entry for entry in images}
    except OSError as exc:
        raise InputError(f"{path}: cannot read the faces JSON ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a faces JSON written by `rp detect` ({exc})") from None


def face_to_json(face: Face, index: int = 0) -> dict[str, Any]:
    """One face as `rp detect` writes it: the number `--preview` draws, then what a reviewer edits (`keep`,
    `prompt`); reading ignores `index`, so deleting a face's block needs no renumbering. Box and landmarks keep
    every digit (a float's shortest exact form): the faces read back align, and render, as the detector's did."""
    return {
        "index": index,
        "box": [float(v) for v in face.box],
        "keep": False,
        "prompt": None,
        "score": round(face.score, 4),
        "detector": face.detector,
        "landmarks": [[float(x), float(y)] for x, y in face.landmarks],
    }


def faces_json_text(document: dict[str, Any]) -> str:
    """A faces JSON laid out for people: one block per face, its box and landmarks each on one line."""
    import json

    inline: dict[str, str] = {}

    def mark(value: Any) -> str:
        key = f"@@{len(inline)}@@"
        inline[key] = json.dumps(value, separators=(", ", ": ")).replace("], [", "],[")
        return key

    images = [
        {
            **entry,
            "size": mark(entry["size"]),
            "faces": [{**f, "box": mark(f["box"]), "landmarks": mark(f["landmarks"])} for f in entry["faces"]],
        }
        for entry in document["images"]
    ]
    text = json.dumps({**document, "images": images}, indent=2)
    for key, value in inline.items():
        text = text.replace(f'"{key}"', value)
    return text + "\n"
