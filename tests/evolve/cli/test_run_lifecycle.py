"""A run's life as a new user meets it: a start that fails leaves no run folder behind, a folder whose run never
archived a program is neither reported as resumable nor refused, a resume that raises the total is shown with the
new total everywhere, the export header and the views say which queries each figure is on, the closing hints
suggest only what this machine can run, and an interrupted run exits non-zero (130 for Ctrl-C, 143 for SIGTERM)
without a traceback from any of its processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evorank.archive import RunStore
from evorank.evolve.cli.main import main

REPO = Path(__file__).resolve().parents[3]
BAD_START = '''import numpy as np
# EVOLVE-BLOCK-START
def score(query, index, state):
    raise ValueError("this starting program cannot score")
# EVOLVE-BLOCK-END
'''


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run_args(out, *more) -> list[str]:
    return ["run", "--llm", "offline", "--suite", "demo", "--workers", "1", "--out", str(out), "--quiet", *more]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A 2-iteration demo run, made with `evorank run` in a folder that held the archive of a run that never
    archived a program (and a file of the user's); what `status` said of that folder before is kept."""
    run = tmp_path_factory.mktemp("lifecycle") / "run"
    RunStore.create(run, {"iterations": 3, "llm": "offline"}, 0, n_islands=2).close()
    (run / "notes.txt").write_text("the user's own file")
    with RunStore.open(run) as store:
        store.log_event("start", {"iterations": 3})  # and then the process died
    before = subprocess.run([sys.executable, "-m", "evorank", "status", str(run)], capture_output=True, text=True,
                            timeout=120, cwd=str(REPO), env=dict(os.environ, COLUMNS="200"))
    code = main(run_args(run, "--iterations", "2"))
    return run, before, code


def test_a_start_that_fails_leaves_no_run_folder(tmp_path, capsys):
    """BM25 evaluates, the second starting program does not: nothing of the run stays, neither its folder nor the
    folders made for it, and what was in the folder above before stays as it was."""
    bad = tmp_path / "bad.py"
    bad.write_text(BAD_START)
    (tmp_path / "mine.txt").write_text("the user's own file")
    before = snapshot(tmp_path)
    assert main(run_args(tmp_path / "new" / "deeper" / "run", "--start", f"bm25,{bad}", "--iterations", "3")) == 2
    err = capsys.readouterr().err
    assert "starting program" in err and "bad.py" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_a_folder_whose_run_never_ran_is_neither_resumable_nor_refused(demo_run):
    run, before, code = demo_run
    assert before.returncode == 0, before.stderr
    assert "never ran" in before.stdout and "killed" not in before.stdout and "resume" not in before.stdout
    assert code == 0  # `run --out` on that folder: a new run there
    assert (run / "notes.txt").read_text() == "the user's own file"
    with RunStore.open(run, readonly=True) as store:
        assert store.count() > 0


def test_resume_raising_the_total_shows_the_new_total(demo_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(demo_run[0], run)
    assert main(["run", "--resume", str(run), "--iterations", "3", "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(run), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["iterations_total"] == 3 and st["proposals_done"] == 3
    assert main(["status", str(run)]) == 0
    assert "iterations: 3/3 proposals" in capsys.readouterr().out
    assert main(["report", str(run), "-o", str(tmp_path / "r.html"), "--no-transfer"]) == 0
    assert "<div class=k>proposals</div><div class=v>3 / 3</div>" in (tmp_path / "r.html").read_text()


def test_views_say_the_same_of_validation(demo_run, capsys):
    from evorank.evolve.inspection.format import VALIDATION_ROLE

    run = demo_run[0]
    role = VALIDATION_ROLE.format(best_of=10)
    assert main(["top", str(run)]) == 0
    top = " ".join(capsys.readouterr().out.split())
    assert main(["status", str(run)]) == 0
    status = " ".join(capsys.readouterr().out.split())
    assert role in top and role in status
    assert "never used for selection" not in top


def test_the_export_header_says_which_queries_each_figure_is_on(demo_run, tmp_path, capsys):
    out = tmp_path / "scorer.py"
    assert main(["export", str(demo_run[0]), "best", "-o", str(out)]) == 0
    header = out.read_text().split('"""')[1]
    assert "on the run's train queries: 70% of each collection's judged queries" in header
    assert "on its validation queries (the other 30%)" in header
    assert "metrics on the train queries" in header and "metrics on the validation queries" in header
    best = header.split("program:     #")[1].split()[0]
    assert f"`evorank eval RUN:{best}` (RUN: the run folder above) scores this program on every judged query" in header
    assert "metrics measured in the run (" not in header


def test_the_closing_hint_suggests_held_out_only_where_it_is(demo_run, tmp_path, monkeypatch, capsys):
    from evorank.evolve.cli.live import transfer_hint

    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("EVORANK_DATA", str(empty))
    hint = transfer_hint(demo_run[0])
    assert "--suite heldout" not in hint and "evorank datasets" in hint
    for name in ("npl", "adi"):  # two of the held-out suite's collections here: only they are suggested
        shutil.copytree(REPO / "evaluators" / "data" / "demo", empty / name)
    hint = transfer_hint(demo_run[0])
    assert "--datasets local:npl,local:adi" in hint and "--suite heldout" not in hint


def start_run(tmp_path, iterations=400) -> tuple[subprocess.Popen, Path]:
    """`evorank run` in its own process group (as a shell runs a foreground job), once it has archived a proposal."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "evorank", *run_args(out, "--iterations", str(iterations))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=str(tmp_path), env=dict(os.environ, COLUMNS="200"))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        log = out / "run.log"
        if log.exists() and " iteration 1 " in log.read_text():
            return proc, out
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the run did not start: {proc.communicate()[1][-2000:]}")


@pytest.mark.slow
def test_sigterm_stops_the_run_with_143_and_the_resume_hint(tmp_path):
    proc, out = start_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr[-2000:]
    assert "run terminated" in stdout and f"evorank run --resume {out}" in stdout
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


@pytest.mark.slow
def test_ctrl_c_twice_exits_130_quietly(tmp_path):
    """Ctrl-C reaches every process of the terminal's foreground group: the run's workers too."""
    proc, out = start_run(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    stdout, stderr = proc.communicate(timeout=240)
    # 130, or killed by SIGINT itself when the second Ctrl-C came as the interpreter was exiting (a shell shows 130)
    assert proc.returncode in (130, -signal.SIGINT), stderr[-2000:]
    assert "run interrupted" in stdout and f"evorank run --resume {out}" in stdout
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "KeyboardInterrupt" not in stderr, \
        stderr[-3000:]
