"""A mistaken command cannot rewrite a run: a refused `run` changes nothing in the folder, read-only locations
get one clear line, read-only archives can be inspected, and stopping a pool with queued work is quiet."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evorank.archive import RunStore
from evorank.evolve.cli.main import main

from synthetic_run import make_collections, make_run

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def run_dir(tmp_path, cache_dir):
    collections = make_collections(tmp_path / "colls")
    out = tmp_path / "run"
    make_run(out, collections)
    (out / "config.toml").write_text(f'iterations = 400\nseed = 4\nllm = "offline"\ndatasets = ["{collections[0]}"]\n')
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_resume_changes_nothing(run_dir, capsys):
    """While another process writes the run, `--resume --iterations 50 --seed 9` is refused before it writes."""
    holder = RunStore.open(run_dir)  # the writer lock, as a running `evorank run` holds it
    try:
        before = snapshot(run_dir)
        code = main(["run", "--resume", str(run_dir), "--iterations", "50", "--seed", "9", "--quiet"])
        after = snapshot(run_dir)
    finally:
        holder.close()
    assert code == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "nothing was changed" in err and "Traceback" not in err
    assert after == before  # config.toml (iterations 400, seed 4) and everything else untouched


def _read_only(*paths: Path) -> list[str]:
    """A shell prefix that runs the rest of the command with ``paths`` mounted read-only (private mount ns)."""
    binds = " && ".join(f"mount --bind {p} {p} && mount -o remount,bind,ro {p}" for p in paths)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", binds + ' && exec "$@"', "sh"]


@pytest.fixture
def read_only_mounts(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        ok = os.geteuid() == 0 and shutil.which("unshare") and subprocess.run(
            _read_only(probe) + ["sh", "-c", f"! touch {probe}/x"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("needs root and unshare(1) to make a read-only bind mount")
    return _read_only


def evorank(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run(prefix + [sys.executable, "-m", "evorank", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(REPO))


def test_read_only_locations_get_one_clear_line(run_dir, tmp_path, read_only_mounts):
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix = read_only_mounts(ro)
    for args in (["run", "--llm", "offline", "--datasets", "builtin:demo", "--iterations", "2", "--out",
                  str(ro / "run")],
                 ["report", str(run_dir), "-o", str(ro / "report.html"), "--no-transfer"],
                 ["export", str(run_dir), "best", "-o", str(ro / "scorer.py")]):
        res = evorank(prefix, *args)
        assert res.returncode == 2, (args, res.stderr[-2000:])
        lines = [line for line in res.stderr.splitlines() if line.startswith("evorank: error:")]
        assert len(lines) == 1 and str(ro) in lines[0] and "Read-only file system" in lines[0], res.stderr[-2000:]
        assert "Traceback" not in res.stderr


def test_an_archive_on_read_only_media_can_be_inspected(run_dir, read_only_mounts):
    prefix = read_only_mounts(run_dir)
    for args in (["status", str(run_dir)], ["top", str(run_dir)], ["show", str(run_dir), "best", "--plain"],
                 ["lineage", str(run_dir), "best"]):
        res = evorank(prefix, *args)
        assert res.returncode == 0, (args, res.stdout[-1000:], res.stderr[-2000:])


STOP_WITH_QUEUED_WORK = r"""
import os, sys, threading, tempfile, time
from pathlib import Path
from conftest import write_random_beir
from evorank.evaluators.evaluate import load_topics
from evorank.evaluators.parallel import Evaluator, Limits
from evorank.evaluators.program.source import seed_path, split_block
root = Path(tempfile.mkdtemp())
os.environ["EVORANK_CACHE"] = str(root / "cache")
topics = load_topics(str(write_random_beir(root / "c", n_docs=60, n_queries=20)))
split = split_block(seed_path("bm25").read_text())
slow = split.join("import time\n" + split.block.replace("    rows = state", "    time.sleep(0.01)\n    rows = state"))
for delay in (0.4, 0.5, 0.6, 0.7, 0.8):
    ev = Evaluator([], n_workers=2, limits=Limits(timeout_s=20), topics=[topics])
    ev._unsafe_skip_language_checks = True
    ev.evaluate([slow])
    batch = [slow.replace("K1 = 0.9", f"K1 = {0.5 + i / 100}") for i in range(40)]
    threading.Thread(target=lambda: ev.evaluate(batch), daemon=True).start()
    time.sleep(delay)   # as when a second Ctrl-C stops the run: many tasks still queued
    ev.close()
print("closed")
"""


@pytest.mark.slow
def test_stopping_a_pool_with_queued_work_prints_no_traceback():
    """loky's manager thread can trip over its queue when a pool with queued tasks is killed (the KeyError a
    second Ctrl-C used to print); closing the Evaluator keeps that off the terminal."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", STOP_WITH_QUEUED_WORK], capture_output=True, text=True, timeout=300,
                         env=env, cwd=str(REPO))
    assert res.returncode == 0 and res.stdout.strip() == "closed", res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "KeyError" not in res.stderr, res.stderr[-3000:]


def test_an_in_process_run_leaves_logging_as_it_found_it(tmp_path, caplog):
    """`evorank run` logs to run.log and stderr while it runs; afterwards the `evorank` logger is as before (a
    handler left on pytest's or a notebook's stderr would write to a closed stream and swallow later warnings)."""
    import logging

    log = logging.getLogger("evorank")
    before = (list(log.handlers), log.propagate, log.level)
    code = main(["run", "--llm", "offline", "--suite", "demo", "--iterations", "2", "--workers", "1",
                 "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    assert (list(log.handlers), log.propagate, log.level) == before
    assert (tmp_path / "run" / "run.log").read_text()  # the run did log
    logging.getLogger("evorank.evaluators.parallel").warning("a warning after the run")
    assert "a warning after the run" in caplog.text
