"""Video: a real photo panned and zoomed into a clip with a tone; every face of every frame hidden, timing and audio kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from helpers.stacks import FACE_STACK_PLUGINS  # noqa: E402

from rp_core import hookimpl  # noqa: E402
from rp_core.config import resolve_config  # noqa: E402
from rp_core.pipeline import Pipeline, assemble  # noqa: E402
from rp_core.plugins import PluginHost  # noqa: E402
from rp_core.types import Face, GenerationRequest  # noqa: E402
from rp_core.video import VideoOptions, anonymize_video, is_video, probe  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402
from rp_core.video.tracks import PREDICTED, SEED_STRIDE, FaceTracker, OneEuroFilter  # noqa: E402
from rp_plugins.dlib_faces import DlibDetector  # noqa: E402
from rp_plugins.obfuscate import Pixelate  # noqa: E402

#: Videos are end-to-end work (a 60-frame clip encoded and decoded): outside the fast loop.
pytestmark = pytest.mark.e2e

#: Fail-closed verification (dlib descriptors and the output search) on every 20th frame keeps these tests
#: near a minute on 2 shared cores; the independent dlib attacker still checks every frame, and
#: test_default_verification_searches_every_frame runs the default (every frame verified and searched).
FAST = VideoOptions(verify_every=20)


def offline(host: PluginHost, *overrides: str) -> Pipeline:
    config = resolve_config(host, preset="offline", overrides=list(overrides), environ={})
    pipeline = assemble(config, host)
    pipeline.load()
    return pipeline


def frames_of(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def audio_of(path: Path) -> tuple[np.ndarray, list[bytes]]:
    """Decoded samples and the raw packets of the first audio stream."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return samples, packets


def matches(reidentifier: Any, original: np.ndarray, output: np.ndarray) -> list[float]:
    """Distances below 0.6 between any face of `original` and any face dlib finds in `output` (upsampled)."""
    before = reidentifier.descriptors(original, upsample=1)
    after = reidentifier.descriptors(output, upsample=1)
    return [float(d) for a in before for b in after if (d := np.linalg.norm(a - b)) < reidentifier.threshold]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, t1: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return pan_zoom_clip(t1, path, frames=60, metadata={"title": "Alice at the beach", "comment": "secret"})


@pytest.fixture(scope="module")
def offline_pipeline(host: PluginHost) -> Pipeline:
    return offline(host)


@pytest.fixture(scope="module")
def anonymized(clip: Path, offline_pipeline: Pipeline) -> tuple[Path, Any, list[Any]]:
    target = clip.with_name("out.mp4")
    events: list[Any] = []
    result = anonymize_video(offline_pipeline, clip, target, FAST, on_event=events.append)
    return target, result, events


def test_timing_size_audio_kept_and_metadata_stripped(clip: Path, anonymized: tuple[Path, Any, list[Any]]) -> None:
    target, result, events = anonymized
    before, after = probe(clip), probe(target)
    assert (after.frames, after.fps, after.width, after.height) == (before.frames, before.fps, 640, 360)
    assert len(frames_of(target)) == len(frames_of(clip)) == 60 == result.frames
    samples_in, packets_in = audio_of(clip)
    samples_out, packets_out = audio_of(target)
    assert packets_out == packets_in  # remuxed, not re-encoded
    np.testing.assert_array_equal(samples_out, samples_in)
    import av

    with av.open(str(clip)) as source, av.open(str(target)) as output:
        assert source.metadata.get("title") == "Alice at the beach"
        assert not {"title", "comment"} & set(output.metadata)
    assert events and events[-1].frame == events[-1].frames == 60  # progress in frames, with an ETA on the way
    assert any(e.eta_s is not None and e.eta_s > 0 for e in events[:-1])
    assert not list(target.parent.glob(".*.part"))


def test_no_face_of_any_frame_is_reidentified(
    clip: Path, anonymized: tuple[Path, Any, list[Any]], reidentifier: Any
) -> None:
    target, result, _ = anonymized
    originals, outputs = frames_of(clip), frames_of(target)
    assert result.faces >= 2 * 60  # several people in every frame, all handled
    assert result.verified_frames == 3
    found = 0
    for i, (original, output) in enumerate(zip(originals, outputs, strict=True)):
        found += len(reidentifier.descriptors(original, upsample=1))
        assert not matches(reidentifier, original, output), f"frame {i}: a face still matches its original"
    assert found >= 90  # the attacker does see the people in the originals (112 on this clip)


class DroppingDetector(DlibDetector):
    """dlib, except that on frames 20-22 (full frames only) the face nearest the centre is not reported."""

    name: ClassVar[str] = "dlib-dropping"
    frames_seen: ClassVar[int] = 0
    dropped: ClassVar[list[tuple[int, Face]]] = []
    frame_shape: ClassVar[tuple[int, ...]] = (360, 640, 3)

    def detect(self, image: np.ndarray) -> list[Face]:
        faces = super().detect(image)
        if image.shape != self.frame_shape:  # a region searched by verification, not a frame
            return faces
        frame = type(self).frames_seen
        type(self).frames_seen += 1
        if 20 <= frame <= 22 and faces:
            centre = np.array([image.shape[1] / 2, image.shape[0] / 2])
            nearest = min(faces, key=lambda f: np.linalg.norm(np.array(f.box).reshape(2, 2).mean(0) - centre))
            type(self).dropped.append((frame, nearest))
            faces = [f for f in faces if f is not nearest]
        return faces


class SeedRecorder(Pixelate):
    """Pixelation that records each request's seed and face centre (the seed is what drives a diffusion identity)."""

    name: ClassVar[str] = "pixelate-seeds"
    seen: ClassVar[list[tuple[int, np.ndarray]]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        for request in requests:
            type(self).seen.append((request.seed, np.asarray(request.face.face.box)))
        return super().generate(requests)


class Failing(Pixelate):
    """Pixelation that breaks on its 2nd call (a batch of faces from several frames): nothing may be published."""

    name: ClassVar[str] = "pixelate-failing"
    calls: ClassVar[int] = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        type(self).calls += 1
        if type(self).calls == 2:
            raise RuntimeError("generator failed mid-video")
        return super().generate(requests)


class VideoTestPlugin:
    @hookimpl
    def rp_register_detectors(self, register: Callable[[type], None]) -> None:
        register(DroppingDetector)

    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(SeedRecorder)
        register(Failing)


@pytest.fixture(scope="module")
def test_host() -> PluginHost:
    return PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS}, extra_plugins=[VideoTestPlugin()])


def test_face_missed_for_three_frames_stays_obfuscated(
    tmp_path: Path, t1: np.ndarray, test_host: PluginHost, reidentifier: Any
) -> None:
    # no coverage detector: only the track's prediction can hide the dropped face
    pipeline = offline(test_host, "detector.name=dlib-dropping", "coverage.detector=null")
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=30, tone_hz=None)
    DroppingDetector.frames_seen, DroppingDetector.dropped = 0, []
    result = anonymize_video(pipeline, clip, tmp_path / "out.mp4", FAST)
    assert [frame for frame, _ in DroppingDetector.dropped] == [20, 21, 22]
    assert result.routes["predicted"] >= 3
    originals, outputs = frames_of(clip), frames_of(tmp_path / "out.mp4")
    for frame, face in DroppingDetector.dropped:
        x0, y0, x1, y1 = (int(v) for v in face.box)
        region_before = originals[frame][y0:y1, x0:x1].astype(int)
        region_after = outputs[frame][y0:y1, x0:x1].astype(int)
        assert np.abs(region_before - region_after).mean() > 8  # the dropped face's region was replaced
        assert not matches(reidentifier, originals[frame], outputs[frame]), f"frame {frame} leaks"


def test_each_track_keeps_one_seed(tmp_path: Path, t1: np.ndarray, test_host: PluginHost) -> None:
    pipeline = offline(test_host, "generator.name=pixelate-seeds")
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=24, tone_hz=None)
    SeedRecorder.seen = []
    result = anonymize_video(pipeline, clip, tmp_path / "out.mp4", VideoOptions(verify_every=100))
    assert len(result.tracks) >= 3
    seeds = [t["seed"] for t in result.tracks]
    assert len(set(seeds)) == len(seeds)  # a different seed for each person
    recorded = [seed for seed, _ in SeedRecorder.seen]
    assert set(recorded) <= set(seeds)
    # every frame where a person's face was detected was generated with that person's one seed
    for track in result.tracks:
        assert recorded.count(track["seed"]) == track["frames"] - track["predicted_frames"]
    assert max(t["frames"] for t in result.tracks) >= 20


def test_failure_mid_video_publishes_nothing(tmp_path: Path, t1: np.ndarray, test_host: PluginHost) -> None:
    pipeline = offline(test_host, "generator.name=pixelate-failing")
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=10, tone_hz=None)
    target = tmp_path / "out.mp4"
    Failing.calls = 0
    with pytest.raises(RuntimeError, match="mid-video"):
        anonymize_video(pipeline, clip, target, VideoOptions(verify_every=100))
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no partial file left


def test_display_rotation_and_stored_size_kept(tmp_path: Path, t1: np.ndarray, offline_pipeline: Pipeline) -> None:
    clip = pan_zoom_clip(t1, tmp_path / "clip.mov", frames=4, size=(320, 192), tone_hz=None, rotation=90)
    result = anonymize_video(offline_pipeline, clip, tmp_path / "out.mov", VideoOptions(verify_every=100))
    info = probe(tmp_path / "out.mov")
    assert (info.rotation, info.width, info.height, info.frames) == (90, 320, 192, 4)
    assert result.codec == "libx264" and result.pix_fmt == "yuv420p"
    assert is_video(tmp_path / "OUT.MOV") and not is_video(tmp_path / "a.jpg")


def test_default_verification_searches_every_frame(tmp_path: Path, t1: np.ndarray, offline_pipeline: Pipeline) -> None:
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=3, tone_hz=None, span=0.05)
    calls: list[int] = []
    frames = None

    from rp_core.video.frames import FrameAnonymizer

    tracker = FaceTracker(fps=30.0)
    frames = FrameAnonymizer(offline_pipeline, tracker)
    policy = frames.fail_closed()
    assert policy.finder is not None
    original = frames.stream.find_on_output  # the face stream's search, the same for photos and frames

    def counting(image: np.ndarray, region: Any) -> list[Face]:
        calls.append(1)
        return original(image, region)

    frames.stream.set_fail_closed(
        type(policy)(policy.config, policy.verifier, policy.fallback, policy.last_resort, counting)
    )
    outcomes = []
    for i, image in enumerate(frames_of(clip)):
        outcomes.extend(frames.push(i, image, i / 30))
    outcomes.extend(frames.flush())
    assert [o.index for o in outcomes] == [0, 1, 2]
    faces = sum(len(o.routes) for o in outcomes)
    assert faces >= 9 and len(calls) >= len(outcomes[0].routes)  # the first frame's faces searched for on the output
    # every face of every frame checked: in full (searched), or cheaply against its track's verified output
    assert all(kind in ("full", "cheap") for o in outcomes for kind in o.checks)
    assert all(v is not None for v in outcomes[0].verdicts)


def test_tracker_follows_faces_and_predicts_a_missed_one() -> None:
    def face(x: float, y: float, jitter: np.ndarray) -> Face:
        points = np.array([[x + 10, y + 15], [x + 30, y + 15], [x + 20, y + 25], [x + 12, y + 32], [x + 28, y + 32]])
        return Face(box=(x, y, x + 40, y + 40), score=1.0, landmarks=points + jitter)

    rng = np.random.default_rng(0)
    tracker = FaceTracker(fps=30.0, seed=100)
    raw, smoothed = [], []
    for frame in range(30):
        jitter = rng.normal(0, 1.5, (5, 2))
        faces = [face(10 + 2 * frame, 50, jitter), face(200, 60 - frame, np.zeros((5, 2)))]
        if frame == 20:
            faces = faces[1:]  # the moving face is missed for one frame
        out = tracker.update(faces, frame, frame / 30)
        if frame == 20:
            predicted = [t for t in out if t.predicted]
            assert len(predicted) == 1 and predicted[0].face.detector == PREDICTED
            assert predicted[0].track is not None and predicted[0].track.number == 0
            assert abs(predicted[0].face.box[0] - (10 + 2 * frame)) < 4  # where the motion model expects it
            continue
        assert [t.track.number for t in out if t.track] == [0, 1]
        assert [t.seed for t in out] == [100, 100 + SEED_STRIDE]
        raw.append(faces[0].landmarks - (2 * frame, 0))
        smoothed.append(np.asarray(out[0].face.landmarks) - (2 * frame, 0))
    # the one-euro filter steadies the jitter of a face moving at constant speed
    assert np.std(np.array(smoothed[5:]), axis=0).mean() < 0.7 * np.std(np.array(raw[5:]), axis=0).mean()


def test_one_euro_follows_a_fast_move() -> None:
    smoother = OneEuroFilter()
    points = np.zeros((5, 2))
    smoother(points, 1 / 30, 40.0)
    for step in range(1, 11):
        out = smoother(points + 8.0 * step, 1 / 30, 40.0)  # a fifth of a face size per frame
    assert np.allclose(out, 80.0, atol=8.0)  # lags by at most a frame's move
    jumped = smoother(points + 500.0, 1 / 30, 40.0)  # a cut: no pasting halfway between two faces
    assert np.allclose(jumped, 500.0)


def test_new_faces_of_one_track_are_closer_than_other_tracks(tmp_path: Path, t1: np.ndarray, host: PluginHost) -> None:
    """Measured with dlib's descriptor at the placed landmarks on the output frames (dlib's 68, which stay put on a
    pixelated face; 5 points fitted anew on each pixelated frame would measure the fit's jitter). With the offline
    pixelate generator this is nearly trivial (a pixelated face still carries its own colours and layout); it is
    the check a diffusion generator's per-track seed must pass too."""
    from rp_core.video.frames import FrameAnonymizer

    offline_pipeline = offline(host, "detector.name=dlib", "identity_encoder.options.landmarks=face")

    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=12, tone_hz=None, span=0.3)
    frames = FrameAnonymizer(offline_pipeline, FaceTracker(fps=30.0), verify_every=100)
    outcomes = []
    for i, image in enumerate(frames_of(clip)):
        outcomes.extend(frames.push(i, image, i / 30))
    outcomes.extend(frames.flush())
    encoder = offline_pipeline.verify_encoder.component  # type: ignore[union-attr]
    by_track: dict[int, list[np.ndarray]] = {}
    for outcome in outcomes:
        detected = [
            (f, t) for f, t, r in zip(outcome.faces, outcome.tracks, outcome.routes, strict=True) if r == "generate"
        ]
        vectors = encoder.encode(outcome.image, [f for f, _ in detected])
        for (_, track), vector in zip(detected, vectors, strict=True):
            if track is not None:
                by_track.setdefault(track, []).append(vector.vector)
    tracks = [t for t, v in by_track.items() if len(v) >= 5]
    assert len(tracks) >= 2
    within = [np.linalg.norm(a - b) for t in tracks for i, a in enumerate(by_track[t]) for b in by_track[t][i + 1 :]]
    between = [np.linalg.norm(a - b) for s in tracks for t in tracks if s < t for a in by_track[s] for b in by_track[t]]
    assert max(within) < min(between), (max(within), min(between))


def test_before_publish_sees_the_result_and_can_refuse(
    tmp_path: Path, t1: np.ndarray, offline_pipeline: Pipeline
) -> None:
    """The session journals its intent (or refuses, e.g. a video without a face) in `before_publish`."""
    clip = pan_zoom_clip(t1, tmp_path / "clip.mkv", frames=4, size=(320, 192), tone_hz=None, span=0.1)
    seen: list[Any] = []

    def refuse(result: Any) -> None:
        seen.append(result)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        anonymize_video(
            offline_pipeline, clip, tmp_path / "out.mkv", VideoOptions(verify_every=100), before_publish=refuse
        )
    assert seen and seen[0].frames == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]


def test_rp_anonymize_takes_videos_inside_a_folder(tmp_path: Path, t1: np.ndarray, astronaut: np.ndarray) -> None:
    """The run session plans videos beside images: one manifest, the video's record says what it did."""
    import json

    from click.testing import CliRunner

    from rp_core.cli import create_cli
    from rp_core.io import write_image
    from rp_core.video.probe import probe

    folder = tmp_path / "in"
    folder.mkdir()
    pan_zoom_clip(t1, folder / "clip.mp4", frames=4, tone_hz=None, span=0.05)
    write_image(folder / "astronaut.png", astronaut)
    result = CliRunner().invoke(
        create_cli(), ["anonymize", str(folder), "-o", str(tmp_path / "out"), "--preset", "offline"]
    )
    assert result.exit_code == 0, result.output
    entries = {e["input"]: e for e in json.loads((tmp_path / "out" / "manifest.json").read_text())["images"]}
    assert entries["clip.mp4"]["status"] == "anonymized" and entries["clip.mp4"]["video"]["frames"] == 4
    assert entries["astronaut.png"]["status"] == "anonymized"
    assert probe(tmp_path / "out" / "clip.mp4").frames == 4


class _Stop(Exception):
    pass


def test_videos_in_a_folder_are_announced_before_any_work(tmp_path: Path, clip: Path, astronaut: np.ndarray) -> None:
    """A clip among photos turns seconds into minutes: the run says so, with its length, before it starts."""
    from PIL import Image

    from rp_core.api import anonymize_files

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "photo.png")
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if event.kind == "start":
            raise _Stop

    with pytest.raises(_Stop):
        anonymize_files(folder, tmp_path / "out", preset="offline", on_event=on_event)
    announced = [e.message for e in events if e.kind == "info" and "video(s) among the inputs" in e.message]
    frames = probe(clip).frames
    assert announced and f"1 video(s) among the inputs: {frames} frames" in announced[0]
    assert "1 photo(s) besides" in announced[0]


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from rp_core.cli import main
main(sys.argv[2:])
"""


def test_a_full_disk_mid_video_publishes_nothing_and_says_so(tmp_path: Path, t1: np.ndarray) -> None:
    """The encoder writes on its own thread (rp_core.video.background): a write that fails there (the disk fills
    after a few frames, for real: a file-size limit) stops the run with one line and exit 4, nothing published."""
    import os
    import subprocess
    import sys

    # x264 holds ~40 frames before its first packet: the limit is reached while later frames are still queued
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=64, size=(320, 192), tone_hz=None)
    target = tmp_path / "out.mp4"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "6000", "anonymize", str(clip), "-o", str(target), "--preset", "offline"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and "File too large" in done.stderr
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")) == ["clip.mp4"]


def test_a_video_without_the_trackers_package_says_what_to_install(
    tmp_path: Path, t1: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ByteTrack is made on the first frame, not at the start: a missing `trackers` is still told in one line, with
    what to install, and nothing is published."""
    import sys

    from click.testing import CliRunner

    from rp_core.cli import create_cli

    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=4, tone_hz=None, span=0.05, size=(320, 192))
    monkeypatch.setitem(sys.modules, "trackers", None)  # not importable, as where it is not installed
    target = tmp_path / "out.mp4"
    result = CliRunner().invoke(create_cli(), ["anonymize", str(clip), "-o", str(target), "--preset", "offline"])
    assert result.exit_code != 0
    assert "videos need trackers: pip install 'rp-anonymize[video]'" in result.output
    assert "Traceback" not in result.output
    assert not target.exists()
