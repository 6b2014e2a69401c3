"""`rp anonymize --ray` (rp_core.scale): the offline preset on a local Ray of two CPU workers.

The Ray run must equal the single-process run byte for byte and record for record, lose no file
and write none twice when a worker is killed mid-run (also mid-video), and finish a killed driver's
run on --resume. A video in the folder is a job like a photo: one worker encodes it, the driver publishes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.stacks import FACE_STACK_PLUGINS
from PIL import Image

ray = pytest.importorskip("ray")

from rp_core.config import resolve_config  # noqa: E402
from rp_core.io import plan_inputs  # noqa: E402
from rp_core.pipeline import Pipeline, assemble  # noqa: E402
from rp_core.scale import RayExecutor, RayOptions  # noqa: E402
from rp_core.scale.cluster import plan_workers  # noqa: E402
from rp_core.session import Event, RunSession, SessionOptions  # noqa: E402

WORKERS = RayOptions(workers=2, gpus_per_worker=0, files_per_task=4, environ={"RP_PLUGINS": FACE_STACK_PLUGINS})


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, t1: np.ndarray, astronaut: np.ndarray) -> Path:
    """40 photos (t1 and astronaut: crops, flips, sizes, JPEG and PNG; dlib misses a few), one without a face, one broken."""
    folder = tmp_path_factory.mktemp("photos")
    bases = [t1[:, :640], t1[:, 640:], t1[100:700, 200:1000], astronaut, astronaut[:320, 60:380]]
    for k in range(40):
        image = bases[k % len(bases)]
        if (k // len(bases)) % 2:
            image = image[:, ::-1]
        scale = (1.0, 0.8, 0.6)[(k // 10) % 3]
        pil = Image.fromarray(np.ascontiguousarray(image))
        pil = pil.resize((int(pil.width * scale), int(pil.height * scale)), Image.Resampling.LANCZOS)
        sub = folder / ("a" if k < 20 else "b")
        sub.mkdir(exist_ok=True)
        pil.save(sub / f"photo{k:02d}.{'jpg' if k % 3 else 'png'}", quality=90)
    ramp = np.linspace(0, 255, 200 * 300, dtype=np.uint8).reshape(200, 300)
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(folder / "no_face.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    return folder


#: The offline preset (CenterFace + pixelation, its coverage search off), its post-hoc identity check off: the check's
#: 128-d descriptors cost ~1 s an image; what is under test is how files are spread, not the check.
CHEAPER = ["verify.enabled=false", "coverage.detector=null"]


@pytest.fixture(scope="module")
def pipeline(host) -> Pipeline:  # type: ignore[no-untyped-def]
    return assemble(resolve_config(host, preset="offline", overrides=CHEAPER, environ={}), host)


@pytest.fixture(scope="module")
def single(photos: Path, pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same files through one process (RunSession)."""
    out = tmp_path_factory.mktemp("single")
    summary = RunSession(pipeline, plan_inputs([photos], out)).run()
    assert summary.anonymized >= 30 and summary.anonymized + summary.no_face == 41 and len(summary.failed) == 1
    return out


def _records(out: Path) -> list[dict[str, Any]]:
    """The manifest's per-file records without timings (which differ between any two runs)."""
    images = json.loads((out / "manifest.json").read_text())["images"]
    for image in images:
        del image["timings"]
        for face in image["faces"]:
            del face["timings"]
        if image.get("video"):
            del image["video"]["timings"]
    return images


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _assert_same_run(ray_out: Path, single_out: Path) -> None:
    ours, theirs = _outputs(ray_out), _outputs(single_out)
    manifests = ours.pop("manifest.json"), theirs.pop("manifest.json")
    assert manifests[0] and manifests[1]
    assert sorted(ours) == sorted(theirs) and len(ours) == 41  # 40 anonymized + 1 without a face; no .part file
    for name in ours:
        assert ours[name] == theirs[name], f"{name} differs from the single-process output"
    records = _records(ray_out)
    assert records == _records(single_out)
    assert len({r["input"] for r in records}) == len(records) == 42  # one record per input, the broken one too
    assert not (ray_out / ".manifest.json.journal").exists()


@pytest.mark.e2e
def test_two_workers_equal_one_process(local_ray: Any, photos: Path, pipeline: Pipeline, single: Path, tmp_path: Path):
    events: list[Event] = []
    executor = RayExecutor(WORKERS)
    summary = RunSession(pipeline, plan_inputs([photos], tmp_path), on_event=events.append, executor=executor).run()
    _assert_same_run(tmp_path, single)
    assert summary.exit_code() == 4 and len(summary.failed) == 1  # the broken file, as in one process
    assert sum(e.kind == "done" for e in events) == 41 and any("broken.jpg" in e.message for e in events)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["packages"] == executor.worker_info[0]["packages"] and "cv2" in manifest["packages"]  # CenterFace
    assert len({info["pid"] for info in executor.worker_info}) == 2


@pytest.mark.e2e
def test_a_worker_killed_mid_run_loses_no_file(
    local_ray: Any, photos: Path, pipeline: Pipeline, single: Path, tmp_path: Path
):
    events: list[Event] = []
    executor = RayExecutor(WORKERS)
    published: dict[Path, int] = {}  # output -> the inode its publishing rename gave it

    def outputs_published_once() -> None:
        for path in tmp_path.rglob("*"):
            if path.is_file() and not path.name.startswith("."):  # not temporary files, not the journal
                inode = path.stat().st_ino
                assert published.setdefault(path, inode) == inode, f"{path} was published twice"

    def kill_one_worker(event: Event) -> None:
        events.append(event)
        outputs_published_once()
        if event.kind == "done" and sum(e.kind == "done" for e in events) == 6:
            ray.kill(executor.workers[0], no_restart=False)  # Ray restarts it; its unfinished files go out again

    RunSession(pipeline, plan_inputs([photos], tmp_path), on_event=kill_one_worker, executor=executor).run()
    outputs_published_once()
    died = [e.message for e in events if "died" in e.message]
    # each task the worker held when killed is reported, if a file of it was unfinished; none is reported empty
    assert died and all("handed out again" in m and not m.startswith("Ray worker 0 died; 0 ") for m in died)
    _assert_same_run(tmp_path, single)
    assert sum(e.kind == "done" for e in events) == 41  # each file counted once, not once per attempt


@pytest.mark.e2e
def test_resume_after_the_driver_is_killed(
    local_ray: Any, photos: Path, pipeline: Pipeline, single: Path, tmp_path: Path
):
    done = 0

    def interrupt(event: Event) -> None:
        nonlocal done
        done += event.kind == "done"
        if done == 10:
            raise KeyboardInterrupt  # what Ctrl-C does to the driver between two records

    with pytest.raises(KeyboardInterrupt):
        RunSession(pipeline, plan_inputs([photos], tmp_path), on_event=interrupt, executor=RayExecutor(WORKERS)).run()
    journal = [json.loads(line) for line in (tmp_path / ".manifest.json.journal").read_text().splitlines()]
    finished = {r["input"] for r in journal if r["status"] != "writing"}
    assert 10 <= len(finished) < 42
    events: list[Event] = []
    resumed = SessionOptions(resume=True)
    on_a_cluster = replace(WORKERS, address="auto")  # joins the Ray already running; workers get absolute paths
    RunSession(pipeline, plan_inputs([photos], tmp_path), resumed, events.append, RayExecutor(on_a_cluster)).run()
    _assert_same_run(tmp_path, single)
    assert any(e.kind == "info" and "files already done" in e.message for e in events)
    assert sum(e.kind == "done" for e in events) < 41  # the finished files were not redone


@pytest.mark.e2e
def test_rp_anonymize_ray(local_ray: Any, photos: Path, single: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The command line: `rp anonymize DIR -o OUT --ray --workers 2` (skipped until cli.py is wired)."""
    from click.testing import CliRunner

    from rp_core.cli import anonymize, create_cli

    if "use_ray" not in {p.name for p in anonymize.params}:
        pytest.skip("rp anonymize has no --ray yet")
    monkeypatch.setenv("RP_PLUGINS", FACE_STACK_PLUGINS)  # the driver's and the workers' plugin hosts
    args = ["anonymize", str(photos / "a"), "-o", str(tmp_path), "--preset", "offline", "--ray", "--workers", "2"]
    args += [arg for override in CHEAPER for arg in ("--set", override)]
    result = CliRunner().invoke(create_cli(), args)
    assert result.exit_code == 0, result.output
    assert "Ray: 2 worker(s)" in result.output and "0 failed" in result.output
    for path in sorted((photos / "a").iterdir()):
        assert (tmp_path / path.name).read_bytes() == (single / "a" / path.name).read_bytes()
    refused = CliRunner().invoke(create_cli(), ["anonymize", str(photos / "a"), "-o", str(tmp_path), "--workers", "2"])
    assert refused.exit_code == 2 and "--workers apply only with --ray" in refused.output


def test_workers_follow_the_cluster():
    gpus = {"CPU": 32.0, "GPU": 4.0}
    assert plan_workers(RayOptions(), gpus) == (4, 1.0, 1.0)
    assert plan_workers(RayOptions(gpus_per_worker=2), gpus) == (2, 2.0, 1.0)
    assert plan_workers(RayOptions(), {"CPU": 2.0}) == (2, 0.0, 1.0)  # CPU workers without GPUs
    with pytest.raises(Exception, match="needs 8 GPUs"):
        plan_workers(RayOptions(workers=8), gpus)
    assert plan_workers(RayOptions(workers=8, address="auto"), gpus)[0] == 8  # a remote cluster may autoscale


def test_a_worker_error_keeps_its_exit_code():
    from rp_core.errors import InputError, MissingModelsError
    from rp_core.scale.executor import remote_error
    from rp_core.scale.worker import error_payload

    missing = remote_error(error_payload(MissingModelsError([])))
    assert missing.exit_code == 3 and "Missing model files" in str(missing)
    assert isinstance(remote_error(error_payload(InputError("x.jpg: broken"))), InputError)


def test_importing_the_package_does_not_import_ray():
    code = "import sys, rp_core.cli, rp_core.scale; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- a video among the photos --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, t1: np.ndarray, astronaut: np.ndarray) -> Path:
    """Three photos and a 10-frame clip (with a tone) of t1 panned and zoomed."""
    pytest.importorskip("av")
    pytest.importorskip("trackers")
    from rp_core.video.samples import pan_zoom_clip

    folder = tmp_path_factory.mktemp("mixed")
    for name, image in (("left.jpg", t1[:, :640]), ("right.png", t1[:, 640:]), ("astronaut.jpg", astronaut)):
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name, quality=90)
    pan_zoom_clip(t1, folder / "clip.mp4", frames=10, size=(320, 192), span=0.2)
    return folder


@pytest.fixture(scope="module")
def checked(host) -> Pipeline:  # type: ignore[no-untyped-def]
    """The offline preset with its identity check on: each frame costs a few tenths of a second, so a kill lands mid-video."""
    return assemble(resolve_config(host, preset="offline", overrides=["coverage.detector=null"], environ={}), host)


@pytest.fixture(scope="module")
def mixed_single(mixed: Path, checked: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed_single")
    summary = RunSession(checked, plan_inputs([mixed], out)).run()
    assert summary.anonymized == 4 and not summary.failed, summary.line()
    assert json.loads((out / "manifest.json").read_text())["images"][1]["video"]["frames"] == 10
    return out


def _assert_same_mixed_run(ray_out: Path, single_out: Path) -> None:
    ours, theirs = _outputs(ray_out), _outputs(single_out)
    ours.pop("manifest.json"), theirs.pop("manifest.json")
    assert sorted(ours) == sorted(theirs) == ["astronaut.jpg", "clip.mp4", "left.jpg", "right.png"]  # no .part file
    for name in ours:
        assert ours[name] == theirs[name], f"{name} differs from the single-process output"
    assert _records(ray_out) == _records(single_out)
    assert not (ray_out / ".manifest.json.journal").exists()


@pytest.mark.e2e
def test_a_video_in_a_folder_runs_on_a_worker_as_in_one_process(
    local_ray: Any, mixed: Path, mixed_single: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`rp anonymize DIR -o OUT --ray --workers 2` on photos and a clip: the same bytes as one process."""
    from click.testing import CliRunner

    from rp_core.cli import create_cli

    monkeypatch.setenv("RP_PLUGINS", FACE_STACK_PLUGINS)
    args = ["anonymize", str(mixed), "-o", str(tmp_path), "--preset", "offline", "--ray", "--workers", "2"]
    args += ["--set", "coverage.detector=null"]
    result = CliRunner().invoke(create_cli(), args)
    assert result.exit_code == 0, result.output
    assert "4 anonymized" in result.output and "0 failed" in result.output
    _assert_same_mixed_run(tmp_path, mixed_single)


@pytest.mark.e2e
def test_a_worker_killed_mid_video_loses_nothing_and_publishes_once(
    local_ray: Any, mixed: Path, checked: Pipeline, mixed_single: Path, tmp_path: Path
):
    import threading
    import time

    executor = RayExecutor(WORKERS)
    events: list[Event] = []
    published: dict[Path, int] = {}
    seen: dict[str, Any] = {}

    def outputs_published_once() -> None:
        for path in tmp_path.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                inode = path.stat().st_ino
                assert published.setdefault(path, inode) == inode, f"{path} was published twice"

    def on_event(event: Event) -> None:
        events.append(event)
        outputs_published_once()

    def kill_while_the_clip_is_encoded() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not seen:
            if list(tmp_path.glob(".clip.mp4.*.part")):  # a worker is writing the clip's frames
                seen["clip published"] = (tmp_path / "clip.mp4").exists()
                for worker in list(executor.workers):  # whichever holds the clip dies mid-video
                    ray.kill(worker, no_restart=False)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_while_the_clip_is_encoded, daemon=True)
    killer.start()
    summary = RunSession(checked, plan_inputs([mixed], tmp_path), on_event=on_event, executor=executor).run()
    killer.join(timeout=5)
    outputs_published_once()
    assert seen == {"clip published": False}, "the workers were not killed while the clip was being encoded"
    died = [e.message for e in events if "died" in e.message]
    assert died and any(
        "handed out again" in m and not m.endswith("; 0 unfinished file(s) handed out again") for m in died
    )
    _assert_same_mixed_run(tmp_path, mixed_single)
    assert summary.anonymized == 4 and sum(e.kind == "done" for e in events) == 4  # each file counted once


def test_ray_in_place_is_refused_with_one_line(tmp_path: Path, astronaut: np.ndarray) -> None:
    from click.testing import CliRunner

    from rp_core.api import anonymize_files
    from rp_core.cli import create_cli
    from rp_core.errors import ConfigError

    photo = tmp_path / "a.jpg"
    Image.fromarray(astronaut).save(photo)
    before = photo.read_bytes()
    result = CliRunner().invoke(create_cli(), ["anonymize", str(photo), "--in-place", "--preset", "offline", "--ray"])
    message = "--ray writes to an output folder (-o); it does not support --in-place"
    assert result.exit_code == 2 and result.output.splitlines() == [f"Error: {message}"]
    with pytest.raises(ConfigError, match="does not support --in-place") as refused:
        anonymize_files(photo, in_place=True, preset="offline", executor=RayExecutor(WORKERS))
    assert str(refused.value) == message and photo.read_bytes() == before
