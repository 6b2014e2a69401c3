"""A CPU-only pipeline runs a folder's photos on worker processes (`runtime.cpu_workers`), one per core by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import attacker

from rp_core.api import anonymize_files, build_pipeline
from rp_core.executor import LocalExecutor
from rp_core.io import read_image, write_image
from rp_core.run_options import Event
from rp_core.scale.processes import ProcessExecutor
from rp_core.session import default_executor


def test_the_executor_follows_the_pipeline_and_cpu_workers() -> None:
    """Worker processes for an obfuscating pipeline (every stage on the CPU), this process for one that draws faces
    (the GPU's) or when `runtime.cpu_workers=1`."""
    offline = build_pipeline(preset="offline", overrides=["runtime.cpu_workers=2"])
    assert isinstance(default_executor(offline), ProcessExecutor)
    alone = build_pipeline(preset="offline", overrides=["runtime.cpu_workers=1"])
    assert isinstance(default_executor(alone), LocalExecutor)
    diffusion = build_pipeline(overrides=["runtime.cpu_workers=2"])  # the default: inversion + a new face
    assert isinstance(default_executor(diffusion), LocalExecutor)


def test_worker_processes_share_the_cores_out() -> None:
    """Each of a folder's worker processes gets its share of the cores for a network call (`runtime.cpu_threads`),
    and CenterFace's session runs on that many threads; a value the user set is kept."""
    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool
    from rp_core.scale.processes import cpu_workers, worker_config
    from rp_plugins.centerface import CenterFaceDetector

    offline = build_pipeline(preset="offline").config
    assert offline.runtime.cpu_threads is None
    assert worker_config(offline, 2).runtime.cpu_threads == max(1, cpu_workers(None) // 2)
    assert worker_config(offline, 10_000).runtime.cpu_threads == 1
    chosen = build_pipeline(preset="offline", overrides=["runtime.cpu_threads=3"]).config
    assert worker_config(chosen, 2).runtime.cpu_threads == 3
    detector = CenterFaceDetector(context=RuntimeContext(cpu_threads=1, pool=ModelPool()))
    detector.load()
    assert detector._session.get_session_options().intra_op_num_threads == 1


def test_threads_that_run_at_once_share_the_cores(astronaut: np.ndarray) -> None:
    """A video's look-ahead search and its checks run CenterFace at once: each call then takes its share of the
    cores (`rp_core.cores.sharing_cores`), not every core; alone, onnxruntime's default; a set value always."""
    from rp_core.cores import sharing_cores, usable_cores
    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool
    from rp_plugins.centerface import CenterFaceDetector

    pool = ModelPool()
    detector = CenterFaceDetector(context=RuntimeContext(pool=pool))
    detector.load()
    assert detector._threads() == 0  # alone: every core
    share = max(1, usable_cores() // 2)
    with sharing_cores(2):
        assert detector._threads() == share
        assert detector.detect(astronaut)  # runs on a session of its share
    sessions = [key for key in pool._items if key[0] == "centerface"]
    assert sorted(key[-1] for key in sessions) == sorted({0, share})
    chosen = CenterFaceDetector(context=RuntimeContext(cpu_threads=3, pool=pool))
    with sharing_cores(2):
        assert chosen._threads() == 3


@pytest.mark.e2e  # starts two worker processes, each importing rp and loading the models
def test_a_folder_on_two_worker_processes_matches_one_process(
    tmp_path: Path, t1: np.ndarray, astronaut: np.ndarray, reidentifier
) -> None:  # type: ignore[no-untyped-def]
    """Eight photos of different people (no crop of one person in another photo, so the recent-identity window,
    each process's own, decides nothing): the same bytes, faces and statuses as one process, nobody identifiable."""
    source = tmp_path / "in"
    source.mkdir()
    photos = {
        "left.png": t1[:, :430],
        "middle.png": t1[:, 430:870],
        "right.png": t1[:, 870:],
        "astronaut.png": astronaut,
        **{f"empty{k}.png": np.full((64 + k, 64, 3), 40 * k, np.uint8) for k in range(4)},  # no face: copied
    }
    for name, image in photos.items():
        write_image(source / name, np.ascontiguousarray(image))
    events: list[Event] = []
    pooled = anonymize_files(
        source, tmp_path / "pooled", preset="offline", overrides=["runtime.cpu_workers=2"], on_event=events.append
    )
    alone = anonymize_files(source, tmp_path / "alone", preset="offline", overrides=["runtime.cpu_workers=1"])
    assert any("2 worker processes" in e.message for e in events)  # the files ran on the workers
    summary = "4 anonymized (7 faces), 4 without a face, 0 skipped, 0 failed"
    assert pooled.line().startswith(summary) and alone.line().startswith(summary)
    for name in photos:
        assert (tmp_path / "pooled" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "pooled" / "manifest.json").read_text())
    assert sorted(e["input"] for e in manifest["images"]) == sorted(photos)
    persons = attacker.people(reidentifier, t1, astronaut)
    for name in photos:
        seen = [d for d in attacker.faces_seen(reidentifier, read_image(tmp_path / "pooled" / name))]
        assert all(np.linalg.norm(p - d) >= reidentifier.threshold for p in persons for d in seen), name
