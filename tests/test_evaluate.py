"""`rp evaluate` on real runs of `rp anonymize`: the numbers it reports, the files it writes, the page it renders."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.stacks import FACE_STACK_PLUGINS
from PIL import Image

from rp_core import hookimpl
from rp_core.cli import create_cli
from rp_core.cli_evaluate import evaluate
from rp_core.evaluate import geometry
from rp_core.interfaces import Detector
from rp_core.plugins import PluginHost
from rp_core.types import Face


def _cli(host):  # type: ignore[no-untyped-def]
    cli = create_cli(host)
    cli.add_command(evaluate)  # until rp_core.cli registers it; adding it again is harmless
    return cli


def _invoke(host, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(_cli(host), [str(a) for a in args])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, t1: np.ndarray, astronaut: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(t1).save(folder / "t1.jpg", quality=95)
    (folder / "space").mkdir()
    Image.fromarray(astronaut).save(folder / "space" / "astronaut.png")
    return folder


@pytest.fixture(scope="module")
def offline_run(host, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The offline preset (dlib + pixelation) on t1 and astronaut, as a user would run it."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = _invoke(host, "anonymize", photos, "-o", out, "--preset", "offline")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def offline_report(host, photos: Path, offline_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """`rp evaluate ORIGINALS OUT -o report`: pairs by relative path, face records from the run's manifest."""
    report = tmp_path_factory.mktemp("report") / "report"
    result = _invoke(host, "evaluate", photos, offline_run, "-o", report, "--fail-on-match")
    assert result.exit_code == 0, result.output
    assert "re-identified by dlib: 0/7 at 0.6" in result.output
    return report


def test_offline_run_is_not_reidentified_and_leaves_the_rest_alone(offline_report: Path) -> None:
    metrics = json.loads((offline_report / "metrics.json").read_text())
    faces = [f for image in metrics["images"] for f in image["faces"]]
    assert metrics["summary"]["evaluated"] == 2 and len(faces) == 7  # 6 in t1, 1 astronaut
    assert metrics["summary"]["faces_missing_from_run"] == 0
    for face in faces:
        dlib = face["identity"]["dlib"]
        # the independent recognizer, searching the whole output, finds no face within 0.6 of the original
        assert dlib["worst"] > 0.6 and dlib["at_position"] > 0.6 and dlib["reidentified"] == {"0.6": False}
        assert dlib["roles"] == ["recognizer", "verify"]  # the run verified with dlib too (manifest notes)
        # what the run's check read: no face found where it pixelated one (null), or the face it found there
        assert dlib["reported_by_run"] is None or dlib["reported_by_run"] > 0.6
        assert face["in_manifest"] is True and face["action"] == "obfuscated"
        assert face["changed_in_box"] > 0.3
        assert face["pose_before"] is not None and all(math.isfinite(a) for a in face["pose_before"])
        if face["displacement"] is not None:
            assert math.isfinite(face["displacement"])
    for image in metrics["images"]:
        # pixels away from the faces: JPEG noise, and the whole-head mask's hair and ears past the boxes grown by 25%
        assert image["changed_outside"] < 0.005, image
    assert metrics["setup"]["manifest"].endswith("manifest.json")


def test_csv_has_a_row_per_face_matching_the_json(offline_report: Path) -> None:
    metrics = json.loads((offline_report / "metrics.json").read_text())
    with (offline_report / "metrics.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 7
    first = metrics["images"][0]["faces"][0]
    row = next(r for r in rows if r["image"] == first["image"] and r["face"] == str(first["index"]))
    assert float(row["dlib_worst"]) == pytest.approx(first["identity"]["dlib"]["worst"], abs=1e-3)
    assert row["dlib_reidentified@0.6"] == "False"


def test_a_weak_anonymization_is_caught_with_finite_landmark_displacement(host, photos: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A barely blurred face, written with verification off, must show up as re-identified; its landmarks are found."""
    weak = tmp_path / "weak"
    args = ["--preset", "offline", "--generator", "blur", "--set", "generator.options.strength=0.01"]
    run = _invoke(host, "anonymize", photos, "-o", weak, *args, "--set", "verify.enabled=false")
    assert run.exit_code == 0, run.output
    result = _invoke(host, "evaluate", photos, weak, "-o", tmp_path / "report")  # mirrored folders this time
    assert result.exit_code == 0, result.output
    gate = _invoke(host, "evaluate", photos / "space", weak / "space", "-o", tmp_path / "gate", "--fail-on-match")
    assert gate.exit_code == 5 and "re-identified by dlib (--fail-on-match)" in gate.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    faces = [f for image in metrics["images"] for f in image["faces"]]
    assert len(faces) == 7
    for face in faces:
        assert face["identity"]["dlib"]["worst"] < 0.6 and face["identity"]["dlib"]["reidentified"]["0.6"]
        assert face["landmarks_after"] == "redetected"
        assert 0.0 < face["displacement"] < 0.1  # a light blur barely moves the 68 points
        assert all(math.isfinite(a) for a in face["pose_after"])
    assert metrics["summary"]["identity"]["dlib"]["reidentification_rate"]["0.6"] == 1.0


def test_an_image_against_itself_is_a_perfect_match(host, photos: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = photos / "space" / "astronaut.png"
    result = _invoke(host, "evaluate", original, original, "-o", tmp_path / "r", "--max-thumbnails", "0")
    assert result.exit_code == 0, result.output
    (face,) = json.loads((tmp_path / "r" / "metrics.json").read_text())["images"][0]["faces"]
    assert face["identity"]["dlib"]["worst"] == pytest.approx(0.0, abs=1e-6)
    assert face["displacement"] == 0.0 and face["changed_in_box"] == 0.0
    assert face["pose_before"] == face["pose_after"]


def test_mismatched_pairs_are_reported_and_exit_4(host, photos: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other"
    (other / "space").mkdir(parents=True)
    shutil.copy(photos / "t1.jpg", other / "space" / "astronaut.png")  # wrong picture, wrong size
    result = _invoke(host, "evaluate", photos, other, "-o", tmp_path / "r", "--max-thumbnails", "0")
    assert result.exit_code == 4, result.output
    assert "no anonymized counterpart at" in result.output and "t1.jpg" in result.output
    assert "is 512x512 but" in result.output and "1280x886" in result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["summary"]["problems"] == 2  # both listed in the report as well


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["{photos}", "-o", "{tmp}/r"], 4, "no run manifest there"),
        (["{photos}/t1.jpg", "{photos}", "-o", "{tmp}/r"], 4, "give two files or two folders"),
        (["--manifest", "{photos}/t1.jpg", "-o", "{tmp}/r"], 4, "not a JSON run manifest"),
        (["{photos}", "{photos}", "-o", "{tmp}/r", "--recognizer", "nobody"], 2, "nobody"),
        (["{photos}", "{tmp}/absent", "-o", "{tmp}/r"], 4, "no such file or folder"),
    ],
)
def test_bad_invocations_say_why(host, photos: Path, tmp_path: Path, args: list[str], code: int, message: str) -> None:  # type: ignore[no-untyped-def]
    filled = [a.format(photos=photos, tmp=tmp_path) for a in args]
    result = _invoke(host, "evaluate", *filled)
    assert result.exit_code == code, result.output
    assert message in result.output


class FivePointDetector(Detector):
    """A second detector of another kind: dlib's faces with only the 5 ArcFace points and a taller box (as CenterFace)."""

    name = "five_point"

    def detect(self, image: np.ndarray) -> list[Face]:
        from rp_plugins.dlib_faces import DlibDetector

        faces = []
        for face in DlibDetector().detect(image):
            x0, y0, x1, y1 = face.box
            box = (x0 - 0.1 * (x1 - x0), y0 - 0.3 * (y1 - y0), x1 + 0.1 * (x1 - x0), y1 + 0.1 * (y1 - y0))
            faces.append(Face(box=box, score=face.score, landmarks=face.five_points, detector=self.name))
        return faces


class _FivePointPlugin:
    @hookimpl
    def rp_register_detectors(self, register):  # type: ignore[no-untyped-def]
        register(FivePointDetector)


def test_a_cosine_recognizer_and_a_five_point_detector(
    photos: Path, offline_run: Path, random_buffalo_dir: Path, tmp_path: Path
) -> None:
    """--recognizer buffalo_l (random ArcFace weights: the code path, not its verdicts) next to the run's dlib check."""
    host = PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS}, extra_plugins=[_FivePointPlugin()])
    args = ["--recognizer", "buffalo_l", "--models", random_buffalo_dir, "--detectors", "five_point"]
    result = _invoke(host, "evaluate", photos, offline_run, "-o", tmp_path / "r", *args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    identity = metrics["summary"]["identity"]
    assert identity["buffalo_l"]["metric"] == "cosine" and identity["buffalo_l"]["roles"] == ["recognizer"]
    assert list(identity["buffalo_l"]["reidentified"]) == ["0.28", "0.35", "0.5"]
    assert identity["dlib"]["roles"] == ["verify"] and identity["dlib"]["faces"] == 7
    faces = [f for image in metrics["images"] for f in image["faces"]]
    for face in faces:
        arc = face["identity"]["buffalo_l"]
        assert arc["worst"] >= arc["at_position"]  # cosine: the worst case is the most similar face found
        assert face["found_before"] == {"dlib": True, "five_point": True}
        assert face["found_after"]["five_point"] is False  # pixelated: neither detector finds it any more
    notes = [n for image in metrics["images"] for n in image["notes"]]
    assert not any("buffalo_l cannot search" in n for n in notes)  # ArcFace takes 5 points
    assert metrics["setup"]["coverage_detectors"] == ["dlib", "five_point"]


class SmallFaceDetector(Detector):
    """dlib upsampled once (finds smaller faces than the offline preset's), reporting 5 points only."""

    name = "small_faces"

    def detect(self, image: np.ndarray) -> list[Face]:
        from rp_plugins.dlib_faces import DlibDetector

        found = DlibDetector(DlibDetector.Options(upsample=1)).detect(image)
        return [Face(box=f.box, score=f.score, landmarks=f.five_points, detector=self.name) for f in found]


class _SmallFacePlugin:
    @hookimpl
    def rp_register_detectors(self, register):  # type: ignore[no-untyped-def]
        register(SmallFaceDetector)


def test_faces_the_run_missed_are_measured_and_flagged(
    host, t1: np.ndarray, random_buffalo_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """At half size dlib's HOG finds 4 of t1's 6 faces; the 2 it leaves untouched must show up as leaks."""
    import cv2

    (tmp_path / "src").mkdir()
    Image.fromarray(cv2.resize(t1, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)).save(
        tmp_path / "src" / "half.png"
    )
    # coverage off: a run that misses faces, as the offline preset did before it searched harder
    run = _invoke(
        host,
        "anonymize",
        tmp_path / "src",
        "-o",
        tmp_path / "out",
        "--preset",
        "offline",
        "--detector",
        "dlib",
        "--set",
        "coverage.detector=null",
    )
    assert run.exit_code == 0 and "(4 faces)" in run.output, run.output
    with_small = PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS}, extra_plugins=[_SmallFacePlugin()])
    args = ["--recognizer", "buffalo_l", "--models", random_buffalo_dir, "--detectors", "small_faces"]
    result = _invoke(with_small, "evaluate", tmp_path / "src", tmp_path / "out", "-o", tmp_path / "r", *args)
    assert result.exit_code == 0, result.output
    assert "2 face(s) were never processed by the run" in result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    summary = metrics["summary"]
    assert summary["faces_found_by"] == {"dlib": 4, "small_faces": 2} and summary["faces_missing_from_run"] == 2
    # the run verified with dlib's landmarks=auto (the offline preset), so the 5-point faces are read too
    assert summary["identity"]["dlib"]["faces"] == 6
    missed = [f for f in metrics["images"][0]["faces"] if f["found_by"] == "small_faces"]
    for face in missed:
        assert face["in_manifest"] is False and face["found_before"] == {"dlib": False, "small_faces": True}
        assert face["changed_in_box"] == 0.0
        arc = face["identity"]["buffalo_l"]
        assert arc["at_position"] == pytest.approx(1.0, abs=1e-3) and all(arc["reidentified"].values())
    assert summary["identity"]["buffalo_l"]["reidentified"]["0.5"] >= 2
    only_main = _invoke(
        with_small, "evaluate", tmp_path / "src", tmp_path / "out", "-o", tmp_path / "r2", *args, "--main-detector-only"
    )
    assert only_main.exit_code == 0, only_main.output
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["summary"]["faces"] == 4


# -- geometry, on real landmarks --------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut_face(host, astronaut: np.ndarray):  # type: ignore[no-untyped-def]
    detector = host.get("detector", "dlib").cls()
    (face,) = detector.detect(astronaut)
    return face


def test_head_pose_mirrors_with_the_image(astronaut_face, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    yaw, pitch, roll = geometry.head_pose(astronaut_face.landmarks, astronaut.shape)
    mirrored = astronaut_face.landmarks.copy()
    mirrored[:, 0] = astronaut.shape[1] - mirrored[:, 0]
    # iBUG order is image-left first: mirroring swaps the point indices as well
    order = list(range(16, -1, -1)) + list(range(26, 16, -1)) + list(range(27, 31)) + list(range(35, 30, -1))
    order += [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    order += [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
    yaw_m, pitch_m, roll_m = geometry.head_pose(mirrored[order], astronaut.shape)
    assert abs(yaw) < 20 and abs(roll) < 10  # a near-frontal portrait
    assert yaw_m == pytest.approx(-yaw, abs=1.0) and roll_m == pytest.approx(-roll, abs=1.0)
    assert pitch_m == pytest.approx(pitch, abs=1.0)


def test_openness_and_displacement_follow_the_landmarks(astronaut_face) -> None:  # type: ignore[no-untyped-def]
    points = astronaut_face.landmarks.copy()
    assert 0.15 < geometry.eye_openness(points) < 0.5
    closed = points.copy()
    for top, bottom in ((37, 41), (38, 40), (43, 47), (44, 46)):
        closed[top] = closed[bottom] = (points[top] + points[bottom]) / 2
    assert geometry.eye_openness(closed) == pytest.approx(0.0, abs=1e-9)
    shifted = points + np.array([geometry.inter_ocular(points), 0.0])
    assert geometry.landmark_displacement(points, shifted) == pytest.approx(1.0)
    assert geometry.landmark_displacement(points, points) == 0.0
    assert geometry.head_pose(astronaut_face.five_points, (512, 512)) is None  # 5 points: no pose, no crash


# -- the report in a real browser ---------------------------------------------------------------

_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
)


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _browse(browser: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [browser, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_report_renders_in_headless_chromium_without_console_errors(offline_report: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); CI installs it")
    page = offline_report / "report.html"
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    assert "alt='histogram of dlib scores' src='data:image/png;base64," in html  # drawn by matplotlib
    dom = _browse(browser, page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert 'data-images="ok"' in dom.stdout  # the page's own check: every embedded image decoded
    assert 'id="summary"' in dom.stdout and "re-identified by dlib" in dom.stdout
    shot = tmp_path / "report.png"
    screenshot = _browse(browser, page, tmp_path / "profile-shot", "--window-size=1280,1600", f"--screenshot={shot}")
    assert screenshot.returncode == 0 and not [line for line in screenshot.stderr.splitlines() if ":CONSOLE" in line]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1280) and pixels.std() > 20  # text, tables and pictures, not a blank page


def test_only_the_most_reidentifiable_faces_are_pictured(host, photos: Path, offline_run: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = _invoke(host, "evaluate", photos, offline_run, "-o", tmp_path / "r", "--max-thumbnails", "1")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "report.html").read_text()
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    closest = min((f for i in metrics["images"] for f in i["faces"]), key=lambda f: f["identity"]["dlib"]["worst"])
    assert page.count("data:image/jpeg;base64,") == 1 and "1 of 7 faces shown" in page
    assert f"alt='face {closest['index']} of {closest['image']}'" in page


def test_a_relative_manifest_alone_asks_for_the_originals(host, offline_run: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Manifests name inputs relative to the input folder (no folder name travels with the outputs)."""
    result = _invoke(host, "evaluate", offline_run, "-o", tmp_path / "r")
    assert result.exit_code == 4 and "rp evaluate ORIGINALS ANONYMIZED" in result.output


def test_the_report_blurs_originals_by_default(offline_report: Path, astronaut: np.ndarray, reidentifier) -> None:  # type: ignore[no-untyped-def]
    """A report is shared as proof: by default no original face in it can be recognised."""
    import io

    from rp_core.evaluate.measure import thumbnail

    page = (offline_report / "report.html").read_text()
    assert "id='privacy' class='muted'" in page and "original, blurred |" in page
    original = reidentifier.descriptors(astronaut)
    assert len(original) == 1
    (x0, y0, x1, y1), side = (170, 40, 290, 180), 160
    for redact, recognised in ((False, True), (True, False)):
        strip = np.asarray(Image.open(io.BytesIO(thumbnail(astronaut, astronaut, (x0, y0, x1, y1), redact))))
        tile = np.ascontiguousarray(strip[:, : strip.shape[1] // 3 - 2])
        assert tile.shape[0] == side
        found = reidentifier.descriptors(tile, upsample=2)
        assert any(np.linalg.norm(d - original[0]) < 0.6 for d in found) is recognised


def test_show_originals_warns_in_the_cli_and_the_page(host, photos: Path, offline_run: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = ["-o", tmp_path / "r", "--max-thumbnails", "1", "--show-originals"]
    result = _invoke(host, "evaluate", photos / "space", offline_run / "space", *args)
    assert result.exit_code == 0, result.output
    assert "warning: --show-originals" in result.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert "id='privacy' class='bad'" in page and "Do not share it" in page


def test_five_point_faces_are_measured_and_summary_matches_the_table(
    host, photos: Path, offline_run: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """CenterFace's 5-point faces: dlib reads them with its 5-point predictor (the default recognizer option)."""
    result = _invoke(host, "evaluate", photos, offline_run, "-o", tmp_path / "r", "--detector", "centerface")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    summary = metrics["summary"]
    assert summary["faces"] >= 7 and summary["identity"]["dlib"]["faces"] == summary["faces"]
    notes = [n for image in metrics["images"] for n in image["notes"]]
    assert not any("cannot use" in n for n in notes), notes
    page = (tmp_path / "r" / "report.html").read_text()
    reidentified = summary["identity"]["dlib"]["reidentified"]["0.6"]
    worst = page.split("id='worst'", 1)[1].split("</table>", 1)[0]
    assert worst.count("class='bad'") == reidentified  # red rows are the summary's re-identified faces
    assert f"of {summary['faces']} faces" in page
