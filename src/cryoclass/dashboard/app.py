"""The dashboard's web app (Starlette): the page, its JSON API and a server-sent event stream.

Routes (all read-only except the selection ones, which write only ``selection/`` and the
``selected_particles.*`` exports into the job folder):

* ``GET /`` the page; ``/static/...`` its script and style;
* ``GET /api/state`` everything shown (``Dashboard.state``);
* ``GET /api/events`` server-sent events: ``version`` whenever the job's outputs change;
* ``GET /api/class/{key}/{n}.png`` class average n of classes version key;
* ``GET /api/files/{name}`` one of the job's outputs (a fixed list of names, nothing else);
* ``POST /api/mark`` {number, mark: good|bad|null}; ``POST /api/autoselect`` {min_count,
  max_res_A} (``AutoSelectBody``, 422 if invalid); ``POST /api/clear``; ``POST /api/export``
  (JSON bodies only, at most ``guards.MAX_BODY_BYTES``; writes from another site's page are
  refused by their Origin; no page may frame the dashboard: ``guards.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryoclass.dashboard.guards import BodyTooLarge, Guards
from cryoclass.dashboard.jobfiles import download_path
from cryoclass.dashboard.service import Dashboard
from cryoclass.outputs.selection import OutputsChanging

STATIC = Path(__file__).with_name("static")


class AutoSelectBody(BaseModel):
    """POST /api/autoselect: classes with at least min_count particles and a resolution of
    max_res_A Å or better (None: any) are marked good, the others bad."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_count: Annotated[int, Field(ge=0, le=10**12)] | None = 0
    max_res_A: Annotated[float, Field(gt=0, le=1e6)] | None = None


COOKIE = "cryoclass_token"
#: Seconds between checks of the job folder for the event stream, and between keep-alives.
POLL_S = 0.5
KEEPALIVE_S = 15.0


def create_app(
    dashboard: Dashboard, token: str | None = None, allowed_hosts: list[str] | None = None
) -> Starlette:
    """The app for ``dashboard``. token: required on every request when set (query
    ``?token=``, header ``Authorization: Bearer``, or the cookie the page gets); allowed_hosts:
    Host header values accepted (None: any)."""
    d = dashboard

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(d.state), headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _version_events(request, d),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def class_png(request: Request) -> Response:
        png = await run_in_threadpool(
            d.class_png, request.path_params["key"], request.path_params["number"]
        )
        if png is None:
            return PlainTextResponse("no such class image", status_code=404)
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=3600, immutable"},
        )

    async def files(request: Request) -> Response:
        p = download_path(d.job, request.path_params["name"])
        if p is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(p, filename=p.name, headers={"Cache-Control": "no-store"})

    async def mark(request: Request) -> Response:
        body = await _json_body(request)
        number = body.get("number")
        if not isinstance(number, int):
            raise ValueError("number must be a class number")
        await run_in_threadpool(d.set_mark, number, body.get("mark"))
        return JSONResponse({"ok": True})

    async def autoselect(request: Request) -> Response:
        body = AutoSelectBody.model_validate(await _json_body(request))
        good = await run_in_threadpool(d.auto_select, body.min_count or 0, body.max_res_A)
        return JSONResponse({"good": good})

    async def clear(request: Request) -> Response:
        await _json_body(request)
        await run_in_threadpool(d.clear_marks)
        return JSONResponse({"ok": True})

    async def export(request: Request) -> Response:
        await _json_body(request)
        return JSONResponse(await run_in_threadpool(d.export))

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/events", events),
        Route("/api/class/{key:str}/{number:int}.png", class_png),
        Route("/api/files/{name:str}", files),
        Route("/api/mark", mark, methods=["POST"]),
        Route("/api/autoselect", autoselect, methods=["POST"]),
        Route("/api/clear", clear, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(Guards, allowed_hosts=allowed_hosts or None)]
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    handlers = {
        ValueError: _bad_request,
        OutputsChanging: _conflict,
        ValidationError: _unprocessable,
        BodyTooLarge: _too_large,
    }
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


async def _version_events(request: Request, d: Dashboard):
    """``event: version`` with the job's version whenever it changes; comments as keep-alives."""
    last, quiet = None, 0.0
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        v = await run_in_threadpool(d.version)
        if v != last:
            last, quiet = v, 0.0
            yield f"event: version\ndata: {json.dumps(v)}\n\n"
        elif quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
        quiet += POLL_S


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object. Only application/json is accepted: a page of another site
    cannot send that without the browser asking first (CORS), so it cannot change a selection."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _UnsupportedMedia()
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


class _UnsupportedMedia(ValueError):
    pass


async def _bad_request(request: Request, exc: Exception) -> Response:
    code = 415 if isinstance(exc, _UnsupportedMedia) else 400
    msg = "send application/json" if code == 415 else str(exc)
    return JSONResponse({"error": msg}, status_code=code)


async def _unprocessable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
    )
    return JSONResponse({"error": problems}, status_code=422)


async def _too_large(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=413)


async def _conflict(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=409)


class TokenGate:
    """ASGI middleware: every HTTP request must carry ``token`` (query ``token``, header
    ``Authorization: Bearer``, or cookie); a request with a valid query token gets the cookie so
    the page's own requests need not repeat it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        req = Request(scope)
        query = req.query_params.get("token")
        auth = req.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        given = query or bearer or req.cookies.get(COOKIE)
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            resp = PlainTextResponse(
                "a valid token is required (open the URL printed by cryoclass serve)",
                status_code=401,
            )
            await resp(scope, receive, send)
            return
        if not query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                c = SimpleCookie()
                c[COOKIE] = self.token
                c[COOKIE]["httponly"] = True
                c[COOKIE]["samesite"] = "Strict"
                c[COOKIE]["path"] = "/"
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", c.output(header="").strip().encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
