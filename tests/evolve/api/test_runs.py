"""The Python API's run objects: ``open_run`` on a run another process is writing returns consistent snapshots, and
the package's lazy attributes keep ``import evorank`` cheap and ``run_evolution`` reachable."""
import os
import subprocess
import sys
import time

import pytest

import evorank
from evorank.evolve.inspection.queries import InspectError

from live_writer import start_writer


def proposals_in(summaries) -> int:
    return sum(1 for p in summaries if p.iteration > 0 and p.operator not in ("seed", "migration"))


def test_open_run_on_a_run_being_written_returns_consistent_snapshots(tmp_path):
    run_dir = tmp_path / "live"
    writer = start_writer(run_dir, 400, 0.005)
    try:
        run = evorank.open_run(run_dir)
        seen, checked = [], 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and writer.poll() is None:
            with run.snapshot():
                first = run.status()
                programs = run.program_summaries()
                time.sleep(0.05)  # the writer commits several programs meanwhile
                second = run.status()
                again = run.program_summaries()
                best = run.best
            for key in ("proposals_done", "proposals", "best", "islands", "seeds", "last_iteration"):
                assert first[key] == second[key], key
            assert [p.id for p in again] == [p.id for p in programs] == list(range(1, len(programs) + 1))
            assert first["proposals_done"] == proposals_in(programs) == sum(first["proposals"].values())
            assert best.id == first["best"]["id"] and best.id <= programs[-1].id
            single = run.status()  # one call on its own is one state too
            assert single["proposals_done"] == sum(single["proposals"].values())
            seen.append(len(programs))
            checked += 1
        assert checked >= 3 and len(set(seen)) >= 3, f"the run did not move while it was read: {seen}"
        assert seen == sorted(seen)
    finally:
        writer.kill()
        writer.wait()


def test_open_run_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(InspectError, match="holds no run"):
        evorank.open_run(tmp_path)


def test_the_api_is_loaded_lazily_and_run_evolution_is_not_shadowed():
    code = ("import sys, evorank\n"
            "assert 'evorank.evolve.api.runs' not in sys.modules and 'evorank.archive' not in sys.modules\n"
            "import evorank.evolve.engine.loop\n"  # sets evorank.evolve: a function of that name would be gone
            "assert callable(evorank.run_evolution) and callable(evorank.open_run) and callable(evorank.evaluate)\n"
            "assert 'pandas' not in sys.modules\n"
            "assert 'run_evolution' in dir(evorank)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AttributeError):
        evorank.no_such_thing  # noqa: B018
