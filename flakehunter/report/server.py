"""``flakehunter review``: the report served on 127.0.0.1, with verdicts written to ``RUN_DIR/review.jsonl``.

The standard library's threading HTTP server serves ``RUN_DIR/report/`` and two endpoints:

* ``GET /api/verdicts``: the latest verdict per candidate id (JSON object keyed by id);
* ``POST /api/verdict``: one verdict (`flakehunter.report.verdicts.Verdict` as JSON), appended durably;
  400 for a malformed one, 404 for a candidate id the run does not have.

It listens on the loopback address only, and anything else is refused before a socket is opened: the
server has no accounts, so it must not be reachable from another machine. Against other pages in the
same browser, writes need the random token the served page carries (a page elsewhere cannot read it),
a JSON content type (which a cross-site form cannot send) and a Host header naming the loopback address
(against DNS rebinding).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import secrets
import signal
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flakehunter.errors import InputError, RuntimeFailure
from flakehunter.report import files
from flakehunter.report.html import verdicts_json, with_token, with_verdicts
from flakehunter.report.rundata import read_records
from flakehunter.report.verdicts import append_verdict, parse_verdict, read_verdicts
from flakehunter.run.layout import RunDirectory

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 64 * 1024


def check_host(host: str) -> str:
    """The address to bind: 127.0.0.1 (``localhost`` means the same); any other is `InputError` (exit 2)."""
    if host in (LOOPBACK, "localhost"):
        return LOOPBACK
    raise InputError(f"--host {host}: the review server listens on {LOOPBACK} only (it has no accounts, so it "
                     "must not be reachable from other machines); use an SSH tunnel to review from elsewhere")


class ReviewServer:
    """The review server of one run directory; `start` serves in a thread, `serve` in the caller's."""

    def __init__(self, run_dir: str | Path, host: str = LOOPBACK, port: int = 0) -> None:
        self.run = RunDirectory(run_dir)
        if not (self.run.report / files.INDEX).is_file():
            raise InputError(f"{self.run.report / files.INDEX}: no report to serve (run flakehunter report first)")
        self.host = check_host(host)
        self.token = secrets.token_urlsafe(24)
        self._ids = self._read_ids()
        self._lock = threading.Lock()
        handler = partial(_Handler, review=self, directory=str(self.run.report))
        try:
            self.httpd = ThreadingHTTPServer((self.host, port), handler)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise RuntimeFailure(f"cannot listen on {self.host}:{port} ({why})") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> ReviewServer:
        """Serve in a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="flakehunter-review", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve until Ctrl-C or SIGTERM (call from the main thread), then write the verdicts into the report."""
        stop = threading.Event()
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.close()

    def close(self) -> None:
        """Stop serving and write the latest verdicts into the report on disk."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()
        refresh_verdicts(self.run)

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the handler asks --------------------------------------------------------------------------
    def _read_ids(self) -> set[int]:
        candidates, _ = read_records(self.run.candidates_jsonl)
        return {c.id for c in candidates}

    def knows(self, candidate_id: int) -> bool:
        """Whether the run has this candidate (a running watch may have added it since the start)."""
        if candidate_id in self._ids:
            return True
        self._ids = self._read_ids()
        return candidate_id in self._ids

    def record(self, body: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        """Validate and append one verdict; the status and the JSON to answer."""
        try:
            verdict = parse_verdict(body)
        except InputError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        if not self.knows(verdict.id):
            return HTTPStatus.NOT_FOUND, {"error": f"no candidate {verdict.id} in {self.run.path}"}
        with self._lock:
            written = append_verdict(self.run.review, verdict)
        log.info("review: candidate %s %s", written.id, written.verdict or "undecided")
        return HTTPStatus.OK, written.to_record()

    def page(self) -> bytes:
        text = (self.run.report / files.INDEX).read_text(encoding="utf-8")
        return with_token(with_verdicts(text, read_verdicts(self.run.review)), self.token).encode("utf-8")


def refresh_verdicts(run: RunDirectory) -> None:
    """Write the latest verdicts into ``report/index.html`` (atomically), so the page opened from disk shows them."""
    from flakehunter.atomic import write_text_atomic

    index = run.report / files.INDEX
    if not index.is_file() or not run.review.exists():
        return
    text = index.read_text(encoding="utf-8")
    write_text_atomic(index, with_verdicts(text, read_verdicts(run.review)))


class _Handler(SimpleHTTPRequestHandler):
    """Static files of report/ plus the review endpoints."""

    def __init__(self, *args: Any, review: ReviewServer, **kwargs: Any) -> None:
        self.review = review
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("review server: " + format, *args)

    def _host_ok(self) -> bool:
        allowed = {f"{LOOPBACK}:{self.review.port}", f"localhost:{self.review.port}"}
        if self.headers.get("Host", "") in allowed:
            return True
        self._json(HTTPStatus.FORBIDDEN, {"error": "requests must name the loopback address as Host"})
        return False

    def _json(self, status: HTTPStatus, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/" + files.INDEX):
            body = self.review.page()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        elif path == "/api/verdicts":
            self._json(HTTPStatus.OK, verdicts_json(read_verdicts(self.review.run.review)))
        else:
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._host_ok():
            super().do_HEAD()

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        if self.path.split("?", 1)[0] != "/api/verdict":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
            return
        if not hmac.compare_digest(self.headers.get("X-Review-Token", ""), self.review.token):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong review token (reload the page)"})
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "expected Content-Type: application/json"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return
        if not 0 < length <= MAX_BODY_BYTES:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"a verdict is at most {MAX_BODY_BYTES} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"not JSON ({exc})"})
            return
        status, payload = self.review.record(body)
        self._json(status, payload)
