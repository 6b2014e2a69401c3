"""Image I/O: orientation, modes, metadata stripping, clear errors for bad files, input planning."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from rp_core.errors import InputError
from rp_core.files.decode import read_image, read_image_with_metadata, to_rgb_array
from rp_core.files.encode import write_image
from rp_core.files.formats import UsageError
from rp_core.files.plan import plan_inputs

RED, BLUE = (255, 0, 0), (0, 0, 255)
GPS_IFD = 0x8825


def _left_red_right_blue(w: int = 40, h: int = 20) -> np.ndarray:
    array = np.zeros((h, w, 3), np.uint8)
    array[:, : w // 2] = RED
    array[:, w // 2 :] = BLUE
    return array


def _close(a: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.abs(a.astype(int) - np.array(colour)).max() <= tol)


def _jpeg_with_metadata(path: Path, orientation: int = 1) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_left_red_right_blue()).save(
        path, exif=exif, icc_profile=srgb, comment=b"taken at home", xmp=b"<x:xmpmeta>secret</x:xmpmeta>", quality=95
    )


@pytest.mark.parametrize(
    ("orientation", "shape", "top_left"),
    [(1, (20, 40), RED), (3, (20, 40), BLUE), (6, (40, 20), RED), (8, (40, 20), BLUE)],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, shape: tuple[int, int], top_left: tuple) -> None:
    path = tmp_path / "o.jpg"
    _jpeg_with_metadata(path, orientation)
    array = read_image(path)
    assert array.shape == (*shape, 3) and array.dtype == np.uint8
    assert _close(array[2:5, 2:5], top_left)


def test_orientation_is_applied_once_even_when_metadata_is_kept(tmp_path: Path) -> None:
    source = tmp_path / "o.jpg"
    _jpeg_with_metadata(source, orientation=6)
    array, metadata = read_image_with_metadata(source)
    write_image(tmp_path / "kept.jpg", array, metadata=metadata, keep_gps=True)
    with Image.open(tmp_path / "kept.jpg") as kept:
        assert kept.getexif().get(0x0112) in (None, 1)
        assert kept.getexif().get_ifd(GPS_IFD)  # GPS kept on explicit request only (keep_gps)
    again = read_image(tmp_path / "kept.jpg")
    assert again.shape == array.shape and _close(again[2:5, 2:5], RED)


def test_jpeg_with_gps_exif_comes_out_with_no_metadata(tmp_path: Path) -> None:
    source = tmp_path / "gps.jpg"
    _jpeg_with_metadata(source)
    with Image.open(source) as original:
        assert original.getexif().get_ifd(GPS_IFD) and "icc_profile" in original.info and "comment" in original.info
    out = write_image(tmp_path / "out.jpg", read_image(source))
    with Image.open(out) as written:
        assert len(written.getexif()) == 0
        assert not written.getexif().get_ifd(GPS_IFD)
        for key in ("exif", "icc_profile", "comment", "xmp"):
            assert key not in written.info
    assert (
        b"CameraMaker" not in out.read_bytes() and b"secret" not in out.read_bytes() and b"home" not in out.read_bytes()
    )


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_round_trip(tmp_path: Path, ext: str) -> None:
    array = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(read_image(write_image(tmp_path / f"x{ext}", array)), array)


def test_png_is_written_at_zlibs_fastest_level(tmp_path: Path, astronaut: np.ndarray) -> None:
    """The cause of a fast PNG write: the image data's zlib header says "fastest" (level 1), not the default 6."""
    data = write_image(tmp_path / "x.png", astronaut).read_bytes()
    at = data.index(b"IDAT") + 4
    assert data[at] & 0x0F == 8 and (data[at + 1] >> 6) == 0  # deflate, FLEVEL 0 (level 1); level 6 gives 2
    assert np.array_equal(read_image(tmp_path / "x.png"), astronaut)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".webp"])
def test_lossy_round_trip_is_close(tmp_path: Path, ext: str) -> None:
    array = _left_red_right_blue(64, 32)
    back = read_image(write_image(tmp_path / f"x{ext}", array))
    assert back.shape == array.shape and np.abs(back.astype(int) - array).mean() < 3


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.png"
    write_image(target, _left_red_right_blue())
    write_image(target, np.zeros((5, 5, 3), np.uint8))  # replaces the existing file
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]
    assert read_image(target).shape == (5, 5, 3)
    with pytest.raises(UsageError, match=r"\.gif"):  # a usage error (exit 2) since the fail-closed round
        write_image(tmp_path / "out.gif", _left_red_right_blue())
    assert not (tmp_path / "out.gif").exists()


def _mode_image(mode: str) -> Image.Image:
    base = Image.fromarray(_left_red_right_blue())
    if mode == "I;16":
        return Image.fromarray(np.full((20, 40), 65535, np.uint16))
    if mode == "F":
        return Image.fromarray(np.full((20, 40), 1.0, np.float32))
    if mode == "P-transparent":
        image = base.convert("P")
        image.info["transparency"] = 0
        return image
    return base.convert(mode)


@pytest.mark.parametrize(
    ("mode", "ext"),
    [
        ("L", ".png"),
        ("LA", ".png"),
        ("RGBA", ".png"),
        ("P", ".png"),
        ("P-transparent", ".png"),
        ("1", ".png"),
        ("I;16", ".png"),
        ("CMYK", ".jpg"),
        ("CMYK", ".tif"),
        ("F", ".tif"),
        ("RGB", ".webp"),
    ],
)
def test_every_mode_becomes_rgb_uint8(tmp_path: Path, mode: str, ext: str) -> None:
    path = tmp_path / f"m{ext}"
    _mode_image(mode).save(path)
    array = read_image(path)
    assert array.shape == (20, 40, 3) and array.dtype == np.uint8 and array.flags.c_contiguous
    if mode in ("I;16", "F"):
        assert (array == 255).all()  # full scale maps to white, not clipped garbage
    if mode in ("RGB", "RGBA", "P", "CMYK"):
        assert _close(array[5, 5], RED, 40) and _close(array[5, 35], BLUE, 40)


def test_rgba_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert (to_rgb_array(rgba) == 255).all()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"this is not an image\n" * 10, "not an image"),
        ("random.jpg", bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), "not an image"),
        ("bomb.png", _png_header_only(100_000, 100_000), "decompression bomb"),
    ],
)
def test_bad_files_raise_one_clear_line(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_image(path)
    message = str(info.value)
    assert expected in message and name in message and "\n" not in message


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_files_are_rejected(tmp_path: Path, ext: str) -> None:
    good = write_image(tmp_path / f"good{ext}", np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    bad = tmp_path / f"cut{ext}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_image(bad)


def test_bomb_limit_is_configurable(tmp_path: Path) -> None:
    path = write_image(tmp_path / "small.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputError, match="decompression bomb"):
        read_image_with_metadata(path, max_pixels=300)  # between 1x and 2x: Pillow only warns; we refuse


def test_animated_gif_is_refused(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="2 frames"):
        read_image(tmp_path / "anim.gif")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.jpg")


def test_unicode_and_spaces_in_paths(tmp_path: Path) -> None:
    path = write_image(tmp_path / "dossier é 写真" / "visage ü.png", _left_red_right_blue())
    assert read_image(path).shape == (20, 40, 3)


# -- planning -------------------------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_plan_file_to_file(tmp_path: Path) -> None:
    source = _touch(tmp_path / "a.jpg")
    plan = plan_inputs([source], tmp_path / "out.png")
    assert not plan.to_folder and plan.jobs[0].target == tmp_path / "out.png"
    assert plan.manifest_path == tmp_path / "out.png.manifest.json"


def test_plan_folder_mirrors_tree_with_hidden_entries_and_skips_other_and_output(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("a.jpg", "x/b.PNG", "x/y/c.webp", ".hidden/d.jpg", "x/.e.jpg", "notes.txt"):
        _touch(root / rel)
    out = root / "anonymized"  # an output inside the input folder is never read back as input
    _touch(out / "old.jpg")
    plan = plan_inputs([root], out)
    assert plan.to_folder and plan.manifest_path == out / "manifest.json"
    # hidden files and folders are inputs too since the fail-closed round: thumbnails show faces
    assert sorted(str(j.target.relative_to(out)) for j in plan.jobs) == [
        ".hidden/d.jpg",
        "a.jpg",
        "x/.e.jpg",
        "x/b.PNG",
        "x/y/c.webp",
    ]
    assert [p.name for p in plan.ignored] == ["notes.txt"]
    assert [(s.path.name, s.reason) for s in plan.skipped] == [("notes.txt", "unsupported format")]


def test_plan_several_inputs(tmp_path: Path) -> None:
    a = _touch(tmp_path / "one" / "a.jpg")
    folder = tmp_path / "two"
    _touch(folder / "sub" / "b.jpg")
    plan = plan_inputs([a, folder], tmp_path / "out")
    assert [str(j.target.relative_to(tmp_path / "out")) for j in plan.jobs] == ["a.jpg", "two/sub/b.jpg"]


def test_plan_refuses_name_clashes_missing_inputs_and_overwriting_inputs(tmp_path: Path) -> None:
    a = _touch(tmp_path / "one" / "a.jpg")
    b = _touch(tmp_path / "two" / "a.jpg")
    with pytest.raises(InputError, match="would both be written"):
        plan_inputs([a, b], tmp_path / "out")
    with pytest.raises(InputError, match="no such file or folder"):
        plan_inputs([tmp_path / "missing.jpg"], tmp_path / "out.jpg")
    with pytest.raises(InputError, match="overwrite its own input"):
        plan_inputs([a], a)
    with pytest.raises(InputError, match="must be a folder"):
        plan_inputs([tmp_path / "one", tmp_path / "two"], a)


def test_mpo_phone_photo_decodes_its_first_frame(tmp_path: Path) -> None:
    photo = Image.fromarray(_left_red_right_blue(64, 48))
    small = Image.new("RGB", (16, 12), (0, 255, 0))  # e.g. the gain map of an Ultra HDR photo
    path = tmp_path / "phone.jpg"
    photo.save(path, format="MPO", save_all=True, append_images=[small])
    with Image.open(path) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    array = read_image(path)
    assert array.shape == (48, 64, 3) and _close(array[:, :20], RED) and _close(array[:, -20:], BLUE)
    out = write_image(tmp_path / "out.jpg", array)
    with Image.open(out) as written:  # the extra frame never reaches the output
        assert written.format == "JPEG" and getattr(written, "n_frames", 1) == 1


def test_before_publish_runs_when_the_file_is_complete_but_not_yet_in_place(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    seen: list[tuple[bool, list[str]]] = []

    def note() -> None:
        seen.append((target.exists(), sorted(p.name for p in tmp_path.iterdir())))

    write_image(target, _left_red_right_blue(), before_publish=note)
    assert len(seen) == 1 and seen[0][0] is False and seen[0][1][0].startswith(".out.png.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_plan_into_a_parent_folder_still_finds_the_inputs(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "a.jpg")
    plan = plan_inputs([root], tmp_path)  # the output holds the input: nothing may be hidden as "output"
    assert [j.target for j in plan.jobs] == [tmp_path / "a.jpg"]
