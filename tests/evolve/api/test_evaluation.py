"""``evorank.evaluate``: what it accepts (source text, a file, a seed), per-query values aligned with the query ids,
TREC run files, and the refusals it shares with ``evorank eval`` (which prints what it returns)."""
import pytest

import evorank
from evorank.evaluators.errors import EvorankError
from evorank.evaluators.program.source import seed_path


def test_in_process_evaluation_of_source_text_with_run_files(tiny_collection, tmp_path):
    source = seed_path("bm25").read_text()
    result = evorank.evaluate(source, datasets=[str(tiny_collection)], sandbox=False, runs_out=tmp_path / "runs")
    seed = evorank.evaluate("bm25", datasets=str(tiny_collection), sandbox=False)
    assert result.ok and not result.sandboxed and result.metrics == seed.metrics
    per_query = result.per_query()
    assert set(per_query) == set(result.metrics[str(tiny_collection)])
    ids = result.query_ids[str(tiny_collection)]
    assert list(per_query["ndcg@10"]) == ids and len(ids) == result.collections[0].n_queries
    assert abs(sum(per_query["ndcg@10"].values()) / len(ids) - result.metrics[str(tiny_collection)]["ndcg@10"]) < 1e-12
    (run_file,) = (tmp_path / "runs").iterdir()
    assert {line.split()[0] for line in run_file.read_text().splitlines()} <= set(ids)
    with pytest.raises(KeyError):
        result.per_query("no-such-collection")


def test_refusals(tiny_collection, tmp_path):
    data = [str(tiny_collection)]
    with pytest.raises(EvorankError, match="drop --in-process"):
        evorank.evaluate("bm25", datasets=data, sandbox=False, cluster="tcp://127.0.0.1:1")
    with pytest.raises(EvorankError, match="use it with --cluster"):
        evorank.evaluate("bm25", datasets=data, shard_queries=10)
    exported = tmp_path / "scorer.py"  # what a run wrote runs only in the sandbox
    exported.write_text(seed_path("bm25").read_text())
    (tmp_path / "archive.sqlite").write_text("")
    with pytest.raises(EvorankError, match="in-process refused.*inside the run folder"):
        evorank.evaluate(str(exported), datasets=data, sandbox=False)
    with pytest.raises(EvorankError):
        evorank.evaluate("no_such_program.py", datasets=data)
