"""Search harder for faces with any detector: rotations, upscaling (tiled), contrast equalisation, regions.

A detector misses faces that are sideways or upside down (scans, phones that lost the
EXIF orientation), too small for its smallest template (group photos, thumbnails), too
dark or flat, or in a crop the verifier looks at. Each miss is a face written as it was,
so the search below runs the same detector on transformed copies of the image and maps
every face back to the original's coordinates exactly. It knows nothing of the detector:
it takes a `detect(image) -> list[Face]` function.

Coordinates are continuous: pixel i spans [i, i + 1), so a box (x0, y0, x1, y1) covers
x0 <= x < x1. In that convention a 90-degree rotation and a resize are exact affine maps.
Landmarks keep their semantic order through rotations (the subject's right eye stays
first), which is what the alignment needs; for a face found sideways, "image-left" refers
to the rotated view it was found in.

Cost (each pass is one more detector call, on as many pixels as it says; the default adds
~0.4x a plain pass's pixels to an upright 1280-px photo; benchmarks/RESULTS.md has seconds):
- plain: 1x, always.
- upscale: `upscale**2` (4x) the plain pass's pixels, by default only for images whose longest
  side is at most `upscale_max_side / upscale` = 320 px (thumbnails, where a face is a few
  pixels and 4x is still cheap); with `upscale_max_side=None` on every image, in overlapping
  tiles above `tile` px (bounded memory, same pixel count).
- equalize: 1x, only when the image is dark or flat (`needs_equalization`), unless "always".
- rotations: "probe" (default): on an image where the upright passes found no face, the 3
  rotations at full size (3x: photos without faces pay most); otherwise it looks at each of the
  3 rotations on a copy of at most 480 px and half the image's size
  (3 x 0.14 = 0.42x for a 1280-px photo, 3 x 0.25 = 0.75x for a 512-px one),
  and searches a rotation at full size (1x, plus its own small-face pass) only when its probe
  found more faces than the upright passes, a face they missed as confident as their weakest,
  or the same faces with higher scores (a sideways photo); "if_none" rotates only images where
  nothing was found; "always" searches all 3 at full size (3x).
- border: off by default; "reflect" adds ~1x on every image (the image padded by 12.5% with its
  mirror image, scaled back to at most 1280 px): a face cut by the border is half a face to a
  detector and a whole one with its mirror. CenterFace finds half faces without it; dlib's HOG
  does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rp_core.geometry import Box, area, box_through, centre_inside, intersection, region_window, same_face, tiles
from rp_core.types import Face

DetectFn = Callable[[np.ndarray], Sequence[Face]]
ROTATIONS = (90, 270, 180)


@dataclass(frozen=True)
class SearchPasses:
    """Which extra passes `search_faces` runs; the defaults add little time to a normal photo."""

    #: "off"; "if_none": rotate only when no upright pass found a face; "probe": as "if_none", and on
    #: images with faces look at each rotation on a copy of at most `probe_side` px, searching that
    #: rotation fully when the probe sees more (`_probe_finds_more`); "always": every rotation at full size.
    rotations: Literal["off", "if_none", "probe", "always"] = "probe"
    #: Longest side of the rotation probes: at most `probe_side` px and `probe_scale` x the image's
    #: (0.14 of the pixels of a 1280-px photo each, 0.25 of a 512-px one).
    probe_side: int = 480
    probe_scale: float = 0.5
    #: Clockwise angles tried, in order.
    angles: tuple[int, ...] = ROTATIONS
    #: Factor of the small-face pass; 1 turns it off.
    upscale: float = 2.0
    #: Run the small-face pass only when the upscaled image's longest side stays within this; None = always (tiled).
    upscale_max_side: int | None = 640
    #: Side of the tiles (in upscaled pixels) when the upscaled image is larger than this.
    tile: int = 1024
    #: Overlap of neighbouring tiles, as a share of the tile side (a face cut by one tile is whole in the next).
    tile_overlap: float = 0.25
    #: "off"; "if_dark": CLAHE on the luminance of dark or flat images only; "always".
    equalize: Literal["off", "if_dark", "always"] = "if_dark"
    #: "off"; "reflect": one more pass on the image padded with its own mirror image, which completes
    #: faces cut by the border (a face is roughly symmetric) so a detector sees a whole face.
    border: Literal["off", "reflect"] = "off"
    #: Width of that padding, as a share of the image's longest side.
    border_pad: float = 0.125
    #: The padded image is scaled down to at most this longest side (1280: the cost of one plain pass
    #: on a 1280-px photo instead of 1.6x; faces shrink by 1/1.25); None = full size.
    border_max_side: int | None = 1280
    #: Two faces of different passes are one face when their boxes overlap this much (IoU) ...
    iou: float = 0.3
    #: ... or when this share of the smaller box lies inside the larger one.
    containment: float = 0.8

    def replace(self, **changes: object) -> SearchPasses:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


#: Only the image as it is: what a detector does without this module.
PLAIN = SearchPasses(rotations="off", upscale=1.0, equalize="off", border="off")
#: The defaults: rotation probes, small-face pass on thumbnails, equalisation of dark or flat images.
DEFAULT = SearchPasses()
#: For cheap detectors blind to faces under ~80 px and to half faces (dlib's HOG, ~0.1 s on a 1280-px
#: photo): a low-resolution probe sees nothing, so all 3 rotations run at full size, plus the
#: mirror-padded border pass (~5x a plain pass).
HOG = SearchPasses(rotations="always", border="reflect")
#: Everything on every image: 4 rotations, small-face pass (tiled), equalisation, border. Slow; for audits.
THOROUGH = SearchPasses(rotations="always", upscale_max_side=None, equalize="always", border="reflect")


# -- geometry --------------------------------------------------------------------------------


def rotate_image(image: np.ndarray, degrees: int) -> np.ndarray:
    """The image turned clockwise by 0, 90, 180 or 270 degrees (exact: no interpolation)."""
    return np.ascontiguousarray(np.rot90(image, k=-(_quarter_turns(degrees))))


def rotated_to_original(points: np.ndarray, degrees: int, shape: tuple[int, ...]) -> np.ndarray:
    """Map (N, 2) points of the image turned clockwise by `degrees` back to the original of `shape`."""
    height, width = shape[:2]
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    turns = _quarter_turns(degrees)
    if turns == 0:
        mapped = (x, y)
    elif turns == 1:  # rotated (H wide, W high): x' = H - y, y' = x
        mapped = (y, height - x)
    elif turns == 2:
        mapped = (width - x, height - y)
    else:  # x' = y, y' = W - x
        mapped = (width - y, x)
    return np.stack(mapped, axis=1)


def original_to_rotated(points: np.ndarray, degrees: int, shape: tuple[int, ...]) -> np.ndarray:
    """Map (N, 2) points of the original of `shape` into the image turned clockwise by `degrees`."""
    turns = _quarter_turns(degrees)
    # turning clockwise by d is undone by turning clockwise by 360 - d
    return rotated_to_original(points, (360 - 90 * turns) % 360, rotated_shape(shape, degrees))


def rotated_shape(shape: tuple[int, ...], degrees: int) -> tuple[int, int]:
    """(height, width) of an image of `shape` turned clockwise by `degrees` (a multiple of 90)."""
    height, width = shape[:2]
    return (width, height) if _quarter_turns(degrees) % 2 else (height, width)


def _quarter_turns(degrees: int) -> int:
    if degrees % 90:
        raise ValueError(f"rotations are multiples of 90 degrees, got {degrees}")
    return (degrees // 90) % 4


def map_face(face: Face, mapping: Callable[[np.ndarray], np.ndarray], tag: str = "") -> Face:
    """The face with its box and landmarks mapped into other coordinates, `+tag` appended to its detector."""
    detector = f"{face.detector}+{tag}" if tag else face.detector
    return Face(
        box=box_through(face.box, mapping),
        score=face.score,
        landmarks=mapping(face.landmarks),
        detector=detector,
    )


def scale_and_shift(factor: float, offset: tuple[float, float] = (0.0, 0.0)) -> Callable[[np.ndarray], np.ndarray]:
    """Mapping from a copy resized by `factor` of the region starting at `offset` back to the image."""
    shift = np.asarray(offset, dtype=np.float64)
    return lambda points: np.asarray(points, dtype=np.float64) / factor + shift


def resize(image: np.ndarray, factor: float) -> np.ndarray:
    """The image resized by `factor` (cubic up, area down); exact in continuous coordinates up to rounding."""
    import cv2

    if factor == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)


def merge_faces(faces: Sequence[Face], iou_threshold: float = 0.3, containment: float = 0.8) -> list[Face]:
    """One face per place: the best-scoring of each group of duplicates (earlier pass on ties), in input order."""
    order = sorted(range(len(faces)), key=lambda i: (-faces[i].score, i))
    kept: list[int] = []
    for i in order:
        if all(not same_face(faces[i].box, faces[k].box, iou_threshold, containment) for k in kept):
            kept.append(i)
    return [faces[i] for i in sorted(kept)]


# -- photometry ------------------------------------------------------------------------------


def luminance_stats(image: np.ndarray) -> tuple[float, float]:
    """Mean and 5-95 percentile spread of the luminance, both in [0, 1] (on a small copy: cheap)."""
    step = max(1, max(image.shape[:2]) // 256)
    small = np.asarray(image[::step, ::step, :3], dtype=np.float32)
    luma = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    low, high = np.percentile(luma, [5, 95])
    return float(luma.mean()), float(high - low)


def needs_equalization(image: np.ndarray, dark_below: float = 0.3, flat_below: float = 0.35) -> bool:
    """True for dark (mean luminance below `dark_below`) or flat (5-95% spread below `flat_below`) images."""
    mean, spread = luminance_stats(image)
    return mean < dark_below or spread < flat_below


def equalize(image: np.ndarray, clip_limit: float = 3.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the L channel of Lab: brings out faces in dark or low-contrast photos, colours kept."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3], dtype=np.uint8), cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid))
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


# -- search ----------------------------------------------------------------------------------


def detect_upscaled(detect: DetectFn, image: np.ndarray, factor: float, tile: int, overlap: float) -> list[Face]:
    """Faces of the image upscaled by `factor`, in tiles when it would exceed `tile` pixels; original coordinates."""
    tag = f"up{factor:g}"
    height, width = image.shape[:2]
    if max(height, width) * factor <= tile:
        big = resize(image, factor)
        return [map_face(f, scale_and_shift(big.shape[1] / width), tag) for f in detect(big)]
    found: list[Face] = []
    side = max(32, round(tile / factor))  # tile side in original pixels
    for x0, y0, x1, y1 in tiles(image.shape, side, overlap):
        part = resize(np.ascontiguousarray(image[y0:y1, x0:x1]), factor)
        back = scale_and_shift(part.shape[1] / float(x1 - x0), (x0, y0))
        found += [map_face(f, back, tag) for f in detect(part)]
    return found


def _upright(detect: DetectFn, image: np.ndarray, passes: SearchPasses, tag: str) -> list[Face]:
    """The plain pass and, where they apply, the small-face and equalised passes, in original coordinates."""

    def tagged(faces: Sequence[Face], extra: str) -> list[Face]:
        name = "+".join(t for t in (extra, tag) if t)
        return [map_face(f, lambda p: np.asarray(p, dtype=np.float64), name) for f in faces]

    found = tagged(detect(image), "")
    if passes.upscale > 1.0:
        limit = passes.upscale_max_side
        if limit is None or max(image.shape[:2]) * passes.upscale <= limit:
            found += tagged(detect_upscaled(detect, image, passes.upscale, passes.tile, passes.tile_overlap), "")
    if passes.equalize == "always" or (passes.equalize == "if_dark" and needs_equalization(image)):
        found += tagged(detect(equalize(image)), "clahe")
    if passes.border == "reflect" and not tag:  # upright only: rotated border passes would cost 3x more
        found += tagged(detect_border(detect, image, passes.border_pad, passes.border_max_side), "")
    return found


def detect_border(
    detect: DetectFn, image: np.ndarray, pad: float, max_side: int | None = None, min_inside: float = 0.25
) -> list[Face]:
    """Faces cut by the image border, found on the image padded with its mirror image; original coordinates.

    Mirror copies of whole faces land in the padding and are dropped: a face is kept only
    when at least `min_inside` of its box lies inside the image.
    """
    import cv2

    height, width = image.shape[:2]
    p = max(16, round(pad * max(height, width)))
    p_y, p_x = min(p, height - 1), min(p, width - 1)  # reflection needs the padding within the image
    padded = cv2.copyMakeBorder(image, p_y, p_y, p_x, p_x, cv2.BORDER_REFLECT)
    inside: Box = (0.0, 0.0, float(width), float(height))
    factor = 1.0 if max_side is None else min(1.0, max_side / float(max(padded.shape[:2])))
    small = resize(padded, factor)
    back = scale_and_shift(small.shape[1] / float(padded.shape[1]), (-p_x, -p_y))
    faces = [map_face(f, back, "border") for f in detect(small)]
    return [f for f in faces if area(f.box) > 0 and intersection(f.box, inside) / area(f.box) >= min_inside]


def search_faces(detect: DetectFn, image: np.ndarray, passes: SearchPasses = DEFAULT) -> list[Face]:
    """Every face any pass finds, merged, in the original image's coordinates.

    Each face's `detector` names the pass that found it: "centerface" (plain),
    "centerface+up2" (small-face pass), "centerface+clahe", "centerface+rot90" (found in the
    image turned 90 degrees clockwise), combined as "centerface+up2+rot90".
    """
    image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    found = _upright(detect, image, passes, "")
    mode = passes.rotations
    if mode == "off" or (mode == "if_none" and found):
        return merge_faces(found, passes.iou, passes.containment)
    upright = merge_faces(found, passes.iou, passes.containment)
    probing = mode == "probe" and bool(upright)  # with nothing upright, search every rotation fully, as "if_none"
    factor = min(passes.probe_scale, passes.probe_side / float(max(image.shape[:2])))
    thumbnail = resize(image, factor) if probing else image  # made once, turned for each probe
    for degrees in passes.angles:
        if _quarter_turns(degrees) == 0:
            continue
        tag = f"rot{degrees % 360}"
        back = _rotation_back(degrees, image.shape)
        if probing:
            probe = detect(rotate_image(thumbnail, degrees))
            probe_back = scale_and_shift(resize_factor(rotated_shape(image.shape, degrees), factor))
            seen = [map_face(map_face(f, probe_back), back, tag) for f in probe]
            if factor == 1.0:  # the probe was the full search of this rotation
                found += seen
                continue
            if not _probe_finds_more(seen, upright):
                continue  # the probe is only a trigger: the full-size pass below decides what is kept
        turned = rotate_image(image, degrees)
        found += [map_face(f, back) for f in _upright(detect, turned, passes, tag)]
    return merge_faces(found, passes.iou, passes.containment)


def _probe_finds_more(probe: Sequence[Face], upright: Sequence[Face]) -> bool:
    """Whether a rotation probe saw what the upright passes missed, so the rotation earns a full search.

    True when the probe found more faces than the upright passes; or a face none of theirs
    covers with a score at least as high as their least confident face (the same detector's
    scale, so this stays detector-agnostic; weak lone hits in turned views are mostly texture);
    or the faces both found score higher in the probe, in sum: the photo is probably sideways,
    and an upright detector's landmarks of a sideways face are poor.
    """
    if len(probe) > len(upright):
        return True
    floor = min((u.score for u in upright), default=-np.inf)
    gain = 0.0
    for f in probe:
        covering = [u for u in upright if centre_inside(f.box, u.box)]
        if not covering and f.score >= floor:
            return True
        if covering:
            gain += f.score - max(u.score for u in covering)
    return gain > 0


def resize_factor(shape: tuple[int, ...], factor: float) -> float:
    """The horizontal factor `resize` really applies (sizes are rounded to whole pixels)."""
    width = shape[1]
    return max(1, round(width * factor)) / float(width) if factor != 1.0 else 1.0


def _rotation_back(degrees: int, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda points: rotated_to_original(points, degrees, shape)


def region_turns(roll_tolerance: float) -> tuple[float, ...]:
    """In-plane turns (clockwise degrees) of the region search for a detector that finds faces rolled by up to
    `roll_tolerance` degrees either way: every quarter turn, as an attacker turns a photo, and turns in
    between, spaced so a face at any angle is within the tolerance of one view (30-degree steps for 15).
    A generator that turns the face (or flips it: a vertical flip is a 180-degree turn of a mirrored face,
    which these detectors and recognizers see as a face of the same person) cannot hide it from verification.
    """
    step = 90.0 / max(1, int(np.ceil(90.0 / (2.0 * max(roll_tolerance, 1.0)) - 1e-9)))
    return tuple(float(a) for a in np.arange(0.0, 360.0, step))


#: The turns for a detector of the default tolerance (15 degrees): every 30 degrees.
REGION_TURNS: tuple[float, ...] = region_turns(15.0)

#: Where each landmark goes when the face is mirrored (its right eye becomes its left eye): iBUG 68 and ArcFace 5.
_MIRROR_68 = np.array(
    [*range(16, -1, -1), *range(26, 21, -1), *range(21, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)
_MIRROR_5 = np.array([1, 0, 2, 4, 3])


def mirrored_landmarks(points: np.ndarray) -> np.ndarray:
    """Landmarks of a face seen in a mirror, relabelled so they describe the face as it is (left eye first again)."""
    order = _MIRROR_68 if len(points) == 68 else _MIRROR_5
    return np.asarray(points)[order]


def _view(crop: np.ndarray, angle: float, mirror: bool) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The crop mirrored (left-right) when asked, then turned clockwise by `angle`; and the map back to the crop.

    Quarter turns are exact (no interpolation, no larger canvas); other angles turn onto a canvas that holds
    the whole crop, its border replicated.
    """
    import cv2

    height, width = crop.shape[:2]
    flipped = np.ascontiguousarray(crop[:, ::-1]) if mirror else crop

    def unmirror(points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.stack([width - p[:, 0], p[:, 1]], axis=1) if mirror else p

    if angle % 90 == 0:
        degrees = int(angle) % 360
        return rotate_image(flipped, degrees), lambda p: unmirror(rotated_to_original(p, degrees, crop.shape))
    canvas = int(np.ceil(np.hypot(width, height)))
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), -angle, 1.0)  # OpenCV turns counter-clockwise
    turn[:, 2] += ((canvas - width) / 2, (canvas - height) / 2)
    turned = cv2.warpAffine(flipped, turn, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inverse = cv2.invertAffineTransform(turn)
    return np.asarray(turned), lambda p: unmirror(np.asarray(p, dtype=np.float64) @ inverse[:, :2].T + inverse[:, 2])


def search_region(
    detect: DetectFn,
    image: np.ndarray,
    box: Box,
    *,
    margin: float = 0.5,
    face_side: int = 160,
    max_factor: float = 8.0,
    passes: SearchPasses = PLAIN,
    turns: Sequence[float] = (0.0,),
    mirror: Sequence[float] = (),
) -> list[Face]:
    """Faces in and around `box`, found on a crop upscaled so the box is about `face_side` px; image coordinates.

    For the verifier: re-detect on the output where each face was (or anywhere its crop was pasted:
    give that region as `box` with `margin=0`), with the crop enlarged so a shrunken or half-hidden
    face is still big enough for the detector, turned clockwise by each of `turns` degrees so a tilted or
    upside-down face is found too, and mirrored then turned by each of `mirror` degrees (for detectors
    that see a face and its mirror image differently). A face found in a mirrored view gets its landmarks
    relabelled (`mirrored_landmarks`), so an encoder reads it as the face it is. `margin` grows the window
    by that share of the box's larger side on each side; `passes` applies inside the crop. A face cut by the
    window edge may be found only in part, or not at all: `margin` should leave room around the face.
    """
    image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    left, top, right, bottom = region_window(box, image.shape, margin)
    side = max(box[2] - box[0], box[3] - box[1], 1.0)
    factor = float(min(max_factor, max(1.0, face_side / side)))
    crop = resize(np.ascontiguousarray(image[top:bottom, left:right]), factor)
    back = scale_and_shift(crop.shape[1] / float(right - left), (left, top))
    views = [(float(a), False) for a in turns] + [(float(a), True) for a in mirror]
    found: list[Face] = []
    for angle, mirrored in views:
        if not angle and not mirrored:
            found += [map_face(f, back) for f in search_faces(detect, crop, passes)]
            continue
        view, unview = _view(crop, angle, mirrored)
        for f in search_faces(detect, view, passes):
            face = map_face(map_face(f, unview), back)
            found.append(dataclasses.replace(face, landmarks=mirrored_landmarks(face.landmarks)) if mirrored else face)
    return merge_faces(found, passes.iou, passes.containment) if len(views) > 1 else found
