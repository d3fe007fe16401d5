"""`evorank export` writes only verified code: a run whose best program escapes the language layer (and carries
a payload that would fire on import) is refused with the line and the reason; `--unverified` writes it under a
banner that says so. Nothing exported here is imported or run."""
import ast
import json

import pytest

from evorank.archive import FeatureDim, GridSpec, Islands, ProgramRecord, RunStore
from evorank.evaluators.program.source import seed_path, split_block
from evorank.evolve.cli.main import main

BM25 = seed_path("bm25").read_text(encoding="utf-8")
SPLIT = split_block(BM25)
ESCAPE = '''import functools
import heapq

U = "_" * 2


def grab(obj, name):
    got = []

    class Catch:
        def __setattr__(self, key, value):
            got.append(value)

    functools.update_wrapper(Catch(), obj, assigned=(name,), updated=())
    return got[0]


MARKER = "/tmp/evorank-export-test-" + "never-written"
grab(heapq.nlargest, U + "builtins" + U)["exec"]("open(MARKER, 'w')", {"MARKER": MARKER})
'''
HOSTILE = SPLIT.join(ESCAPE + SPLIT.block)
METRICS = {"builtin:demo": {"ndcg@10": 0.5, "recall@100": 0.8, "recall@1000": 0.9, "map@1000": 0.4}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run whose best program is the hostile one (metrics written as a run would, nothing evaluated)."""
    run_dir = tmp_path_factory.mktemp("export_verified") / "run"
    grid = GridSpec((FeatureDim("latency_ratio", (0.5, 1.0, 2.0), log=True),))
    store = RunStore.create(run_dir, {"iterations": 2, "datasets": ["builtin:demo"], "seeds": ["bm25"],
                                      "fitness": "rankevolve"}, 0, grid=grid, n_islands=1, synchronous="NORMAL")
    islands = Islands.from_store(store)
    seed = ProgramRecord(code=BM25, operator="seed", island=0, generation=0, iteration=0, metrics=METRICS,
                         fitness=0.5, latency_ratio=1.0, features={"seed_name": "bm25"}, stage=2)
    islands.add(store, seed)
    hostile = ProgramRecord(code=HOSTILE, operator="full", island=0, generation=1, iteration=1,
                            parent_ids=(seed.id,), metrics=METRICS, fitness=0.9, latency_ratio=1.6, stage=2)
    islands.add(store, hostile)
    store.close()
    return run_dir, seed, hostile


def test_an_escaping_best_program_is_refused(run, tmp_path, capsys):
    run_dir, _, hostile = run
    out = tmp_path / "scorer.py"
    assert main(["export", str(run_dir), "best", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert not out.exists()
    assert f"program #{hostile.id} was not exported" in err and "--unverified" in err
    escape_line = SPLIT.head.count("\n") + 1 + ESCAPE.splitlines().index("    class Catch:")
    assert f"line {escape_line}: ClassDef is not in the exportable subset" in err
    assert "functools.update_wrapper is not in the exportable subset" in err
    assert main(["export", str(run_dir), "best", "-o", str(out), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["path"] is None and info["verified"] is False and info["program_id"] == hostile.id
    assert {"line": escape_line, "reason": "export:construct ClassDef",
            "message": "ClassDef is not in the exportable subset (plain functions over arrays)"} in info["violations"]


def test_unverified_writes_it_under_a_banner(run, tmp_path, capsys):
    run_dir, _, hostile = run
    out = tmp_path / "unverified.py"
    assert main(["export", str(run_dir), "best", "-o", str(out), "--unverified"]) == 0
    captured = capsys.readouterr()
    assert "UNVERIFIED" in captured.out and "Read it first" in captured.err and "python -c" not in captured.out
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# ====") and "# UNVERIFIED: program #" in text.splitlines()[1]
    banner = text[:text.index('"""')]
    assert "Importing this module runs the evolved code with your" in banner and "ClassDef" in banner
    tree = ast.parse(text)  # read, never imported
    assert ast.get_docstring(tree).startswith(f"UNVERIFIED Evolved ranking function #{hostile.id}")
    provenance = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PROVENANCE")
    assert ast.literal_eval(provenance)["verified"] is False


def test_a_verified_program_says_so(run, tmp_path, capsys):
    run_dir, seed, _ = run
    out = tmp_path / "bm25_scorer.py"
    assert main(["export", str(run_dir), str(seed.id), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "verified: within the exportable subset" in printed and "from bm25_scorer import Retriever" in printed
    text = out.read_text(encoding="utf-8")
    assert "UNVERIFIED" not in text and "verified:    yes" in text
    tree = ast.parse(text)
    provenance = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PROVENANCE")
    assert ast.literal_eval(provenance)["verified"] is True
