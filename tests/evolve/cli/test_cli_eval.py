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
    assert main(["eval", str(bad), "--datasets", str(tiny_collection), "--sandbox", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["collections"][0]["error_reason"] == "forbidden:import os"
    assert not marker.exists()
