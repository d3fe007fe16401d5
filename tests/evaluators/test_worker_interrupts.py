"""Ctrl-C in a terminal reaches every process of the foreground group, the evaluation workers included. A worker
leaves it to the parent (which finishes its step, then stops the workers): it ignores SIGINT from its very start,
so the candidate it runs does not fail, the pool does not break, and no worker prints a KeyboardInterrupt."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from evorank.evaluators.evaluate import load_topics
from evorank.evaluators.parallel import Evaluator, Limits
from evorank.evaluators.program.source import seed_path

from conftest import write_random_beir


def children() -> list[int]:
    """Pids of this process's child processes (from /proc)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


def signal_mask(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def wait_until_ignored(pid: int, sig_bit: int, deadline_s: float = 60.0) -> None:
    """Wait until process ``pid`` ignores the signal (``sig_bit``: its bit in the masks) and no longer holds it back.
    A worker still starting (the pool may start the others while one runs the first task) holds it back: it inherits
    the mask the parent set while submitting, until its initializer ignores the signal. At no moment may the signal
    be neither ignored nor held back: a Ctrl-C then would reach the worker."""
    deadline = time.monotonic() + deadline_s
    while True:
        ignored, held = signal_mask(pid, "SigIgn") & sig_bit, signal_mask(pid, "SigBlk") & sig_bit
        assert ignored or held, f"worker {pid} can take SIGINT: neither ignored nor held back"
        if ignored and not held:  # ignored, not merely held back
            return
        assert time.monotonic() < deadline, f"worker {pid} still holds SIGINT back after {deadline_s:g} s"
        time.sleep(0.02)


def test_workers_leave_ctrl_c_to_the_parent(tmp_path, cache_dir):
    topics = load_topics(str(write_random_beir(tmp_path / "c", n_docs=60, n_queries=20)))
    bm25 = seed_path("bm25").read_text()
    sigint = 1 << (signal.SIGINT - 1)
    with Evaluator([], n_workers=2, limits=Limits(timeout_s=60), topics=[topics]) as ev:
        assert ev.evaluate_trusted(bm25).suite.ok
        workers = children()
        assert workers
        for pid in workers:
            wait_until_ignored(pid, sigint)
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        again = ev.evaluate_trusted(bm25)
        assert again.suite.ok, again.failure_detail
        assert sorted(children()) == sorted(workers)  # the same workers, alive
