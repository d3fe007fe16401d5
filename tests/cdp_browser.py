"""A headless Chromium driven over the Chrome DevTools Protocol, for tests of pages that run script.

Why CDP over a websocket (the ``websocket-client`` package) rather than Selenium: Chromium speaks it itself, so
there is no second binary (chromedriver) whose version must match the browser's, and a test can read what it
needs straight from the page (``Runtime.evaluate``), click like a user (``Input.dispatchMouseEvent``) and collect
every console message and uncaught exception the page produced (``Runtime`` events).

Where Chromium (or websocket-client) is missing, ``browser_or_skip`` skips the test, except under
``EVORANK_REQUIRE_DATA=1`` (CI, whose .ci/run installs Chromium), where that is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-allow-origins=*", "--window-size=1280,1600")


def find_chromium() -> str | None:
    return next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)


def browser_or_skip() -> str:
    """The Chromium binary; skips (or fails in CI) when it or the websocket client is missing."""
    missing = []
    chromium = find_chromium()
    if chromium is None:
        missing.append("Chromium (Debian: apt-get install -y chromium)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        missing.append("websocket-client (pip install -e '.[test]')")
    if missing:
        why = "needs " + " and ".join(missing)
        if os.environ.get("EVORANK_REQUIRE_DATA") == "1":
            pytest.fail(f"the browser test {why}; CI must run it")
        pytest.skip(why)
    return chromium


class Page:
    """One Chromium page: ``call`` sends a DevTools command and returns its result; events are kept."""

    def __init__(self, chromium: str, profile: Path, timeout: float = 30.0):
        import websocket

        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._devtools_port(profile, timeout)
            deadline = time.monotonic() + timeout
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert pages, "Chromium opened no page"
            self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout,
                                                  suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.events: list[dict] = []
        self._id = 0
        self.call("Runtime.enable")
        self.call("Log.enable")
        self.call("Page.enable")

    def _devtools_port(self, profile: Path, timeout: float) -> int:
        path = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().split()[0])
            if self.proc.poll() is not None:
                raise AssertionError(f"Chromium exited with {self.proc.returncode} before it listened")
            time.sleep(0.05)
        raise AssertionError("Chromium did not open its DevTools port")

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0, what: str | None = None):
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the element ``selector`` names."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors and warnings, and browser log errors (CSP violations among them)."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(json.dumps(p.get("args"))[:500])
            elif method == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                out.append(p["entry"].get("text", "")[:500])
        return out

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
