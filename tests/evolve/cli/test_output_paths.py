"""Every command that writes a path refuses one it cannot write before doing any work: one line naming the path and
the cause, exit status 2, and nothing created."""
from __future__ import annotations

from pathlib import Path

import pytest

from evorank.evolve.cli.main import main

from synthetic_run import make_collections, make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    make_run(root / "run", make_collections(root / "colls"))
    return root / "run"


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every path under ``folders`` with its content, but SQLite's side files (any reader of an archive makes them)."""
    return {str(p): p.read_bytes() if p.is_file() else b"" for f in folders for p in sorted(f.rglob("*"))
            if not p.name.endswith(("-shm", "-wal"))}


def refused(argv, path, cause, capsys, *watched: Path) -> None:
    before = snapshot(*watched)
    assert main(argv) == 2, argv
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evorank: error:"), err
    assert str(path) in lines[0] and cause in lines[0], lines[0]
    assert snapshot(*watched) == before, argv


CASES = [  # (command, the path it is given, what the line must say)
    (["run", "--llm", "offline", "--suite", "demo", "--iterations", "2", "--out"], "{file}/run", "is a file"),
    (["export", "{run}", "best", "-o"], "{file}/scorer.py", "is a file"),
    (["export", "{run}", "best", "-o"], "{dir}", "it is a folder"),
    (["report", "{run}", "--no-transfer", "-o"], "{file}/r.html", "is a file"),
    (["eval", "bm25", "--suite", "demo", "--runs-out"], "{file}/runs", "is a file"),
    (["eval", "bm25", "--suite", "demo", "--runs-out"], "{file}", "it is a file"),
]


@pytest.mark.parametrize("command,target,cause", CASES, ids=[f"{c[0]} {t}" for c, t, _ in CASES])
def test_a_path_under_a_file_or_of_the_wrong_kind(command, target, cause, run_dir, tmp_path, capsys):
    file = tmp_path / "some_file.py"
    file.write_text("x = 1\n")
    (tmp_path / "folder").mkdir()
    path = target.format(file=file, dir=tmp_path / "folder")
    argv = [a.format(run=run_dir) for a in command] + [path]
    refused(argv, path, cause, capsys, tmp_path, run_dir)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nothing can be created")
@pytest.mark.parametrize("command", [
    ["run", "--llm", "offline", "--suite", "demo", "--iterations", "2", "--out", "/proc/x"],
    ["export", "{run}", "best", "-o", "/proc/x/s.py"],
    ["report", "{run}", "-o", "/proc/x/r.html"],
    ["eval", "bm25", "--suite", "demo", "--runs-out", "/proc/x/runs"],
], ids=lambda c: c[0])
def test_a_location_that_accepts_nothing(command, run_dir, capsys):
    argv = [a.format(run=run_dir) for a in command]
    refused(argv, argv[-1], "/proc does not accept new files or folders", capsys, run_dir)
    assert not Path("/proc/x").exists()


def test_the_check_leaves_nothing_and_accepts_what_can_be_written(tmp_path):
    from evorank.evaluators.errors import OutputPathError, check_output_path

    check_output_path(tmp_path / "a" / "b" / "report.html")
    check_output_path(tmp_path / "a" / "run", folder=True)
    (tmp_path / "old.py").write_text("")
    check_output_path(tmp_path / "old.py")  # an existing file is overwritten
    check_output_path(tmp_path, folder=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.py"]
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_path(tmp_path)
    with pytest.raises(OutputPathError, match="is a file"):
        check_output_path(tmp_path / "old.py", folder=True)
