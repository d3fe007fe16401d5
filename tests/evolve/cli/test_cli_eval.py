import json

import pytest

from evorank.evolve.cli.main import main


def test_eval_json_and_runs(tiny_collection, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["eval", "bm25", "--datasets", str(tiny_collection), "--json", "--runs-out", str(runs)]) == 0
    out = json.loads(capsys.readouterr().out)
    (coll,) = out["collections"]
    assert coll["n_queries"] == 3 and coll["metrics"]["recall@1000"] == 1.0
    # 8 documents: R@100 does not count toward fitness on a collection under 1,000 documents (retrieving
    # everything would earn it), so the fitness is nDCG@10 alone
    assert coll["n_docs"] < 1000 and out["fitness"] == pytest.approx(coll["metrics"]["ndcg@10"])
    (run_file,) = runs.iterdir()
    first = run_file.read_text().splitlines()[0].split()
    assert first[0] == "q1" and first[1] == "Q0" and first[3] == "1" and first[2] in ("d1", "d7")


def test_eval_table_and_latency_preset(tiny_collection, capsys):
    assert main(["eval", "ql_dirichlet", "--datasets", str(tiny_collection), "--fitness", "latency-aware"]) == 0
    out = capsys.readouterr().out
    assert "nDCG@10" in out and "fitness (latency-aware)" in out and "x BM25" in out


def test_eval_failing_program_reports_reason(tiny_collection, tmp_path, capsys):
    bad = tmp_path / "bad.py"
    src = (tmp_path / "x").parent  # noqa: F841
    from evorank.evaluators.program.source import seed_path

    text = seed_path("bm25").read_text().replace("return np.where(matched, scores, -np.inf)", "return [0.0]")
    bad.write_text(text)
    assert main(["eval", str(bad), "--datasets", str(tiny_collection)]) == 1
    assert "invalid_scores:type" in capsys.readouterr().out


def test_errors_are_one_line_not_tracebacks(capsys):
    assert main(["eval", "bm25", "--datasets", "beir/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evorank: error: unknown collection 'beir/nope'") and "Traceback" not in err
    assert main(["eval", "nonexistent_seed", "--datasets", "x"]) == 2
    assert main(["eval", "bm25", "--suite", "nosuch"]) == 2
    assert "unknown suite" in capsys.readouterr().err


@pytest.mark.shared_data
def test_datasets_lists_suites_offline(shared_env, capsys):
    assert main(["datasets", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"quick", "dev", "heldout", "rankevolve12", "rankevolve-transfer"}
    dev = {c["address"]: c for c in out["dev"]["collections"]}
    assert dev["local:cisi"]["status"] in ("available", "indexed") and dev["local:cisi"]["judged_queries"] == 76
    assert dev["beir/scifact/test"]["docs"] == 5183
    assert {c["status"] for c in out["rankevolve12"]["collections"] if c["address"] == "bright/biology"} == {"needs download"}
    assert len(out["rankevolve-transfer"]["collections"]) == 16


def test_sandboxed_eval_never_runs_the_file_here(tiny_collection, tmp_path, capsys):
    """`eval FILE --sandbox` reads the file and hands it to the checks and the jail; its module body must not
    execute in the calling process first."""
    from evorank.evaluators.program.source import seed_path

    marker = tmp_path / "ran-here"
    bad = tmp_path / "side_effect.py"
    bad.write_text(seed_path("bm25").read_text().replace(
        "# EVOLVE-BLOCK-START", f"# EVOLVE-BLOCK-START\nimport os\nos.makedirs({str(marker)!r})", 1))
    assert main(["eval", str(bad), "--datasets", str(tiny_collection), "--checked", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["collections"][0]["error_reason"] == "forbidden:import os"
    assert not marker.exists()


# -- evolved programs never run unjailed ------------------------------------------------------------

HOST_ONLY = "EVORANK_TEST_HOST_ONLY"  # set here only: workers blank it, the jail scrubs the environment


def payload_program(marker) -> str:
    """BM25 whose module body creates ``marker`` when it runs where the host's environment is visible."""
    from evorank.evaluators.program.source import seed_path

    return seed_path("bm25").read_text().replace("# EVOLVE-BLOCK-START", (
        "# EVOLVE-BLOCK-START\nimport os\n"
        f"if os.environ.get({HOST_ONLY!r}):\n    os.makedirs(os.environ[{HOST_ONLY!r}], exist_ok=True)"), 1)


def make_payload_run(run_dir, code: str):
    """A run whose best program is ``code`` (written through the archive API, with its ``best.py``)."""
    from evorank.archive import FeatureDim, GridSpec, Islands, ProgramRecord, RunStore
    from evorank.evaluators.program.source import seed_path

    grid = GridSpec((FeatureDim("complexity", (200.0, 400.0), log=True),))
    store = RunStore.create(run_dir, {"iterations": 1, "datasets": ["x"], "seeds": ["bm25"], "fitness": "rankevolve",
                                      "islands": 1, "seed": 0}, 0, grid=grid, n_islands=1)
    islands = Islands.from_store(store)
    for i, (src, op, fit) in enumerate(((seed_path("bm25").read_text(), "seed", 0.5), (code, "full", 0.9))):
        islands.add(store, ProgramRecord(code=src, operator=op, island=0, generation=i, iteration=i, fitness=fit,
                                         metrics={"x": {"ndcg@10": fit}}, stage=2,
                                         features={"seed_name": "bm25"} if op == "seed" else {}))
    store.close()
    (run_dir / "best.py").write_text(code)


def test_a_runs_programs_never_run_outside_the_jail(tiny_collection, tmp_path, monkeypatch, capsys):
    """The payload fires wherever it runs with the host's environment (shown first, on a copy that is the user's
    own, with --in-process); `eval RUN:best` and `eval RUN/best.py` run it only in the jail, where it never
    fires, and refuse --in-process with one line (exit 2), as for a copy that carries the run's or export's mark."""
    marker = tmp_path / "ran-on-the-host"
    monkeypatch.setenv(HOST_ONLY, str(marker))
    code = payload_program(marker)
    mine = tmp_path / "mine.py"
    mine.write_text(code)
    data = ["--datasets", str(tiny_collection), "--json"]
    assert main(["eval", str(mine), *data]) == 1  # the default: the jail (whose language layer refuses `import os`)
    assert not marker.exists()
    assert main(["eval", str(mine), "--in-process", *data]) == 0 and marker.exists()  # the payload is live
    marker.rmdir()

    run = tmp_path / "run"
    make_payload_run(run, code)
    copied = tmp_path / "copied.py"  # a run's output copied out of its folder keeps its docstring's mark
    copied.write_text('"""Ranking program #2 evolved by evorank in run r from the bm25 seed."""\n' + code)
    for program in (f"{run}:best", str(run / "best.py"), str(run), str(copied)):
        capsys.readouterr()
        assert main(["eval", program, *data, "--in-process"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("evorank: error: --in-process refused") and err.count("\n") == 1, err
        assert main(["eval", program, *data]) == 1  # checked as in the run: refused before it runs
        assert json.loads(capsys.readouterr().out)["collections"][0]["error_reason"] == "forbidden:import os"
        assert not marker.exists()
    assert main(["eval", "bm25", *data, "--compare", f"{run}:best", "--in-process"]) == 2
    assert not marker.exists()


# -- significance and run files from the sandbox -----------------------------------------------------

def test_eval_compare_reports_paired_significance(tiny_collection, capsys):
    from evorank.evaluators.significance import paired_test

    assert main(["eval", "ql_dirichlet", "--datasets", str(tiny_collection), "--compare", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sig = out["compare"]["significance"]
    assert sig["baseline"] == "bm25" and sig["metrics"] == ["ndcg@10", "recall@100"]
    name = str(tiny_collection)
    row = sig["collections"][name]["ndcg@10"]
    assert set(row) >= {"n", "mean", "baseline_mean", "delta", "ci_low", "ci_high", "p_randomization", "p_ttest",
                        "p_holm", "wins", "ties", "losses", "verdict"}
    assert row["n"] == 3 and row["wins"] + row["ties"] + row["losses"] == 3
    assert row["mean"] == pytest.approx(out["collections"][0]["metrics"]["ndcg@10"], abs=1e-12)
    assert row["delta"] == pytest.approx(out["compare"]["collections"][name]["ndcg@10_delta"], abs=1e-12)
    assert row["p_holm"] == row["p_randomization"]  # one collection: nothing to correct
    assert sig["pooled"]["ndcg@10"]["n"] == 3 and sig["pooled"]["ndcg@10"]["p_holm"] is None
    # the same numbers from the per-query values of the two programs run in this process
    from evorank.evaluators.evaluate import evaluate_on, load_topics
    from evorank.evaluators.program.source import load_program

    t = load_topics(name)
    ours, base = (evaluate_on(load_program(p), t)[0].per_query["ndcg@10"] for p in ("ql_dirichlet", "bm25"))
    expected = paired_test(ours, base)
    assert row["p_randomization"] == pytest.approx(expected.p_randomization)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))
    capsys.readouterr()
    assert main(["eval", "ql_dirichlet", "--datasets", str(tiny_collection), "--compare", "bm25"]) == 0
    text = capsys.readouterr().out
    assert "nDCG@10: ql_dirichlet vs bm25" in text and "p rand" in text and "W/T/L" in text


def test_runs_out_from_the_sandbox_equals_in_process(tiny_collection, tmp_path, capsys):
    """--runs-out of a sandboxed evaluation writes the rankings the worker rebuilt: valid TREC run files, the same
    as the in-process ones."""
    data = ["--datasets", str(tiny_collection), "--json"]
    assert main(["eval", "ql_dirichlet", *data, "--runs-out", str(tmp_path / "jail")]) == 0
    assert main(["eval", "ql_dirichlet", *data, "--runs-out", str(tmp_path / "here"), "--in-process"]) == 0
    (jailed,), (here,) = list((tmp_path / "jail").iterdir()), list((tmp_path / "here").iterdir())
    assert jailed.name == here.name and jailed.read_text() == here.read_text()
    rows = [line.split() for line in jailed.read_text().splitlines()]
    assert rows and all(len(r) == 6 and r[1] == "Q0" and r[5] == "ql_dirichlet" for r in rows)
    by_query: dict[str, list] = {}
    for qid, _, doc, rank, score, _ in rows:
        by_query.setdefault(qid, []).append((int(rank), float(score), doc))
    assert set(by_query) == {"q1", "q2", "q3"}
    for ranked in by_query.values():
        assert [r for r, _, _ in ranked] == list(range(1, len(ranked) + 1))
        assert all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:]))
        assert {d for _, _, d in ranked} <= {f"d{i}" for i in range(1, 9)} and len({d for *_, d in ranked}) == len(ranked)


def test_run_output_marks_are_what_runs_and_export_write():
    """The marks `eval` looks for are the exported module's fixed header sentence and the opening of the docstring
    that best.py and exported programs carry: if either text changes, this fails instead of the refusal."""
    from types import SimpleNamespace

    from evorank.evolve.engine.provenance import program_docstring
    from evorank.evolve.inspection.export import RUN_OUTPUT_MARKS, TEMPLATE, run_output_mark

    header = TEMPLATE.read_text(encoding="utf-8").split("@@PROVENANCE@@")[0]
    assert run_output_mark(header) == RUN_OUTPUT_MARKS[0]
    rec = SimpleNamespace(id=7, fitness=0.5, features={}, code="", operator="full", response=None)
    assert run_output_mark(program_docstring(rec, [], "bm25", "r")) == RUN_OUTPUT_MARKS[1]
    from evorank.evaluators.program.source import program_path, seed_path

    shipped = [*seed_path("bm25").parent.glob("*.py"), *program_path("examples/rm3.py").parent.glob("*.py")]
    assert len(shipped) > 4 and all(run_output_mark(p.read_text()) is None for p in shipped)  # seeds, examples
