"""Start-up cost of the CLI: `evorank --help` and the inspection commands that only read a run's archive
must not import the heavy libraries (ranx, matplotlib, ir_datasets, dask, pandas, scipy.stats, openai).
Each command runs in a fresh interpreter with `-X importtime`, which lists every module it imported."""
import os
import subprocess
import sys

import pytest

from synthetic_run import make_collections, make_run

HEAVY = ("ranx", "matplotlib", "ir_datasets", "dask", "distributed", "pandas", "scipy.stats", "openai", "numba")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    make_run(root / "run", make_collections(root))
    return root / "run"


def imported_modules(tmp_path, *argv) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "evorank", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "160"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("argv", [
    ["status", "{run}"], ["status", "{run}", "--json"], ["top", "{run}"], ["show", "{run}", "best"],
    ["show", "{run}", "best", "--json"], ["diff", "{run}", "best"], ["lineage", "{run}", "best"],
], ids=lambda argv: " ".join(argv).replace("{run}", "RUN"))
def test_inspection_commands_import_nothing_heavy(run_dir, tmp_path, argv):
    modules = imported_modules(tmp_path, *[a.format(run=run_dir) for a in argv])
    assert "evorank.archive" in modules  # the probe sees what the command imported
    assert heavy_in(modules) == []


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["report", "--help"]])
def test_help_loads_only_the_parser(tmp_path, argv):
    modules = imported_modules(tmp_path, *argv)
    assert "evorank.evolve.cli.main" in modules
    assert heavy_in(modules) == []
    assert "numpy" not in modules and "evorank.archive" not in modules and "rich" not in modules
