"""`rp review` end to end: the command in a subprocess, driven by Debian's chromium, and killed mid-render.

The browser test clicks on the real page: keep one face of t1, give another a prompt, render; then
an independent recognizer (dlib's 128-d descriptor, straight from face_recognition_models) searches
the whole output for every original face. Set RP_REVIEW_SCREENSHOT=docs/img/review.png to refresh
the docs' picture of the page.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rp_core.io import read_image, read_image_with_metadata, write_image

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _t1_jpg() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / "t1.jpg"


def _start(*args: object, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """`rp review ARGS --no-browser` in a subprocess (this checkout's rp_core), and the address it prints."""
    command = [sys.executable, "-m", "rp_core.cli", "review", *map(str, args), "--no-browser"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Review ") and "http://127.0.0.1:" in line:
            return process, line.split(" at ", 1)[1].strip()
    process.kill()
    raise AssertionError("rp review did not start:\n" + "".join(lines))


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _api(url: str, path: str, method: str = "GET", payload: Any = None) -> Any:
    base, token = url.split("/?token=")
    body = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base + path, data=body, method=method, headers={"X-RP-Token": token})
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_user_keeps_one_face_prompts_another_and_renders_in_headless_chromium(
    tmp_path: Path,
    astronaut: np.ndarray,
    reidentifier,
    stop,  # type: ignore[no-untyped-def]
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    browser_path = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if browser_path is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); CI installs it")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(_t1_jpg(), photos / "t1.jpg")
    write_image(photos / "astronaut.png", astronaut)
    out = tmp_path / "out"
    process, url = _start(photos / "t1.jpg", photos / "astronaut.png", "-o", out, "--preset", "offline", cwd=tmp_path)
    stop.append(process)
    keep, prompted = 2, 1
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=browser_path,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url)
        face = page.locator(f'[data-face="0-{keep}"]')
        face.wait_for(timeout=60_000)
        assert page.locator("[data-face]").count() == 7  # 6 in t1, 1 in the astronaut
        page.wait_for_function("() => [...document.querySelectorAll('.frame img')].every(i => i.naturalWidth > 0)")
        assert page.locator('img[alt^="t1.jpg"]').evaluate("img => img.naturalWidth") == 1280  # the original, shown
        face.click()
        page.locator(f'[data-face="0-{keep}"].keep').wait_for(timeout=30_000)
        prompt = page.locator(f'[data-prompt="0-{prompted}"]')
        prompt.fill("an old man")
        prompt.press("Tab")
        page.wait_for_function("() => document.getElementById('saved').textContent.includes('faces.json')")
        assert page.locator("[data-face].keep").count() == 1
        page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
        shot = Path(os.environ.get("RP_REVIEW_SCREENSHOT", tmp_path / "review.png"))
        page.screenshot(path=str(shot), full_page=True)
        page.click("#render")
        page.wait_for_selector('body[data-render="done"]', timeout=300_000)
        result = page.locator('img[data-result="0"]')
        result.wait_for(timeout=30_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('img[data-result]')].every(i => i.naturalWidth > 0)"
        )
        assert page.locator('#results img[alt$=", original"]').count() == 0  # the anonymized side only...
        page.check("#show-originals")  # ...unless the user asks
        assert page.locator('#results img[alt$=", original"]').count() == 2
        status = page.locator("#status").text_content() or ""
        context.close()
    assert problems == []
    assert "2 anonymized (7 faces)" in status and "0 failed" in status

    document = json.loads((out / "faces.json").read_text())
    t1_faces = next(e for e in document["images"] if e["input"] == "t1.jpg")["faces"]
    assert [f["keep"] for f in t1_faces] == [k == keep for k in range(6)]
    assert [f["prompt"] for f in t1_faces] == ["an old man" if k == prompted else None for k in range(6)]
    manifest = json.loads((out / "manifest.json").read_text())
    records = {e["input"]: e for e in manifest["images"]}
    assert {n: e["status"] for n, e in records.items()} == {"t1.jpg": "anonymized", "astronaut.png": "anonymized"}
    actions = [f["action"] for f in records["t1.jpg"]["faces"]]
    assert actions[keep] == "kept" and actions.count("kept") == 1

    original, metadata = read_image_with_metadata(photos / "t1.jpg")
    output = read_image(out / "t1.jpg")
    x0, y0, x1, y1 = (round(v) for v in t1_faces[keep]["box"])
    # A JPEG is written again (with its own tables), so even an untouched photo moves by a few levels in some
    # blocks; the kept face is exactly the untouched photo written the same way (a PNG keeps it byte for byte:
    # tests/test_review.py), and within JPEG's generation loss of the original.
    write_image(tmp_path / "untouched.jpg", original, metadata=metadata)
    untouched = read_image(tmp_path / "untouched.jpg")
    assert np.array_equal(untouched[y0:y1, x0:x1], output[y0:y1, x0:x1])
    assert np.abs(original[y0:y1, x0:x1].astype(int) - output[y0:y1, x0:x1]).max() <= 8
    rects = list(reidentifier.detector(original, 0))
    assert len(rects) == 6
    kept_rect = max(
        range(6),
        key=lambda r: _iou((rects[r].left(), rects[r].top(), rects[r].right(), rects[r].bottom()), (x0, y0, x1, y1)),
    )
    for before, after, kept in (
        (original, output, kept_rect),
        (astronaut, read_image(out / "astronaut.png"), None),
    ):
        faces = [
            np.array(reidentifier.model.compute_face_descriptor(before, reidentifier.predictor(before, r)))
            for r in reidentifier.detector(before, 0)
        ]
        found = reidentifier.descriptors(after, upsample=1)  # the whole output, upsampled: small faces too
        nearest = [min((float(np.linalg.norm(f - d)) for d in found), default=np.inf) for f in faces]
        for k, distance in enumerate(nearest):
            if k == kept:
                assert distance < 0.1, nearest  # still themselves
            else:
                assert distance > reidentifier.threshold, nearest

    process.send_signal(signal.SIGINT)  # Ctrl-C stops the server cleanly
    assert process.wait(30) == 0


def test_a_server_killed_mid_render_leaves_no_partial_output_and_resume_finishes(
    tmp_path: Path,
    stop,  # type: ignore[no-untyped-def]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in range(5):
        shutil.copy(_t1_jpg(), photos / f"t1-{n}.jpg")
    out = tmp_path / "out"
    process, url = _start(photos, "-o", out, "--preset", "offline", cwd=tmp_path)
    stop.append(process)
    for index in range(5):
        assert _api(url, f"/api/images/{index}/faces/0", "POST", {"keep": True})["keep"] is True
    _api(url, "/api/render", "POST")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        render = _api(url, "/api/state")["render"]
        if render["finished"] >= 1:
            break
        time.sleep(0.05)
    process.kill()  # SIGKILL: no clean-up of any kind
    process.wait(10)
    assert render["state"] == "running" and 1 <= render["finished"] < 5
    written = sorted(p.name for p in out.glob("t1-*.jpg"))
    assert 1 <= len(written) < 5, written
    assert not (out / "manifest.json").exists()  # written when the run ends
    for name in written:  # published files are whole: the same size as the photo, decodable to the last row
        assert read_image(out / name).shape == (886, 1280, 3)

    resumed = subprocess.run(
        [sys.executable, "-m", "rp_core.cli", "anonymize", photos, "-o", out, "--preset", "offline"]
        + ["--faces-json", out / "faces.json", "--resume"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(written)} files already done, {5 - len(written)} to go" in resumed.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(e["input"] for e in manifest["images"]) == [f"t1-{n}.jpg" for n in range(5)]
    assert all(e["status"] == "anonymized" for e in manifest["images"])
    assert all([f["action"] for f in e["faces"]].count("kept") == 1 for e in manifest["images"])
    assert not list(out.glob(".*.part"))
    original, metadata = read_image_with_metadata(photos / "t1-0.jpg")
    write_image(tmp_path / "untouched.jpg", original, metadata=metadata)  # what a kept face becomes in a JPEG
    untouched = read_image(tmp_path / "untouched.jpg")
    box = json.loads((out / "faces.json").read_text())["images"][0]["faces"][0]["box"]
    x0, y0, x1, y1 = (round(v) for v in box)
    for n in range(5):
        output = read_image(out / f"t1-{n}.jpg")
        assert np.array_equal(output[y0:y1, x0:x1], untouched[y0:y1, x0:x1])
        assert not np.array_equal(output, untouched)
