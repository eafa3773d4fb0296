"""``unclip serve``: the small web app of DESIGN.md §1, on the standard library's HTTP server.

One page (``static/index.html``) and a JSON API, so nothing beyond the package is installed and nothing is
fetched: the page's script and style are inline.

- ``GET /``: the page; ``GET /api/info``: the model, its resolution, settings and what it can do;
- ``POST /api/jobs`` with ``{"kind": ..., ...}``: a job is checked and queued (202 ``{"id"}``), or refused
  (400 ``{"error"}``); images travel as ``data:`` URLs both ways;
- ``GET /api/jobs/ID``: its status, the sampler step it is at, and when done the images and their labels.

It listens on 127.0.0.1 unless told otherwise: it runs whatever the model draws for anyone who can reach it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from unclip.web.jobs import KINDS, MAX_FRAMES, MAX_IMAGES, SETTING_KEYS, BadRequest, JobRunner, check_request

MAX_BODY = 32 * 1024 * 1024  # two uploaded photos as base64 with room to spare


class App:
    """What the handler serves: the job runner and the loaded pipeline's description."""

    def __init__(self, load: Callable[[], tuple[Any, str | None]]) -> None:
        self.jobs = JobRunner(load)
        self.page = (resources.files("unclip.web") / "static" / "index.html").read_bytes()

    def info(self) -> dict[str, Any]:
        pipe, folder = self.jobs.pipeline()
        return {
            "model": folder,
            "resolution": pipe.resolution,
            "has_prior": pipe.prior is not None,
            "settings": dataclasses.asdict(pipe.settings),
            "kinds": list(KINDS),
            "editable_settings": list(SETTING_KEYS),
            "max_images": MAX_IMAGES,
            "max_frames": MAX_FRAMES,
        }

    def submit(self, body: Any) -> dict[str, Any]:
        pipe, _ = self.jobs.pipeline()
        kind, params = check_request(body, pipe.settings)
        return {"id": self.jobs.submit(kind, params).id}


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "unclip"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the page polls twice a second; errors reach the page, not the terminal

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, app.page, "text/html; charset=utf-8")
            elif self.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            elif self.path == "/api/info":
                self._json(HTTPStatus.OK, app.info())
            elif self.path.startswith("/api/jobs/"):
                job = app.jobs.get(self.path.removeprefix("/api/jobs/"))
                if job is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "no such job (finished jobs are kept a while only)"})
                else:
                    self._json(HTTPStatus.OK, job.to_dict())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/api/jobs":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > MAX_BODY else HTTPStatus.BAD_REQUEST
                self._json(status, {"error": f"the request body must hold 1 byte to {MAX_BODY // 2**20} MB of JSON"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                self._json(HTTPStatus.ACCEPTED, app.submit(body))
            except (BadRequest, ValueError) as err:  # json.JSONDecodeError is a ValueError
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})

    return Handler


def make_server(app: App, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """The server, bound and ready for ``serve_forever`` (port 0: any free port, see ``server_address``)."""
    server = ThreadingHTTPServer((host, port), make_handler(app))
    server.daemon_threads = True
    return server
