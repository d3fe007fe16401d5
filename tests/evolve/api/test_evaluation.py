"""``evorank.evaluate``: what it accepts (source text, a file, a seed, ``RUN:ID``), per-query values aligned with the
query ids, TREC run files only from an in-process evaluation, and the refusals it shares with ``evorank eval``."""
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


def test_refusals(tiny_collection):
    with pytest.raises(EvorankError, match="sandbox=False"):
        evorank.evaluate("bm25", datasets=[str(tiny_collection)], runs_out="x")
    with pytest.raises(EvorankError, match="leave sandbox on"):
        evorank.evaluate("bm25", datasets=[str(tiny_collection)], sandbox=False, cluster="tcp://127.0.0.1:1")
    with pytest.raises(EvorankError):
        evorank.evaluate("no_such_program.py", datasets=[str(tiny_collection)])
