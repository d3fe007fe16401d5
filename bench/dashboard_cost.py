"""What an open dashboard costs a running job: proposals per minute of one offline run on the demo suite while the
dashboard page is open and polling, against the same run while it is not.

Run by hand (not a test). One job runs (``evorank run --suite demo --llm offline``), with ``evorank dashboard``
serving it and a headless Chromium kept alive throughout; the run's time is cut into windows of ``--window``
seconds, and every other window the browser shows the dashboard page (which polls every ``--interval`` seconds,
draws the plots, grids and tables, and on opening loads every program's point) while in the others it shows a
blank page. Speed in each window is read from the archive afterwards (proposals archived per minute inside it).
Windows alternate many times within one job, so the machine's load, which drifts over minutes on a shared
machine, falls on both sides alike; two whole runs one after the other (with and without the page) differ by more
than the dashboard can cost when the load moves.

Also printed: the CPU time of the dashboard's server and of the browser (every process of each, from wait4) as a
share of the job's, a bound on what the job can lose when no core is idle.

Needs Chromium and websocket-client (pip install -e '.[test]'). Usage:
python bench/dashboard_cost.py [--iterations 600] [--window 20] [--interval 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from evorank.archive import RunStore

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--remote-allow-origins=*")


def proposal_times(run_dir: Path) -> list[float]:
    with RunStore.open(run_dir, readonly=True) as store:
        return sorted(p.created_at for p in store.summaries() if p.iteration > 0 and p.operator not in
                      ("seed", "migration"))


def cpu_of(proc: subprocess.Popen, wait: bool = True) -> float | None:
    """User + system CPU seconds of a finished child and of the descendants it waited for (wait4); None when
    ``wait`` is false and the child is still running. Reaps the child (so never ``poll()`` it as well)."""
    pid, status, usage = os.wait4(proc.pid, 0 if wait else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


class Browser:
    """A headless Chromium whose one page is sent to a URL over the DevTools protocol."""

    def __init__(self, chromium: str, profile: Path):
        import websocket

        self.proc = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        while not (port_file.is_file() and port_file.read_text().strip()):
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                break
            time.sleep(0.05)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.n = 0

    def go(self, url: str) -> None:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": "Page.navigate", "params": {"url": url}}))
        while json.loads(self.ws.recv()).get("id") != self.n:
            pass

    def close(self) -> float:
        self.ws.close()
        self.proc.terminate()
        return cpu_of(self.proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--window", type=float, default=20.0, help="seconds per window (default 20)")
    ap.add_argument("--interval", type=float, default=2.0, help="the page's polling interval (default 2 s)")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Chromium (Debian: apt-get install -y chromium)")
    root = Path(tempfile.mkdtemp(prefix="evorank-dashboard-cost-"))
    run_dir = root / "run"
    env = {**os.environ, "COLUMNS": "160"}
    print(f"load at start {os.getloadavg()}; {args.iterations} proposals, windows of {args.window:g} s, "
          f"the page polls every {args.interval:g} s", flush=True)
    job = subprocess.Popen([sys.executable, "-m", "evorank", "run", "--suite", "demo", "--llm", "offline",
                            "--iterations", str(args.iterations), "--seed", "0", "--quiet", "--out", str(run_dir)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    dash = browser = None
    windows: list[tuple[float, float, bool]] = []
    job_cpu = None
    try:
        while True:  # the dashboard needs the archive to exist
            try:
                RunStore.open(run_dir, readonly=True).close()
                break
            except Exception:
                time.sleep(0.05)
        log = open(root / "requests.log", "w")
        dash = subprocess.Popen([sys.executable, "-m", "evorank", "dashboard", str(run_dir), "--port", "0",
                                 "--interval", str(args.interval), "--verbose"], stdout=subprocess.PIPE, stderr=log,
                                text=True, env=env)
        url = dash.stdout.readline().split()[1]
        browser = Browser(chromium, root / "profile")
        while not proposal_times(run_dir):  # windows start with the proposals
            time.sleep(0.2)
        on = False
        while job_cpu is None:
            browser.go(url if on else "about:blank")
            start = time.time()
            while (job_cpu := cpu_of(job, wait=False)) is None and time.time() - start < args.window:
                time.sleep(0.1)
            windows.append((start, time.time(), on))
            on = not on
    finally:
        if job_cpu is None:
            job.kill()
            cpu_of(job)
        page_cpu = browser.close() if browser else 0.0
        server_cpu = 0.0
        if dash is not None:
            dash.terminate()
            server_cpu = cpu_of(dash)
    times = proposal_times(run_dir)
    polls = (root / "requests.log").read_text().count("GET /api/runs/0/overview")
    full = [w for w in windows if w[1] - w[0] >= args.window * 0.99]  # the last, cut-short window is left out
    rates = {True: [], False: []}
    for start, end, on in full:
        rates[on].append(sum(start <= t < end for t in times) / (end - start) * 60.0)
    shutil.rmtree(root, ignore_errors=True)
    for on in (False, True):
        print(f"page {'open  ' if on else 'closed'}: {len(rates[on])} windows, proposals/min "
              + " ".join(f"{r:.0f}" for r in rates[on]))
    # pairs of neighbouring windows (closed, open): each ratio compares moments seconds apart
    pairs = [rates[True][k] / rates[False][k] for k in range(min(len(rates[True]), len(rates[False])))
             if rates[False][k]]
    mean_on, mean_off = statistics.mean(rates[True]), statistics.mean(rates[False])
    print(f"mean proposals/min: closed {mean_off:.1f}, open {mean_on:.1f}, ratio {mean_on / mean_off:.3f}; "
          f"median of {len(pairs)} neighbouring pairs {statistics.median(pairs):.3f}  (target >= 0.95)")
    print(f"CPU: job {job_cpu:.1f} s; dashboard server {server_cpu:.1f} s, browser {page_cpu:.1f} s (both for the "
          f"whole job, start-up included) = {(server_cpu + page_cpu) / job_cpu:.1%} of the job's; {polls} polls; "
          f"load at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
