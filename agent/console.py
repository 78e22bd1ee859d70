"""The line's console: an HTTP server inside the agent (Starlette on uvicorn, on a thread of its
own) with the review page, the alarm API, operator verdicts, /metrics and /healthz.

Every route is in ``Console.routes()``: one list, so a feature adds its endpoint there. Handlers
are light: they read the alarm history through the calling thread's own SQLite connection and
its in-memory tallies, serve the files the alarm thread already wrote (nothing is decoded or
encoded here: the page's thumbnails are the history's thumb.jpg), keep the last rendered page
until history changes, and read the pipelines' counters without touching their locks for long.
See docs/console.md.

Auth: with ``[http] token_file`` every route but /metrics and /healthz needs the token, either as
``Authorization: Bearer <token>`` or through the login form, which sets an HttpOnly,
SameSite=Strict session cookie (an HMAC of the token, never the token). A POST must be JSON (a
cross-site form cannot send that without a CORS preflight, which is never granted), must come
from this origin when the browser says where it comes from, and, when the cookie is what
authenticates it, must carry the page's X-CSRF-Token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from .config import HttpConfig, split_listen
from .errors import AgentError
from .console_page import LOGIN_PAGE, REVIEW_PAGE
from .history import VERDICTS, BadVerdict, History, UnknownAlarm
from .metrics import metrics_text

log = logging.getLogger(__name__)

COOKIE = "ganomaly_session"
MAX_BODY = 4096  # a verdict is a few dozen bytes
PAGE_ROWS = 200
SMALL_FILE = 256 * 1024  # images up to this size are answered from memory in one piece
TICK_S = 1.0  # uvicorn's housekeeping tick (its own: 0.1 s)
NICE = 10  # the console's threads run at this niceness on Linux: inspection wins the CPU


class HttpError(AgentError):
    """A request the console answers with an HTTP error status (4xx) and a message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _mac(key: str, what: str) -> str:
    return hmac.new(key.encode(), what.encode(), hashlib.sha256).hexdigest()


def parse_time(v: str | None, name: str) -> float | None:
    """Seconds since the epoch, or an ISO 8601 time (local time when it has no zone)."""
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        raise HttpError(400, f"{name}={v[:40]!r}: give seconds since the epoch or an ISO time "
                             "(2026-12-07T06:00)") from None


class Console:
    def __init__(self, agent, history: History | None, cfg: HttpConfig, token: str | None):
        self.agent, self.history, self.cfg, self.token = agent, history, cfg, token
        key = token or secrets.token_hex(32)  # no token (loopback): the CSRF token still must be unguessable
        self.session = _mac(key, "session") if token else None
        self.csrf = _mac(key, "csrf")
        self.rates: dict[str, tuple[float, int, int]] = {}  # camera -> (t, frames, alarms) of the last poll
        # the last rendered review page: (history version, query string) -> the HTML; a new alarm,
        # a verdict or an eviction changes the version, so the page is never stale
        self.page_cache: tuple[tuple, bytes] | None = None
        self.app = Starlette(routes=self.routes(), exception_handlers={HttpError: self._http_error})
        self.server = None
        self.thread: threading.Thread | None = None

    def routes(self) -> list[Route]:
        """Every endpoint of the console, in one place."""
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/api/status", self.status, methods=["GET"]),
            Route("/api/alarms", self.alarms, methods=["GET"]),
            Route("/api/alarms/{id}", self.alarm, methods=["GET"]),
            Route("/api/alarms/{id}/images/{name}", self.image, methods=["GET"]),
            Route("/api/alarms/{id}/verdict", self.verdict, methods=["POST"]),
            Route("/api/model", self.model_state, methods=["GET"]),
            Route("/api/model", self.model_set, methods=["POST"]),
            Route("/api/export", self.export, methods=["POST"]),
        ]

    # -- serving ---------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Listen on [http] listen in a thread; RuntimeError when it cannot (a port in use)."""
        import uvicorn

        host, port = split_listen(self.cfg.listen)
        host = host.strip("[]")
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", ssl_certfile=self.cfg.tls_cert_file,
                                ssl_keyfile=self.cfg.tls_key_file, server_header=False)
        self.server = _server(config)
        self.thread = threading.Thread(target=self._run, name="console", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console cannot listen on {self.cfg.listen} (in use, or not an address of "
                                   "this machine?): change [http] listen, or set it to \"\" to turn the console off")
            time.sleep(0.05)
        log.info("console: %s://%s/ (%s)", "https" if self.cfg.tls_cert_file else "http", self.cfg.listen,
                 "token required" if self.token else "no token: loopback only")

    def _run(self) -> None:
        lower_priority()
        self.server.run()

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)

    async def _http_error(self, request: Request, exc: HttpError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    # -- auth ------------------------------------------------------------------------------------
    def _auth(self, request: Request) -> str:
        """How the request is authenticated: "open" (no token configured), "bearer" or "cookie";
        HttpError 401 when it is not."""
        if self.token is None:
            return "open"
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and hmac.compare_digest(header[7:].strip().encode(),
                                                                       self.token.encode()):
            return "bearer"
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.session.encode()):
            return "cookie"
        raise HttpError(401, "a token is needed: send 'Authorization: Bearer <token>' or log in at /login")

    def _check_post(self, request: Request, how: str) -> None:
        """CSRF: JSON only, from this origin, with the page's token when a cookie authenticates."""
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HttpError(415, "send JSON (Content-Type: application/json)")
        origin = request.headers.get("origin")
        if origin and origin not in (f"http://{request.headers.get('host')}", f"https://{request.headers.get('host')}"):
            raise HttpError(403, f"cross-origin request from {origin[:80]} refused")
        if how != "bearer" and not hmac.compare_digest(request.headers.get("x-csrf-token", "").encode(),
                                                       self.csrf.encode()):
            raise HttpError(403, "missing or wrong X-CSRF-Token (reload the page)")

    async def _json_body(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise HttpError(413, f"the body is larger than {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise HttpError(413, f"the body is larger than {MAX_BODY} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, f"the body is not valid JSON ({e})") from None

    def _history(self) -> History:
        if self.history is None:
            raise HttpError(404, "the alarm history is off ([history] enabled = false)")
        return self.history

    # -- pages -----------------------------------------------------------------------------------
    def login_form(self, request: Request, message: str = "", status: int = 200) -> HTMLResponse:
        return HTMLResponse(LOGIN_PAGE.replace("{message}", html.escape(message)), status_code=status)

    async def login(self, request: Request) -> Response:
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HttpError(413, f"the body is larger than {MAX_BODY} bytes")
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            log.warning("console: a login with a wrong token from %s", request.client.host if request.client else "?")
            return self.login_form(request, "Wrong token.", 401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, self.session, httponly=True, samesite="strict", path="/",
                        secure=bool(self.cfg.tls_cert_file), max_age=12 * 3600)
        return resp

    async def logout(self, request: Request) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    def page(self, request: Request) -> Response:
        try:
            self._auth(request)
        except HttpError:
            return self.login_form(request, "", 401)
        q = self._filters(request)
        history = self._history()
        key = (history.version, str(request.query_params))  # the version first: read before the rows
        cached = self.page_cache
        if cached is not None and cached[0] == key:
            return HTMLResponse(cached[1], headers={"Cache-Control": "no-store"})
        rows = history.list(limit=PAGE_ROWS, **q)
        cameras = sorted(set(history.cameras()) | {p.cam.name for p in self.agent.pipelines})
        page = REVIEW_PAGE.replace("{csrf}", self.csrf).replace("{rows}", "".join(_row_html(a) for a in rows))
        page = page.replace("{filters}", _filters_html(q, cameras, request.query_params))
        page = page.replace("{count}", f"{len(rows)}{'+' if len(rows) == PAGE_ROWS else ''}")
        page = page.replace("{logout}", "" if self.token is None else
                            '<form method="post" action="/logout"><button>log out</button></form>')
        body = page.encode()
        self.page_cache = (key, body)
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    def _filters(self, request: Request) -> dict[str, Any]:
        p = request.query_params
        verdict = p.get("verdict") or None
        if verdict not in (None, "unreviewed", *VERDICTS):
            raise HttpError(400, f"verdict={verdict[:40]!r}: one of unreviewed, {', '.join(VERDICTS)}")
        try:
            min_score = float(p["min_score"]) if p.get("min_score") else None
        except ValueError:
            raise HttpError(400, f"min_score={p['min_score'][:40]!r} is not a number") from None
        return {"camera": p.get("camera") or None, "since": parse_time(p.get("since"), "since"),
                "until": parse_time(p.get("until"), "until"), "verdict": verdict, "min_score": min_score}

    # -- API -------------------------------------------------------------------------------------
    def alarms(self, request: Request) -> JSONResponse:
        self._auth(request)
        q = self._filters(request)
        p = request.query_params
        try:
            limit = min(max(int(p.get("limit") or 100), 1), 1000)
        except ValueError:
            raise HttpError(400, f"limit={p['limit'][:40]!r} is not a whole number") from None
        rows = self._history().list(limit=limit, before=parse_time(p.get("before"), "before"), **q)
        for r in rows:
            r.pop("image_names", None)
        return JSONResponse({"alarms": rows, "count": len(rows)})

    def alarm(self, request: Request) -> JSONResponse:
        self._auth(request)
        a = self._history().get(request.path_params["id"])
        if a is None:
            raise HttpError(404, f"no alarm {request.path_params['id'][:40]!r} in history (never raised, or evicted)")
        a.pop("images")
        a["images"] = {k: f"/api/alarms/{a['id']}/images/{k}" for k in a.pop("image_names")}
        return JSONResponse(a)

    def image(self, request: Request) -> Response:
        self._auth(request)
        path = self._history().image(request.path_params["id"], request.path_params["name"])
        if path is None:
            raise HttpError(404, "no such image (names: frame, overlay, crop-<k>)")
        media = "image/png" if path.endswith(".png") else "image/jpeg"
        # an alarm's images never change (its id is new): the browser keeps them
        headers = {"Cache-Control": "private, max-age=86400, immutable"}
        try:
            if os.path.getsize(path) <= SMALL_FILE:  # thumbnails, crops: one read, no file streaming
                with open(path, "rb") as f:
                    return Response(f.read(), media_type=media, headers=headers)
        except OSError:  # evicted meanwhile
            raise HttpError(404, "no such image (evicted)") from None
        return FileResponse(path, media_type=media, headers=headers)

    async def verdict(self, request: Request) -> JSONResponse:
        how = self._auth(request)
        self._check_post(request, how)
        body = await self._json_body(request)
        if not isinstance(body, dict) or set(body) != {"verdict"}:
            raise HttpError(400, 'send {"verdict": "defect"} or {"verdict": "false_alarm"}')
        try:
            alarm = self._history().set_verdict(request.path_params["id"], body["verdict"], source="console")
        except BadVerdict as e:
            raise HttpError(422, str(e)) from None
        except UnknownAlarm:
            raise HttpError(404, f"no alarm {request.path_params['id'][:40]!r} in history") from None
        alarm.pop("images", None)
        alarm.pop("image_names", None)
        return JSONResponse(alarm)

    def model_state(self, request: Request) -> JSONResponse:
        self._auth(request)
        return JSONResponse(self.agent.models.state())

    async def model_set(self, request: Request) -> JSONResponse:
        """Hot swap: {"bundle": PATH, "camera": NAME?} or {"rollback": true}; 200 with the result when
        the camera(s) switched, 422 with the reason when refused (every camera keeps its model)."""
        how = self._auth(request)
        self._check_post(request, how)
        body = await self._json_body(request)
        # loading and self-testing a bundle takes seconds: off the event loop, so the console stays live
        result = await run_in_threadpool(self.agent.models.request, body, "console")
        return JSONResponse(result, status_code=200 if result["ok"] else 422)

    async def export(self, request: Request) -> JSONResponse:
        """The console's export button: {"verdict": ..., "camera": NAME?, "since": T?} into a new
        folder under the history's exports/ (its path returned), as ``ganomaly-agent export``."""
        from .export import ExportError, export, parse_since

        how = self._auth(request)
        self._check_post(request, how)
        body = await self._json_body(request)
        if not isinstance(body, dict) or not set(body) <= {"verdict", "camera", "since"} or "verdict" not in body:
            raise HttpError(400, 'send {"verdict": "false_alarm", "camera": NAME?, "since": "8h"?}')
        out = os.path.join(self.agent.s.history_path, "exports",
                           f"{time.strftime('%Y%m%d-%H%M%S')}-{str(body['verdict'])[:16]}")
        try:
            since = parse_since(body.get("since"))
            m = await run_in_threadpool(export, self.agent.s, body["verdict"], out, body.get("camera"), since)
        except ExportError as e:
            raise HttpError(422, str(e)) from None
        return JSONResponse({"out": out, "count": m["count"], "models": m["models"],
                             "without_frame": len(m["without_frame"])})

    def status(self, request: Request) -> JSONResponse:
        self._auth(request)
        return JSONResponse(self.live())

    def live(self) -> dict[str, Any]:
        """Per camera: online, fps and alarm rate since the last call, the last scores, threshold."""
        now, out = time.monotonic(), {}
        precision = self.history.precision() if self.history is not None else {}  # tallies: no scan
        for p in self.agent.pipelines:
            name, frames, alarms = p.cam.name, p.stats.processed.count, p.stats["alarms"]
            t0, f0, a0 = self.rates.get(name, (self.agent.started, 0, 0))
            self.rates[name] = (now, frames, alarms)
            dt = max(now - t0, 1e-3)
            out[name] = {"online": p.online, "reason": p.status_reason, "fps": round((frames - f0) / dt, 2),
                         "alarms_per_min": round(60 * (alarms - a0) / dt, 2), "frames": frames, "alarms": alarms,
                         "threshold": p.threshold, "scores": [round(s, 3) for s in list(p.stats.recent_scores)],
                         "precision": precision.get(name, {}).get("precision"),
                         "model": p.engine.bundle.name, "model_hash": p.engine.bundle.model_hash}
        return {"cameras": out, "ts": time.time()}

    def healthz(self, request: Request) -> JSONResponse:
        why = self.agent.health()
        return JSONResponse({"ok": why is None, "why": why}, status_code=200 if why is None else 503)

    def metrics(self, request: Request) -> Response:
        return PlainTextResponse(metrics_text(self.agent), media_type="text/plain; version=0.0.4; charset=utf-8")


def _server(config):
    """uvicorn's Server, its housekeeping loop woken once a second instead of ten times (that loop
    only renews the Date header and looks at should_exit; ten wake-ups a second were most of
    what an idle console cost the agent). stop() then takes up to TICK_S longer."""
    import inspect

    import uvicorn

    # The override rests on uvicorn's own loop (main_loop calling on_tick(counter) -> should
    # exit), unchanged from 0.29 to 0.55; a uvicorn without it gets its stock server.
    tick = getattr(uvicorn.Server, "on_tick", None)
    if tick is None or not hasattr(uvicorn.Server, "main_loop") or list(inspect.signature(tick).parameters) != [
            "self", "counter"]:
        return uvicorn.Server(config)

    class Server(uvicorn.Server):
        async def main_loop(self) -> None:
            while not await self.on_tick(0):  # tick 0: the Date header renewed on every tick
                await asyncio.sleep(TICK_S)

    return Server(config)


def lower_priority(nice: int = NICE) -> None:
    """This thread (and the threads it starts: they inherit it) at a higher niceness on Linux,
    so inspection's threads win the CPU when the console and inspection both want it. Errors
    (another OS, a container that forbids it) are ignored: the console then runs at the
    agent's priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass


def _row_html(a: dict[str, Any]) -> str:
    names = a["image_names"]
    # thumb.jpg since the history made one per alarm; an older alarm shows its crop as before
    thumb = next((n for n in ("thumb", "crop-0", "overlay") if n in names), "frame")
    t = datetime.fromtimestamp(a["ts"]).strftime("%Y-%m-%d %H:%M:%S")
    e = html.escape
    return (f'<tr data-id="{a["id"]}" data-verdict="{e(a["verdict"] or "")}"><td><img loading="lazy" alt="" '
            f'src="/api/alarms/{a["id"]}/images/{thumb}"></td><td>{t}</td><td>{e(a["camera"])}</td>'
            f'<td>{a["score"]:.3f} / {a["threshold"]:.2f}</td><td>{e(a["item"] or "")}</td>'
            f'<td class="v">{e(a["verdict"] or "")}</td></tr>')


def _filters_html(q: dict[str, Any], cameras: list[str], params) -> str:
    e = html.escape
    cams = "".join(f'<option value="{e(c)}"{" selected" if q["camera"] == c else ""}>{e(c)}</option>' for c in cameras)
    verdicts = "".join(f'<option value="{v}"{" selected" if q["verdict"] == v else ""}>{v.replace("_", " ")}</option>'
                       for v in ("unreviewed", *VERDICTS))
    return (f'<select name="camera"><option value="">all cameras</option>{cams}</select>'
            f'<select name="verdict"><option value="">any verdict</option>{verdicts}</select>'
            f'<input name="since" placeholder="since 2026-12-07T06:00" value="{e(params.get("since", ""))}">'
            f'<input name="until" placeholder="until" value="{e(params.get("until", ""))}">'
            f'<input name="min_score" placeholder="min score" size="8" value="{e(params.get("min_score", ""))}">'
            '<button>filter</button>')


def console_url(cfg: HttpConfig) -> str | None:
    """The console's address for Home Assistant's configuration_url (None when it is off)."""
    if not cfg.listen:
        return None
    return f"{'https' if cfg.tls_cert_file else 'http'}://{cfg.listen}/"

