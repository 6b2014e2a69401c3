"""Writes that cannot lie: a write that does not fully reach the disk raises and leaves the target untouched.

The failures are real: a child process under RLIMIT_FSIZE (with SIGXFSZ ignored, so the kernel answers a
short write and then EFBIG, as on a full disk), and a tiny tmpfs that really runs out of space.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rp_core.files.decode import read_image
from rp_core.files.encode import _check_decodes, write_image
from rp_core.files.write import atomic_write_bytes

FORMATS = [".jpg", ".png", ".bmp", ".tif", ".webp"]
LIMIT = 32 * 1024  # every format encodes the 256x256 noise image to 63 KB (WebP) or more


def _noise(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _original(path: Path) -> bytes:
    """A small 'original photo' at `path` (as with --in-place); returns its bytes."""
    write_image(path, np.full((8, 8, 3), 120, np.uint8))
    return path.read_bytes()


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    import numpy as np
    from rp_core.files.encode import write_image
    from rp_core.files.write import atomic_write_bytes

    kind, target, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG) instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        if kind == "image":
            write_image(target, image)
        else:
            atomic_write_bytes(target, b"{" + b"x" * (4 * limit) + b"}")
    except BaseException as exc:
        print(json.dumps({"type": type(exc).__name__, "is_oserror": isinstance(exc, OSError), "message": str(exc)}))
    else:
        print(json.dumps({"type": None}))
    """
)


def _write_in_limited_child(kind: str, target: Path, limit: int = LIMIT) -> dict:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, str(target), str(limit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize("cut", ["early", "last write short"])
def test_write_over_the_file_size_limit_raises_and_publishes_nothing(
    tmp_path: Path, ext: str, existing: bool, cut: str
) -> None:
    """'last write short': only the final write comes up 100 bytes short and nothing fails after it. Before
    the checked writes, Pillow's JPEG, BMP and TIFF encoders ignored that and the truncated file was published."""
    limit = LIMIT
    if cut == "last write short":
        scratch = write_image(tmp_path / "scratch" / f"same{ext}", _noise(256))  # the bytes the child will encode
        limit = scratch.stat().st_size - 100
        scratch.unlink()
        scratch.parent.rmdir()
    target = tmp_path / f"photo{ext}"
    before = _original(target) if existing else None
    result = _write_in_limited_child("image", target, limit)
    assert result["type"] is not None and result["is_oserror"], result
    assert "\n" not in result["message"] and "File too large" in result["message"] and str(target) in result["message"]
    if existing:
        assert target.read_bytes() == before  # the in-place original is byte-identical
        assert _leftovers(tmp_path, {target.name}) == []
    else:
        assert _leftovers(tmp_path, set()) == []  # no target and no temporary file


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_atomic_bytes_over_the_file_size_limit_keep_the_old_manifest(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text('{"old": true}\n')
    result = _write_in_limited_child("bytes", target)
    assert result["is_oserror"] and "after" in result["message"], result  # says how far it got
    assert target.read_text() == '{"old": true}\n' and _leftovers(tmp_path, {target.name}) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 96 KiB tmpfs: a real filesystem that runs out of space. Needs root (or CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", f"rp-test-{uuid.uuid4().hex[:8]}", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the RLIMIT test still runs")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.parametrize("ext", FORMATS)
def test_full_disk_leaves_the_original_untouched(small_tmpfs: Path, ext: str) -> None:
    target = small_tmpfs / f"photo{ext}"
    before = _original(target)
    with pytest.raises(OSError) as info:
        write_image(target, _noise(384))  # 140-440 KB encoded: more than the whole filesystem
    assert "No space left on device" in str(info.value) and "\n" not in str(info.value)
    assert target.read_bytes() == before
    assert _leftovers(small_tmpfs, {target.name}) == []
    assert read_image(write_image(target, _noise(16))).shape == (16, 16, 3)  # space is given back: writes work again


def test_check_refusal_and_failing_before_publish_leave_the_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "journal.json"
    target.write_bytes(b"old")
    calls: list[str] = []

    def refuse(temp: Path) -> None:
        calls.append(f"check {temp.read_bytes()!r}")
        raise OSError(5, "refused by the check", str(target))

    with pytest.raises(OSError, match="refused by the check"):
        atomic_write_bytes(target, b"new", check=refuse, before_publish=lambda: calls.append("publish"))
    assert calls == ["check b'new'"]  # the check sees the synced bytes, and publishing never started

    def crash() -> None:
        raise RuntimeError("journal unavailable")

    with pytest.raises(RuntimeError, match="journal unavailable"):
        atomic_write_bytes(target, b"new", before_publish=crash)
    assert target.read_bytes() == b"old" and _leftovers(tmp_path, {target.name}) == []
    atomic_write_bytes(target, bytearray(b"new"))
    assert target.read_bytes() == b"new" and _leftovers(tmp_path, {target.name}) == []


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".tif"])
def test_a_file_that_does_not_decode_completely_is_refused(tmp_path: Path, ext: str) -> None:
    whole = write_image(tmp_path / f"whole{ext}", _noise(64))
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    fmt = Image.open(whole).format
    _check_decodes(whole, fmt, (64, 64), whole)  # the complete file passes
    with pytest.raises(OSError, match="does not decode"):
        _check_decodes(cut, fmt, (64, 64), cut)
    with pytest.raises(OSError, match=r"expected .* \(65, 64\)"):
        _check_decodes(whole, fmt, (65, 64), whole)


def test_in_place_replacement_keeps_the_originals_permissions(tmp_path: Path) -> None:
    private = tmp_path / "private.jpg"
    _original(private)
    os.chmod(private, 0o600)
    write_image(private, _noise(16))
    assert stat.S_IMODE(private.stat().st_mode) == 0o600  # a private photo does not come back world-readable
    fresh = write_image(tmp_path / "new.png", _noise(16))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_publishing_a_file_written_by_path_as_an_encoder_does(tmp_path: Path) -> None:
    """The video writer's way: an encoder opens the draft's path itself; the target appears only at the end."""
    from rp_core.files.write import publishing

    target = tmp_path / "clip.mp4"
    before = _original(tmp_path / "clip.mp4.jpg")  # an unrelated neighbour stays as it was
    with publishing(target) as draft:
        with open(draft.path, "wb") as encoder:  # stands for PyAV's muxer
            encoder.write(b"frames")
        assert not target.exists() and draft.path.parent == tmp_path and draft.path.name.startswith(".clip.mp4.")
    assert target.read_bytes() == b"frames" and (tmp_path / "clip.mp4.jpg").read_bytes() == before
    assert _leftovers(tmp_path, {target.name, "clip.mp4.jpg"}) == []

    with pytest.raises(RuntimeError, match="bad frame"), publishing(target) as draft:
        draft.write(b"half a clip")
        raise RuntimeError("bad frame")
    assert target.read_bytes() == b"frames"  # the old file is untouched, the draft is gone
    assert _leftovers(tmp_path, {target.name, "clip.mp4.jpg"}) == []
