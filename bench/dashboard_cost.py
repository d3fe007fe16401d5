"""What an open dashboard costs a running job: candidates per minute of the same offline run (same seed, demo
suite) with and without `evorank dashboard` serving it to a page that polls.

Run by hand (not a test). Each repeat runs the job twice, once alone and once with the dashboard following it
(ABBA order across repeats, so drift in the machine's load falls on both sides); the page is a real headless
Chromium when one is installed (it polls, renders the plots, grids and tables as a person's browser does), else a
Python client asking for what the page asks for. Speed is measured from the archive: proposals archived per
minute between the first and the last proposal (start-up, which the dashboard cannot slow, is left out). Same
seed, so both runs propose the same programs; the script checks that they archived the same number.

Prints each pair and the median ratio (with / without); the target is a ratio >= 0.95. On a machine whose load
moves while it runs, wall-clock speed drifts more than the dashboard can cost; so the script also prints the CPU
time the dashboard took (server and browser, every process of each) as a share of the CPU time the job took, which
does not depend on what else runs: on a machine with no idle core, that share is about what the job loses.

Usage: python bench/dashboard_cost.py [--iterations 150] [--repeats 3] [--interval 2]
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
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from evorank.archive import RunStore


def speed(run_dir: Path) -> tuple[int, float]:
    """(proposals, proposals per minute between the first and the last one)."""
    with RunStore.open(run_dir, readonly=True) as store:
        times = sorted(p.created_at for p in store.summaries() if p.iteration > 0 and p.operator not in
                       ("seed", "migration"))
    return len(times), (len(times) - 1) / (times[-1] - times[0]) * 60.0


def python_page(url: str, interval: float, stop: threading.Event) -> None:
    """What the page asks for, without a browser: the overview (with its ETag) and the new points."""
    etag, since = None, 0
    while not stop.is_set():
        req = urllib.request.Request(url + "api/runs/0/overview", headers={"If-None-Match": etag} if etag else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                etag = r.headers["ETag"]
                max_id = json.load(r)["max_id"]
            with urllib.request.urlopen(url + f"api/runs/0/points?since={since}", timeout=10) as r:
                since = json.load(r)["max_id"] or max_id
        except urllib.error.HTTPError as e:
            if e.code != 304:
                raise
        stop.wait(interval)


def cpu_of(proc: subprocess.Popen) -> float:
    """User + system CPU seconds of a finished child and of the descendants it waited for (wait4)."""
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def one_run(root: Path, name: str, args, watch: bool) -> tuple[int, float, float, list[float], int]:
    """(proposals, proposals per minute, the job's CPU seconds, the CPU seconds of the dashboard's server and of its
    browser, the page's polls)."""
    run_dir = root / name
    env = {**os.environ, "COLUMNS": "160"}
    job = subprocess.Popen([sys.executable, "-m", "evorank", "run", "--suite", "demo", "--llm", "offline",
                            "--iterations", str(args.iterations), "--seed", "0", "--quiet", "--out", str(run_dir)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    helpers: list[subprocess.Popen] = []
    stop = threading.Event()
    try:
        if watch:
            while True:  # the dashboard needs the archive to exist
                try:
                    RunStore.open(run_dir, readonly=True).close()
                    break
                except Exception:
                    if job.poll() is not None:
                        raise RuntimeError("the job ended before it created its archive")
                    time.sleep(0.05)
            log = open(root / f"{name}-requests.log", "w")
            dash = subprocess.Popen([sys.executable, "-m", "evorank", "dashboard", str(run_dir), "--port", "0",
                                     "--interval", str(args.interval), "--verbose"], stdout=subprocess.PIPE,
                                    stderr=log, text=True, env=env)
            helpers.append(dash)
            url = dash.stdout.readline().split()[1]
            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            if chromium and not args.no_browser:
                helpers.append(subprocess.Popen(
                    [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={root / (name + '-profile')}", "--remote-debugging-port=0", url],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            else:
                threading.Thread(target=python_page, args=(url, args.interval, stop), daemon=True).start()
        job_cpu = cpu_of(job)
    finally:
        stop.set()
        helper_cpu = []  # server, then browser
        for h in helpers:
            h.terminate()
            helper_cpu.append(cpu_of(h))
    polls = 0
    if watch:
        log.close()
        polls = (root / f"{name}-requests.log").read_text().count("GET /api/runs/0/overview")
    return (*speed(run_dir), job_cpu, helper_cpu, polls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interval", type=float, default=2.0, help="the page's polling interval (default 2 s)")
    ap.add_argument("--no-browser", action="store_true", help="poll from Python even if Chromium is installed")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="evorank-dashboard-cost-"))
    ratios, shares = [], []
    try:
        print(f"uptime: {os.getloadavg()}; page: "
              f"{'headless Chromium' if shutil.which('chromium') and not args.no_browser else 'Python poller'}, "
              f"every {args.interval:g} s", flush=True)
        for r in range(args.repeats):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {}
            for watch in order:
                got[watch] = one_run(root, f"r{r}-{'with' if watch else 'alone'}", args, watch)
            (n0, alone, cpu0, _, _), (n1, watched, cpu1, helpers, polls) = got[False], got[True]
            dash_cpu = sum(helpers)
            assert n0 == n1, f"the two runs archived {n0} and {n1} proposals"
            ratios.append(watched / alone)
            shares.append(dash_cpu / cpu1)
            print(f"repeat {r}: alone {alone:.1f}/min, with the dashboard {watched:.1f}/min, ratio {watched / alone:.3f}"
                  f" ({n0} proposals each); CPU: job {cpu0:.1f} s alone, {cpu1:.1f} s watched, dashboard {dash_cpu:.1f} s "
                  f"(server {helpers[0]:.1f} s, page {sum(helpers[1:]):.1f} s)"
                  f" = {dash_cpu / cpu1:.1%} of the job's, {polls} polls; load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"median ratio (with / without): {statistics.median(ratios):.3f}  (target >= 0.95); dashboard CPU as a "
              f"share of the job's: median {statistics.median(shares):.1%}, max {max(shares):.1%}; "
              f"load now {os.getloadavg()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
