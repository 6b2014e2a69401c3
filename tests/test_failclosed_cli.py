"""Fail closed at the command line: bad inputs, a killed run, metadata. Real plugins (offline preset), real files."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.runs import RP, manifest_facts, shifted_images, snapshot
from PIL import Image

from rp_core.cli import create_cli
from rp_core.io import read_image

GPS_IFD = 0x8825


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb's calling card)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _good_images(astronaut: np.ndarray) -> dict[str, bytes]:
    """Readable files in every awkward mode, each holding astronaut's face, plus one with no face."""
    rgb = Image.fromarray(astronaut)
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    return {
        "good rgb.jpg": _encode(rgb, "JPEG", quality=95),
        "good rgb.png": _encode(rgb, "PNG"),
        "good cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG", quality=95),
        "good grey.png": _encode(rgb.convert("L"), "PNG"),
        "good grey16.png": _encode(grey16, "PNG"),
        "good palette.png": _encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"),
        "good rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "good cmyk.tif": _encode(rgb.convert("CMYK"), "TIFF"),
        "good grey16.tif": _encode(grey16, "TIFF"),
        "good la.tif": _encode(rgb.convert("LA"), "TIFF"),
        "good ünïcode.webp": _encode(rgb, "WEBP", quality=95),
        "good rgb.bmp": _encode(rgb, "BMP"),
        "good png named.jpg": _encode(rgb, "PNG"),  # wrong extension, readable content: sniffed, not trusted
        "no face.png": _encode(Image.new("RGB", (64, 48), (90, 120, 150)), "PNG"),
    }


def _bad_files(astronaut: np.ndarray) -> dict[str, bytes]:
    """At least 50 files that must each be refused with one line; the run must go on."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(astronaut)
    jpeg, png = _encode(rgb, "JPEG", quality=90), _encode(rgb, "PNG")
    bad: dict[str, bytes] = {}
    for fraction in (0.001, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9):
        bad[f"truncated {fraction}.jpg"] = jpeg[: max(3, int(len(jpeg) * fraction))]
        bad[f"truncated {fraction}.png"] = png[: max(9, int(len(png) * fraction))]
    for ext in ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"):
        bad[f"empty.{ext}"] = b""
    for i, ext in enumerate(("jpg", "png", "bmp", "tif", "webp", "jpg", "png", "tiff", "jpeg", "webp")):
        bad[f"random {i}.{ext}"] = rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
    bad["text.jpg"] = b"this is not an image at all\n" * 20
    bad["html.png"] = b"<!doctype html><html><body>nope</body></html>"
    bad["pdf.tif"] = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"
    bad["zip.webp"] = b"PK\x03\x04" + bytes(60)
    bad["json.bmp"] = json.dumps({"image": False}).encode()
    bad["bomb 100k.png"] = _png_claiming(100_000, 100_000)
    bad["bomb wide.png"] = _png_claiming(2_000_000, 200)
    bad["bomb tall.png"] = _png_claiming(300, 1_000_000)
    bad["bomb.bmp"] = (
        b"BM"
        + struct.pack("<IHHI", 0, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 0, 0, 0, 0)
    )
    frames = [Image.new("RGB", (32, 32), (i * 60, 0, 0)) for i in range(3)]
    bad["animated gif.png"] = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    bad["animated.webp"] = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50)
    bad["multipage.tif"] = _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    broken = bytearray(png)
    broken[len(broken) // 2 : len(broken) // 2 + 400] = bytes(400)
    bad["zeroed middle.png"] = bytes(broken)
    bad["jpeg header then junk.jpg"] = jpeg[:20] + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad["png signature only.png"] = b"\x89PNG\r\n\x1a\n"
    bad["jpeg markers only.jpg"] = b"\xff\xd8\xff\xd9"
    bad["tiff header only.tif"] = b"II*\x00\x08\x00\x00\x00"
    return bad


def test_fuzz_folder_of_bad_and_good_files(tmp_path: Path, astronaut: np.ndarray) -> None:
    source, out = tmp_path / "in put", tmp_path / "out"
    source.mkdir()
    good, bad = _good_images(astronaut), _bad_files(astronaut)
    assert len(bad) >= 50
    for name, data in {**good, **bad}.items():
        (source / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in source.iterdir()}

    result = CliRunner().invoke(create_cli(), ["anonymize", str(source), "-o", str(out), "--preset", "offline"])

    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 4, result.output  # per-file failures, nothing else
    assert "Traceback" not in result.output
    failed_lines = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed_lines) == len(bad), "\n".join(failed_lines)
    for name in bad:
        assert sum(f"/{name}: " in line for line in failed_lines) == 1, name  # one clear line per bad file
    manifest = json.loads((out / "manifest.json").read_text())
    status = {Path(e["input"]).name: e for e in manifest["images"]}
    assert {n for n, e in status.items() if e["status"] == "failed"} == set(bad)
    for name in good:
        assert (out / name).is_file(), name
        assert read_image(out / name).shape[:2] == ((48, 64) if name == "no face.png" else (512, 512))
        expected = "no_face" if name == "no face.png" else "anonymized"
        assert status[name]["status"] == expected, (name, status[name])
        if expected == "anonymized":
            faces = status[name]["faces"]  # dlib also takes a patch on the suit for a face in some encodings
            assert 1 <= len(faces) <= 2 and all(f["notes"]["verify"]["leak"] is False for f in faces)
    assert sorted(p.name for p in out.iterdir()) == sorted([*good, "manifest.json"])  # no partial files
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before  # inputs byte-identical


@pytest.mark.e2e
def test_killed_run_resumes_to_the_same_output(tmp_path: Path, astronaut: np.ndarray) -> None:
    source = tmp_path / "photos"
    shifted_images(source, astronaut)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = subprocess.run(
        [*RP, "anonymize", str(source), "-o", str(reference), "--preset", "offline"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    # Killed on an event (its first published image), not after a deadline: a loaded machine only makes it slower.
    process = subprocess.Popen(
        [*RP, "anonymize", str(source), "-o", str(resumed), "--preset", "offline", "--log-json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("{") and json.loads(line).get("event") == "done":
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it published an image"
    written = [p for p in resumed.iterdir() if p.suffix == ".jpg"]
    assert 1 <= len(written) < 6, f"the kill came too late to test anything: {len(written)} outputs"
    assert not (resumed / "manifest.json").exists()

    again = subprocess.run(
        [*RP, "anonymize", str(source), "-o", str(resumed), "--preset", "offline", "--resume"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert "resuming:" in again.stderr
    ours, theirs = snapshot(resumed), snapshot(reference)
    assert sorted(ours) == sorted(theirs)  # same files: no journal, no temporary file, nothing missing
    assert all(ours[name] == theirs[name] for name in ours if name != "manifest.json")  # byte-identical images
    assert manifest_facts(resumed) == manifest_facts(reference)


def test_in_place_needs_the_flag_and_replaces_atomically(tmp_path: Path, astronaut: np.ndarray) -> None:
    photo = tmp_path / "me.png"
    Image.fromarray(astronaut).save(photo)
    cli = create_cli()
    missing = CliRunner().invoke(cli, ["anonymize", str(photo), "--preset", "offline"])
    assert missing.exit_code == 2 and "--in-place" in missing.output
    same = CliRunner().invoke(cli, ["anonymize", str(photo), "-o", str(photo), "--preset", "offline"])
    assert same.exit_code != 0 and "overwrite its own input" in same.output
    assert np.array_equal(read_image(photo), astronaut)
    done = CliRunner().invoke(cli, ["anonymize", str(photo), "--in-place", "--preset", "offline"])
    assert done.exit_code == 0, done.output
    assert not np.array_equal(read_image(photo), astronaut)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.png", "me.png.manifest.json"]


def test_gps_exif_is_gone_from_the_output_by_default(tmp_path: Path, astronaut: np.ndarray) -> None:
    source = tmp_path / "gps.jpg"
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    Image.fromarray(astronaut).save(source, exif=exif, quality=95)
    with Image.open(source) as original:
        assert original.getexif().get_ifd(GPS_IFD)
    result = CliRunner().invoke(
        create_cli(), ["anonymize", str(source), "-o", str(tmp_path / "out.jpg"), "--preset", "offline"]
    )
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out.jpg") as written:
        assert len(written.getexif()) == 0 and not written.getexif().get_ifd(GPS_IFD) and "exif" not in written.info
    assert b"CameraMaker" not in (tmp_path / "out.jpg").read_bytes()


def _anonymize(*args: str) -> Any:
    return CliRunner().invoke(create_cli(), ["anonymize", *args, "--preset", "offline"])


def test_resume_never_replaces_a_file_the_run_did_not_write(
    tmp_path: Path, t1: np.ndarray, astronaut: np.ndarray
) -> None:
    source, precious = tmp_path / "astronaut.png", tmp_path / "precious.jpg"
    Image.fromarray(astronaut).save(source)
    Image.fromarray(t1).save(precious, quality=90)
    before = precious.read_bytes()
    result = _anonymize(str(source), "-o", str(precious), "--resume")
    assert result.exit_code == 0, result.output
    assert "exists, skipped" in result.output and "1 skipped" in result.output
    assert precious.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut.png", "precious.jpg"]
    forced = _anonymize(str(source), "-o", str(precious), "--resume", "--overwrite")
    assert forced.exit_code == 0, forced.output
    assert read_image(precious).shape == (512, 512, 3)


def test_resume_redoes_an_output_its_journal_says_it_was_publishing(tmp_path: Path, astronaut: np.ndarray) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    Image.fromarray(astronaut).save(source / "a.png")
    Image.fromarray(astronaut[::-1]).save(source / "b.png")
    assert _anonymize(str(source), "-o", str(out)).exit_code == 0
    reference = {name: (out / name).read_bytes() for name in ("a.png", "b.png")}
    statuses = [e["status"] for e in json.loads((out / "manifest.json").read_text())["images"]]
    # as if killed right after b.png replaced its target, before its record: the journal holds the intent only
    (out / "manifest.json").unlink()
    (out / "b.png").write_bytes(b"half of a run's own output")
    (out / ".manifest.json.journal").write_text(
        json.dumps({"input": str(source / "a.png"), "output": str(out / "a.png"), "status": "anonymized"})
        + "\n"
        + json.dumps({"input": str(source / "b.png"), "output": str(out / "b.png"), "status": "writing"})
        + "\n"
    )
    (out / ".a.png.x1y2.part").write_bytes(b"temporary")
    result = _anonymize(str(source), "-o", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming: 1 files already done, 1 to go" in result.output and "exists, skipped" not in result.output
    assert {name: (out / name).read_bytes() for name in ("a.png", "b.png")} == reference
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "manifest.json"]
    assert [e["status"] for e in json.loads((out / "manifest.json").read_text())["images"]] == statuses


def test_rerun_keeps_the_manifest_records_of_outputs_it_skips(tmp_path: Path, astronaut: np.ndarray) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    Image.fromarray(astronaut).save(source / "a.png")
    assert _anonymize(str(source), "-o", str(out)).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())["images"]
    assert first[0]["status"] == "anonymized" and first[0]["faces"]
    Image.fromarray(astronaut[:, ::-1]).save(source / "b.png")
    again = _anonymize(str(source), "-o", str(out))
    assert again.exit_code == 0, again.output
    assert "a.png: exists, skipped" in again.output and "1 anonymized" in again.output and "1 skipped" in again.output
    images = {Path(e["input"]).name: e for e in json.loads((out / "manifest.json").read_text())["images"]}
    assert images["a.png"] == first[0]  # carried over, face records included
    assert images["b.png"]["status"] == "anonymized"


@pytest.mark.parametrize("where", ["under a file", "proc", "read-only"])
def test_unwritable_output_is_one_line_and_an_input_error(tmp_path: Path, astronaut: np.ndarray, where: str) -> None:
    source = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(source)
    if where == "under a file":
        output, reason = source / "x.jpg", f"{source} is a file, not a folder"
    elif where == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc")
        output, reason = Path("/proc/x.jpg"), "No such file or directory"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir(mode=0o555)
        output, reason = tmp_path / "ro" / "sub" / "x.jpg", "Permission denied"
    result = _anonymize(str(source), "-o", str(output))
    assert isinstance(result.exception, SystemExit) and result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot write to {output}: ") and reason in lines[0]
    debug = CliRunner().invoke(
        create_cli(), ["anonymize", str(source), "-o", str(output), "--preset", "offline", "--debug"]
    )
    assert type(debug.exception).__name__ == "InputError"
