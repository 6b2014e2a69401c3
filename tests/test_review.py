"""`rp review`'s server in this process: the token, the files it will serve, decisions, uploads, a render.

A real uvicorn server on 127.0.0.1 answers real HTTP requests (http.client sends paths as written,
`../` included); faces come from `rp detect` on the real photos, and renders are `anonymize_files`.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rp_core.api import anonymize_files, build_pipeline  # noqa: E402
from rp_core.cli import create_cli  # noqa: E402
from rp_core.io import read_image, write_image  # noqa: E402
from rp_core.review.app import ReviewSettings, create_app  # noqa: E402
from rp_core.review.identity import IdentityIndex  # noqa: E402
from rp_core.review.render import RenderJob  # noqa: E402
from rp_core.review.security import SECURITY_HEADERS  # noqa: E402
from rp_core.review.server import bind  # noqa: E402
from rp_core.review.state import ReviewState  # noqa: E402
from rp_core.selection import face_choices_from_json, read_faces_json  # noqa: E402
from rp_core.session import SessionOptions  # noqa: E402

TOKEN = "test-token-0123456789"


@dataclass
class Served:
    port: int
    state: ReviewState
    render: RenderJob
    photos: Path
    out: Path

    def request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        if token is not None:
            headers.setdefault("X-RP-Token", token)
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data

    def json(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        status, _, data = self.request(method, path, body, **headers)
        return status, json.loads(data)


def _detect(photos: Path, faces: Path) -> None:
    result = CliRunner().invoke(create_cli(), ["detect", str(photos), "-o", str(faces), "--preset", "offline"])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, t1: np.ndarray, astronaut: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_image(folder / "t1.png", t1)
    write_image(folder / "astronaut.png", astronaut)
    write_image(folder / "t1-mirrored.png", np.ascontiguousarray(t1[:, ::-1]))
    (folder / "broken.jpg").write_bytes(b"not a photo at all")
    return folder


def _serve(photos: Path, out: Path, *, allow_upload: bool = False, max_upload: int = 10_000_000) -> Iterator[Served]:
    import uvicorn

    from rp_core.io import plan_inputs

    faces = out / "faces.json"
    _detect(photos, faces)
    plan = plan_inputs([photos], out)
    state = ReviewState.load([j.source for j in plan.jobs], [j.target for j in plan.jobs], faces)
    pipeline = build_pipeline(preset="offline")
    encoder = pipeline.verify_encoder.component if pipeline.verify_encoder else None
    identities = IdentityIndex(state, encoder, pipeline.detect)

    def runner(options: SessionOptions, on_event: Any) -> Any:
        return anonymize_files([photos], out, preset="offline", options=options, on_event=on_event)

    render = RenderJob(runner, SessionOptions(faces_json=faces))
    sock = bind(0)
    port = sock.getsockname()[1]
    app = create_app(state, render, identities, ReviewSettings(TOKEN, port, allow_upload, max_upload))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield Served(port, state, render, photos, out)
    finally:
        render.wait(300)
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def served(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(photos, tmp_path_factory.mktemp("out"))


@pytest.fixture
def uploads(photos: Path, tmp_path: Path) -> Iterator[Served]:
    yield from _serve(photos, tmp_path / "out", allow_upload=True, max_upload=200_000)


def _index(served: Served, name: str) -> int:
    return next(i.index for i in served.state.images if i.name == name)


# -- the guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/state", "/pictures/0/original", "/static/review.js"])
def test_requests_without_the_token_or_with_a_wrong_one_are_refused(served: Served, path: str) -> None:
    for token in (None, "", "test-token-0123456788", TOKEN + "x"):
        status, _, data = served.request("GET", path, token=token)
        assert status == 403, (path, token)
        assert b"Forbidden" in data and b"<" not in data
    assert served.request("GET", f"{path}{'&' if '?' in path else '?'}token={TOKEN}", token=None)[0] == 200


def test_posts_without_the_token_change_nothing(served: Served) -> None:
    before = served.state.faces_path.read_bytes()
    status, _, _ = served.request(
        "POST", "/api/images/0/faces/0", b'{"keep": true}', token=None, **{"Content-Type": "application/json"}
    )
    assert status == 403 and served.request("POST", "/api/render", token=None)[0] == 403
    assert served.state.faces_path.read_bytes() == before and served.render.snapshot()["state"] == "idle"


def test_a_foreign_host_name_is_refused_and_every_answer_carries_the_security_headers(served: Served) -> None:
    status, _, _ = served.request("GET", "/api/state", Host="attacker.example")  # DNS rebinding
    assert status == 400
    assert served.request("GET", "/api/state", Host=f"localhost:{served.port}")[0] == 200
    assert served.request("GET", "/api/state", Host=f"127.0.0.1:{served.port + 1}")[0] == 400
    for token in (TOKEN, None):
        _, headers, _ = served.request("GET", "/", token=token)
        for name, value in SECURITY_HEADERS:
            assert headers[name.decode()] == value.decode()
        assert "set-cookie" not in headers


@pytest.mark.parametrize(
    "path",
    [
        "/pictures/../../../../etc/passwd",
        "/pictures/0/../../../etc/passwd",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fstate.py",
        "/static/review.html",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/pictures/99/original",
        "/pictures/-1/original",
        "/pictures/0/source",
        "/pictures/0/original/../../t1.png",
        "/etc/passwd",
        "/t1.png",
    ],
)
def test_nothing_outside_the_inputs_and_outputs_is_served(served: Served, path: str) -> None:
    status, _, data = served.request("GET", path)
    assert status == 404, (path, status)
    assert b"root:" not in data and b"import" not in data


def test_a_photo_is_served_as_the_run_reads_it_without_its_metadata(served: Served, t1: np.ndarray) -> None:
    status, headers, data = served.request("GET", f"/pictures/{_index(served, 't1.png')}/original")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as picture:
        assert picture.size == (t1.shape[1], t1.shape[0]) and not picture.getexif()
        assert np.abs(np.asarray(picture, np.float32) - t1).mean() < 3  # the same picture, as JPEG


def test_an_unreadable_file_gets_a_clear_page_and_is_marked_on_the_review(served: Served) -> None:
    broken = _index(served, "broken.jpg")
    status, headers, data = served.request("GET", f"/pictures/{broken}/original")
    assert status == 422 and headers["content-type"].startswith("text/html")
    page = data.decode()
    assert "Cannot read broken.jpg" in page and "not an image Pillow can read" in page
    _, state = served.json("GET", "/api/state")
    shown = state["images"][broken]
    assert shown["faces"] == [] and "not an image Pillow can read" in shown["error"]


# -- decisions ----------------------------------------------------------------------------------


def test_decisions_are_saved_at_once_in_the_faces_json_the_cli_reads(served: Served) -> None:
    t1 = _index(served, "t1.png")
    assert served.json("POST", f"/api/images/{t1}/faces/1", {"keep": True}) == (200, {"keep": True, "prompt": None})
    status, face = served.json("POST", f"/api/images/{t1}/faces/2", {"prompt": "  an old man "})
    assert status == 200 and face == {"keep": False, "prompt": "an old man"}
    entry = read_faces_json(served.state.faces_path)["t1.png"]
    choices = face_choices_from_json(entry, (886, 1280, 3), "t1.png")
    assert [c.keep for c in choices].count(True) == 1 and choices[1].keep
    assert choices[2].prompt == "an old man" and choices[0].prompt is None
    assert served.json("POST", f"/api/images/{t1}/faces/2", {"prompt": ""})[1]["prompt"] is None
    assert served.json("POST", f"/api/images/{t1}/faces/1", {"keep": False})[1]["keep"] is False
    assert not any(
        c.keep for c in face_choices_from_json(read_faces_json(served.state.faces_path)["t1.png"], (886, 1280, 3), "x")
    )


def test_bad_decisions_are_refused_with_a_reason(served: Served) -> None:
    t1 = _index(served, "t1.png")
    assert served.json("POST", f"/api/images/{t1}/faces/6", {"keep": True})[0] == 404
    assert served.json("POST", f"/api/images/{_index(served, 'broken.jpg')}/faces/0", {"keep": True})[0] == 404
    assert served.json("POST", f"/api/images/{t1}/faces/0", {"prompt": "x" * 501})[0] == 422
    assert served.json("POST", f"/api/images/{t1}/faces/0", {"keep": True, "path": "/etc"})[0] == 422
    status, _, _ = served.request("POST", f"/api/images/{t1}/faces/0", b"keep=1", **{"Content-Type": "text/plain"})
    assert status == 415


def test_keep_this_person_everywhere_finds_the_same_person_in_another_photo(served: Served) -> None:
    """t1-mirrored holds the same six people, mirrored: the match is by identity, not by position."""
    t1, mirrored = _index(served, "t1.png"), _index(served, "t1-mirrored.png")
    entry = served.state.entry(t1)
    k = 3
    status, answer = served.json("POST", f"/api/images/{t1}/faces/{k}/everywhere")
    assert status == 200
    kept = [tuple(pair) for pair in answer["kept"]]
    assert (t1, k) in kept and len(kept) == 2  # one face in each of the two photos of this person, none elsewhere
    (other,) = [f for i, f in kept if i == mirrored]
    x0, _, x1, _ = entry["faces"][k]["box"]
    mx0, _, mx1, _ = served.state.entry(mirrored)["faces"][other]["box"]
    assert abs((1280 - (x0 + x1) / 2) - (mx0 + mx1) / 2) < 10  # the mirror image of the same face
    saved = read_faces_json(served.state.faces_path)
    assert saved["t1-mirrored.png"]["faces"][other]["keep"] and saved["t1.png"]["faces"][k]["keep"]
    for name, faces in (("t1.png", k), ("t1-mirrored.png", other)):
        served.json("POST", f"/api/images/{_index(served, name)}/faces/{faces}", {"keep": False})


# -- uploads ------------------------------------------------------------------------------------


def test_uploads_are_refused_unless_allowed(served: Served, photos: Path) -> None:
    status, _, data = served.request("POST", "/api/reference", (photos / "astronaut.png").read_bytes())
    assert status == 403 and b"--allow-upload" in data
    assert not any(f["keep"] for i in served.state.to_json() for f in i["faces"])


def test_an_allowed_upload_keeps_that_person_and_oversize_or_broken_ones_are_refused(
    uploads: Served, t1: np.ndarray, tmp_path: Path
) -> None:
    box = uploads.state.entry(_index(uploads, "t1.png"))["faces"][0]["box"]
    x0, y0, x1, y1 = (int(v) for v in box)
    pad = x1 - x0
    crop = np.ascontiguousarray(t1[max(y0 - pad, 0) : y1 + pad, max(x0 - pad, 0) : x1 + pad][:, ::-1])
    write_image(tmp_path / "me.jpg", crop)
    status, _, data = uploads.request("POST", "/api/reference", (tmp_path / "me.jpg").read_bytes())
    assert status == 200, data
    kept = {tuple(pair) for pair in json.loads(data)["kept"]}
    assert (_index(uploads, "t1.png"), 0) in kept and len(kept) == 2  # and in the mirrored copy
    assert uploads.request("POST", "/api/reference", b"\xff" * 200_001)[0] == 413
    status, _, data = uploads.request("POST", "/api/reference", b"garbage, not an image")
    assert status == 422 and b"uploaded photo" in data and b"/tmp" not in data
    write_image(tmp_path / "wall.png", np.full((60, 60, 3), 90, np.uint8))
    status, _, data = uploads.request("POST", "/api/reference", (tmp_path / "wall.png").read_bytes())
    assert status == 422 and b"no face found" in data


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.e2e  # a whole render of four photos: a minute or two on a shared CPU
def test_render_runs_the_faces_json_session_and_serves_only_the_results_it_wrote(
    served: Served, t1: np.ndarray
) -> None:
    index = _index(served, "t1.png")
    assert served.request("GET", f"/pictures/{index}/result")[0] == 404  # nothing rendered yet
    served.json("POST", f"/api/images/{index}/faces/4", {"keep": True})
    status, started = served.json("POST", "/api/render")
    assert status == 202 and started["state"] == "running"
    assert served.json("POST", "/api/render")[0] == 409  # one render at a time
    served.render.wait(300)
    _, state = served.json("GET", "/api/state")
    render = state["render"]
    assert render["state"] == "done" and render["exit_code"] == 4  # broken.jpg failed, the others were written
    assert render["results"]["broken.jpg"]["status"] == "failed"
    assert render["results"]["t1.png"]["actions"].count("kept") == 1
    manifest = json.loads((served.out / "manifest.json").read_text())
    (t1_record,) = [e for e in manifest["images"] if e["input"] == "t1.png"]
    assert [f["action"] for f in t1_record["faces"]][4] == "kept"
    output = read_image(served.out / "t1.png")
    x0, y0, x1, y1 = (round(v) for v in served.state.entry(index)["faces"][4]["box"])
    assert np.array_equal(output[y0:y1, x0:x1], t1[y0:y1, x0:x1])
    status, headers, _ = served.request("GET", f"/pictures/{index}/result")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert served.request("GET", f"/pictures/{_index(served, 'broken.jpg')}/result")[0] == 404
    served.json("POST", f"/api/images/{index}/faces/4", {"keep": False})


# -- the command and the render job ---------------------------------------------------------------


def test_review_refuses_an_output_folder_that_already_holds_results(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_image(out / "astronaut.png", np.zeros((8, 8, 3), np.uint8))
    cli = create_cli()
    result = CliRunner().invoke(cli, ["review", str(photos / "astronaut.png"), "-o", str(out), "--no-browser"])
    assert result.exit_code == 2 and "already holds results" in result.output and "--resume" in result.output
    assert not (out / "faces.json").exists()  # refused before detecting anything
    both = CliRunner().invoke(cli, ["review", str(photos), "-o", str(out), "--resume", "--overwrite"])
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_the_first_render_resumes_or_not_as_asked_and_later_ones_replace_their_outputs(tmp_path: Path) -> None:
    from rp_core.session import Event, RunSummary

    seen: list[SessionOptions] = []

    def runner(options: SessionOptions, on_event: Any) -> RunSummary:
        seen.append(options)
        on_event(Event("start", total=1))
        return RunSummary(entries=(), fresh=(), skipped=0, manifest_path=None)

    job = RenderJob(runner, SessionOptions(faces_json=tmp_path / "f.json", resume=True))
    for _ in range(3):
        assert job.start()
        job.wait(10)
        assert job.snapshot()["state"] == "done" and job.snapshot()["total"] == 1
    assert [(o.resume, o.overwrite) for o in seen] == [(True, False), (False, True), (False, True)]
    assert all(o.faces_json == tmp_path / "f.json" for o in seen)
