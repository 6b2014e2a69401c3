"""The review web app (Starlette): one page, a small JSON API, and the pictures by number.

Routes (every one behind `TokenGuard`):
  GET  /                                  the page
  GET  /static/review.js, /static/review.css
  GET  /api/state                         photos, faces, decisions, render progress
  POST /api/images/{i}/faces/{k}          {"keep": bool, "prompt": str | null}
  POST /api/images/{i}/faces/{k}/everywhere   keep this person in every photo
  POST /api/reference                     (--allow-upload) a reference photo: keep that person everywhere
  POST /api/render                        start rendering; GET /api/state shows progress
  GET  /pictures/{i}/original             the photo as the run reads it (JPEG)
  GET  /pictures/{i}/result               its anonymized version, once rendered
Nothing else is served: photos are looked up by their number in the plan, never by a path.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rp_core.errors import RpError
from rp_core.review.identity import IdentityIndex
from rp_core.review.pictures import preview_jpeg
from rp_core.review.render import RenderJob
from rp_core.review.security import TokenGuard
from rp_core.review.state import ReviewState

#: Files the page loads besides itself; the only names /static/ answers to.
STATIC = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024


class FaceChange(BaseModel):
    """A decision about one face, as the page sends it."""

    model_config = ConfigDict(extra="forbid")
    keep: bool | None = None
    prompt: str | None = Field(default=None, max_length=500)


@dataclass(frozen=True)
class ReviewSettings:
    token: str
    port: int | None = None
    allow_upload: bool = False
    max_upload: int = DEFAULT_MAX_UPLOAD


def _static(name: str) -> str:
    return resources.files("rp_core.review").joinpath("static", name).read_text(encoding="utf-8")


def create_app(state: ReviewState, render: RenderJob, identities: IdentityIndex, settings: ReviewSettings) -> Any:
    """The ASGI app for one review (Starlette, wrapped in the token guard)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def numbers(request: Request) -> tuple[int, int]:
        return int(request.path_params["i"]), int(request.path_params.get("k", 0))

    async def page(request: Request) -> Response:
        text = _static("review.html").replace("__TOKEN__", html.escape(settings.token, quote=True))
        return HTMLResponse(text)

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(_static(name), media_type=STATIC[name])

    async def api_state(request: Request) -> Response:
        return JSONResponse(
            {
                "images": state.to_json(),
                "faces_json": str(state.faces_path),
                "render": render.snapshot(),
                "keep_everywhere": identities.available,
                "allow_upload": settings.allow_upload,
                "max_upload": settings.max_upload,
            }
        )

    async def change_face(request: Request) -> Response:
        i, k = numbers(request)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "send JSON")
        try:
            change = FaceChange.model_validate_json(await request.body())
            return JSONResponse(state.decide(i, k, change.model_dump(exclude_unset=True)))
        except ValidationError as exc:
            return error(422, exc.errors()[0]["msg"])
        except KeyError:
            return error(404, f"no face {k} in photo {i}")

    async def keep_everywhere(request: Request) -> Response:
        i, k = numbers(request)
        try:
            person = await run_in_threadpool(identities.person_of, i, k)
            return await _keep(person)
        except KeyError:
            return error(404, f"no face {k} in photo {i}")
        except RpError as exc:
            return error(422, str(exc))

    async def _keep(person: Any) -> Response:
        found = await run_in_threadpool(identities.faces_of, person)
        state.keep_all(found)
        return JSONResponse({"kept": [list(pair) for pair in found]})

    async def reference(request: Request) -> Response:
        if not settings.allow_upload:
            return error(403, "uploads are off: start rp review with --allow-upload")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_upload:
            return error(413, f"the photo is larger than the limit ({settings.max_upload // 1024 // 1024} MiB)")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > settings.max_upload:
                return error(413, f"the photo is larger than the limit ({settings.max_upload // 1024 // 1024} MiB)")
        if not data:
            return error(422, "the upload is empty")
        try:
            person = await run_in_threadpool(identities.person_in_photo, bytes(data))
            return await _keep(person)
        except RpError as exc:
            return error(422, str(exc))

    async def start_render(request: Request) -> Response:
        if not render.start():
            return error(409, "a render is already running")
        return JSONResponse(render.snapshot(), status_code=202)

    async def picture(request: Request) -> Response:
        i = int(request.path_params["i"])
        which = request.path_params["which"]
        if which not in ("original", "result"):
            return Response("not found", status_code=404, media_type="text/plain")
        try:
            image = state.image(i)
        except KeyError:
            return Response("not found", status_code=404, media_type="text/plain")
        if which == "original" and image.error is not None:
            return _unreadable(image.name, image.error)
        path = image.source if which == "original" else image.target
        if which == "result" and (render.snapshot()["state"] != "done" or not path.is_file()):
            return Response("not rendered yet", status_code=404, media_type="text/plain")
        try:
            data = await run_in_threadpool(preview_jpeg, path)
        except (RpError, OSError) as exc:
            return _unreadable(image.name, str(exc))
        return Response(data, media_type="image/jpeg")

    routes = [
        Route("/", page),
        Route("/favicon.ico", favicon),
        Route("/static/{name}", static),
        Route("/api/state", api_state),
        Route("/api/images/{i:int}/faces/{k:int}", change_face, methods=["POST"]),
        Route("/api/images/{i:int}/faces/{k:int}/everywhere", keep_everywhere, methods=["POST"]),
        Route("/api/reference", reference, methods=["POST"]),
        Route("/api/render", start_render, methods=["POST"]),
        Route("/pictures/{i:int}/{which:str}", picture),
    ]
    app = Starlette(routes=routes)
    return TokenGuard(app, settings.token, settings.port)


def _unreadable(name: str, reason: str) -> Any:
    from starlette.responses import HTMLResponse

    body = (
        "<!doctype html><meta charset='utf-8'><title>Cannot read this photo</title>"
        f"<h1>Cannot read {html.escape(name)}</h1><p>{html.escape(reason)}</p>"
        "<p>rp leaves it out of the render and reports it as failed; fix or remove the file and start again.</p>"
    )
    return HTMLResponse(body, status_code=422)
