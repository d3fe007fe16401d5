"""What `evorank run` says about continuing a run: --iterations is the total for the whole run, --resume DIR
continues to the saved total, --resume DIR --iterations N raises it to N. The --help text, the README and
the hint printed at the end of a run must all say so."""
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from evorank.evaluators.program.source import split_block

from evorank.archive import RunStore
from evorank.evolve.cli.main import build_parser
from evorank.evolve.cli.run import print_run_summary, resume_hint

from synthetic_run import make_collections, make_run

REPO = Path(__file__).resolve().parents[3]


def test_resume_hint_plain_until_the_total_then_to_go_further():
    run = Path("runs/x")
    assert resume_hint(run, 30, 100, "interrupted", None).startswith("evorank run --resume runs/x   #")
    assert "70 of 100 proposals left" in resume_hint(run, 30, 100, "interrupted", None)
    done = resume_hint(run, 100, 100, "completed", None)
    assert done.startswith("evorank run --resume runs/x --iterations 200") and "to go further" in done
    spent = resume_hint(run, 40, 100, "budget", 5.0)
    assert spent.startswith("evorank run --resume runs/x --budget-usd 10") and "budget is spent" in spent


def test_run_help_and_readme_agree_on_totals(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--iterations is the total for the whole run" in text
    assert "--resume DIR continues to the saved total, --resume DIR --iterations N raises it to N" in text
    assert "same total" not in text
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "`--resume DIR` continues to the saved total, and `--resume DIR --iterations N` raises it to N" in readme
    assert "new total" not in readme


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("hints")
    _, recs = make_run(root / "run", make_collections(root))
    return root / "run", recs


def summary_text(run_dir, recs, total, stop_reason, best):
    from rich.console import Console

    con = Console(record=True, width=200)
    from evorank.evolve.engine.loop import RunStats

    stats = RunStats(accepted=1)
    with RunStore.open(run_dir, readonly=True) as store:
        engine = SimpleNamespace(store=store, stats=stats, stop_reason=stop_reason, seed_records={"bm25": recs["bm25"]},
                                 cfg=SimpleNamespace(iterations=total, budget_usd=None))
        print_run_summary(con, engine, best, run_dir)
    return con.export_text()


def test_end_of_run_hint_interrupted_and_completed(syn, tmp_path):
    run_dir, recs = syn
    text = summary_text(run_dir, recs, 12, "interrupted", None)  # 8 of 12 proposals archived
    assert "8/12 proposals" in text and f"evorank run --resume {run_dir}   # continue" in text
    assert "--iterations" not in text
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)  # the summary writes best.py
    text = summary_text(copy, recs, 8, "completed", recs["k1"])
    written = split_block((copy / "best.py").read_text())  # the program, under a docstring describing it
    assert "8/8 proposals" in text and written.block == split_block(recs["k1"].code).block
    assert written.head.startswith(f'"""Ranking program #{recs["k1"].id} evolved by evorank')
    assert f"evorank run --resume {copy} --iterations 16   # to go further" in text
