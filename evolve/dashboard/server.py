"""``evorank dashboard``: a local web server for the dashboard page and the JSON it polls.

Why the standard library's ``ThreadingHTTPServer``: the page needs a handful of GET routes on 127.0.0.1 for one
person, and the work per request is reading SQLite; a framework (and its dependency tree) would add nothing
here, and ``evorank`` keeps its install small. Each request runs in its own thread; each run's data is read by
one ``RunWatcher`` at a time, under a lock, and shared by every open page.

Cost to a running job: the watcher opens the archive read-only (WAL readers never block the writer) and reads
it again only when the archive's files changed, and then at most once per ``min_interval`` seconds, and never for
more than ``DUTY`` of the time (the wait after a read grows with what the read cost, so a huge run is followed less
often instead of costing more), however many pages poll; between reads a poll is answered from memory (or with 304
Not Modified). New programs are read incrementally (ids above the last one seen), without their code and prompts.

Hostile text: programs and model replies are data. They leave here only inside JSON (``application/json``, never
sniffed as HTML) and the page puts them into the document with ``textContent``. Every response carries a
Content-Security-Policy that allows scripts only from this server's own static files (no inline script, no
``eval``), no plugins, no frames and no requests anywhere else; requests whose Host header is not this server's
own address are refused (a web page elsewhere cannot reach the archive through DNS rebinding).
"""
from __future__ import annotations

import bisect
import errno
import json
import os
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from evorank.evaluators.errors import EvorankError
from evorank.evolve.inspection.queries import InspectError, open_run

from . import views

STATIC = {  # file name -> content type; nothing else is served from the package
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
MIN_INTERVAL_S = 1.0  # a run's data is read at most this often, however many pages poll
DUTY = 0.02  # and at most this share of the time: a read that took 40 ms waits 2 s before the next one
ALIVE_TTL_S = 5.0  # a running job's data is read again after this long even when nothing was committed
POLL_S = 2.0  # how often the page asks for news
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def static_text(name: str) -> bytes:
    return (resources.files("evorank.evolve.dashboard") / "static" / name).read_bytes()


def _archive_key(run_dir: Path) -> tuple:
    """Changes whenever a transaction is committed to the run's archive (the WAL file grows, or a checkpoint
    rewrites the database file): a stat, no SQLite lock."""
    out = []
    for name in ("archive.sqlite", "archive.sqlite-wal"):
        try:
            st = os.stat(run_dir / name)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class RunWatcher:
    """One run followed by the dashboard: its overview and program points, read read-only and cached until the
    archive changes (and at most once per ``min_interval`` seconds, for at most ``duty`` of the time)."""

    def __init__(self, index: int, run_dir, *, min_interval: float = MIN_INTERVAL_S, alive_ttl: float = ALIVE_TTL_S,
                 duty: float = DUTY):
        self.index = index
        self.run_dir = Path(run_dir)
        self.min_interval = min_interval
        self.duty = duty
        self.alive_ttl = alive_ttl
        self._lock = threading.Lock()
        self._summaries: list = []
        self._ids: list[int] = []
        self._overview: bytes | None = None
        self._key: tuple | None = None
        self._read_at = 0.0
        self._wait = min_interval  # before the next read: min_interval, or longer after a costly read
        self._alive = False
        self.version = 0
        self.reads = 0  # how often the archive was read (for tests and the benchmark)

    def describe(self) -> dict:
        return {"index": self.index, "name": self.run_dir.resolve().name, "path": str(self.run_dir.resolve())}

    def _stale(self, now: float) -> bool:
        if self._overview is None:
            return True
        if now - self._read_at < self._wait:
            return False
        return _archive_key(self.run_dir) != self._key or (self._alive and now - self._read_at >= self.alive_ttl)

    def refresh(self) -> None:
        """Read the run again if it changed (under the lock; callers share the result)."""
        with self._lock:
            now = time.monotonic()
            if not self._stale(now):
                return
            key = _archive_key(self.run_dir)
            since = self._ids[-1] if self._ids else None
            with open_run(self.run_dir) as store:
                with store.read_snapshot():
                    new = store.summaries(since_id=since)
                    self._summaries.extend(new)
                    self._ids.extend(p.id for p in new)
                    data = views.overview(store, self._summaries)
            self.reads += 1
            cost = time.monotonic() - now
            self._wait = max(self.min_interval, cost / self.duty)
            self._key, self._read_at, self._alive = key, now, bool(data["alive"])
            self.version += 1
            data["version"] = self.version
            self._overview = json.dumps(data, default=str, allow_nan=False).encode()

    def overview(self) -> tuple[int, bytes]:
        self.refresh()
        return self.version, self._overview

    def points(self, since: int) -> bytes:
        """The plot points of programs with ids above ``since``, as of the last read."""
        self.refresh()
        with self._lock:
            start = bisect.bisect_right(self._ids, since)
            rows = [views.point_row(p) for p in self._summaries[start:]]
            max_id = self._ids[-1] if self._ids else 0
        return json.dumps({"fields": views.POINT_FIELDS, "points": rows, "max_id": max_id}, allow_nan=False).encode()

    def program(self, ident: str) -> bytes:
        with open_run(self.run_dir) as store:
            with store.read_snapshot():
                data = views.program_detail(store, ident)
        return json.dumps(data, default=str, allow_nan=False).encode()


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server of one dashboard: its runs, the address it answers to, how often pages poll."""

    daemon_threads = True

    def __init__(self, runs: list[RunWatcher], host: str = "127.0.0.1", port: int = 0, poll_s: float = POLL_S,
                 quiet: bool = True):
        self.runs = runs
        self.poll_s = poll_s
        self.quiet = quiet
        self.boot = f"{os.getpid():x}{int(time.time()):x}"
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), DashboardHandler)
        self.port = self.server_address[1]
        # On this machine only, a request must name this server (a page elsewhere that rebinds its own DNS name to
        # 127.0.0.1 would name itself); served to the network on purpose, any name may reach it.
        self.allowed_hosts = ({f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]")}
                              if host in LOOPBACK else None)
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else (
            f"[{host}]" if ":" in host else host)
        self.url = f"http://{shown}:{self.port}/"


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "evorank-dashboard"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        empty = status in (HTTPStatus.NOT_MODIFIED, HTTPStatus.NO_CONTENT)
        if not empty:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and not empty:
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, default=str).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self):  # noqa: N802
        allowed = self.server.allowed_hosts
        if allowed is not None and self.headers.get("Host", "") not in allowed:
            return self._error(HTTPStatus.FORBIDDEN, "unknown Host header: open the address evorank printed")
        url = urlsplit(self.path)
        path = url.path
        try:
            if path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, static_text("index.html"), STATIC["index.html"])
            if path == "/favicon.ico":  # browsers ask for it; there is none
                return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            m = re.fullmatch(r"/static/([a-z]+\.(?:js|css))", path)
            if m and m.group(1) in STATIC:
                return self._send(HTTPStatus.OK, static_text(m.group(1)), STATIC[m.group(1)])
            if path == "/api/runs":
                return self._json(HTTPStatus.OK, {"runs": [r.describe() for r in self.server.runs],
                                                  "poll_ms": int(self.server.poll_s * 1000)})
            m = re.fullmatch(r"/api/runs/(\d+)/(overview|points|programs/([^/]+))", path)
            if not m or int(m.group(1)) >= len(self.server.runs):
                return self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")
            run = self.server.runs[int(m.group(1))]
            if m.group(2) == "overview":
                version, body = run.overview()
                tag = f'"{self.server.boot}-{run.index}-{version}"'
                if self.headers.get("If-None-Match") == tag:
                    return self._send(HTTPStatus.NOT_MODIFIED, b"", "", {"ETag": tag})
                return self._send(HTTPStatus.OK, body, "application/json", {"ETag": tag})
            if m.group(2) == "points":
                since = parse_qs(url.query).get("since", ["0"])[0]
                if not since.isdigit():
                    return self._error(HTTPStatus.BAD_REQUEST, "since must be a program id")
                return self._send(HTTPStatus.OK, run.points(int(since)), "application/json")
            return self._send(HTTPStatus.OK, run.program(unquote(m.group(3))), "application/json")
        except InspectError as e:
            return self._error(HTTPStatus.NOT_FOUND, str(e))
        except EvorankError as e:
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(e))
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as e:  # a bug or an unreadable archive: say so to the page instead of dropping the connection
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")

    def do_POST(self):  # noqa: N802 - nothing here changes anything
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard only reads")


def make_server(run_dirs, host: str = "127.0.0.1", port: int = 0, *, poll_s: float = POLL_S,
                min_interval: float = MIN_INTERVAL_S, duty: float = DUTY, quiet: bool = True) -> DashboardServer:
    """A dashboard server for these runs (each checked to be a run now), bound but not yet serving: call
    ``serve_forever()`` (in a thread, for a notebook or a test) and ``shutdown()``; its address is ``.url``."""
    runs = []
    for i, d in enumerate(run_dirs):
        open_run(d).close()  # a clear error now for a folder that holds no run
        runs.append(RunWatcher(i, d, min_interval=min_interval, duty=duty))
    if not runs:
        raise EvorankError("name at least one run folder")
    return DashboardServer(runs, host, port, poll_s=poll_s, quiet=quiet)


def cmd_dashboard(args) -> int:
    try:
        server = make_server(args.runs, args.host, args.port, poll_s=args.interval, quiet=not args.verbose)
    except OSError as e:
        if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise EvorankError(f"cannot serve on {args.host}:{args.port}: {e.strerror}; pass --port 0 for any free "
                           "port (or another --host)") from None
    if args.host not in LOOPBACK:
        print(f"evorank: warning: serving on {args.host}: anyone who can reach this address can read these runs "
              "(programs, prompts and replies included)", file=sys.stderr)
    print(f"dashboard: {server.url}  ({len(server.runs)} run(s); Ctrl-C stops)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
