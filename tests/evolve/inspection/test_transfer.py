"""What keeps search honest about transfer: the validation split, the collection-size rule that stops
retrieve-everything programs from winning on small collections, and the robust fitness preset."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import write_random_beir
from evorank.evaluators.evaluate import evaluate_on, load_topics, measure, subset_ranking, subset_topics, summarize
from evorank.evaluators.metrics import FitnessSpec, fitness, fitness_spec
from evorank.evaluators.parallel import Evaluator, Limits
from evorank.evaluators.program.source import compile_program, seed_path, split_block
from evorank.evaluators.splits import MIN_QUERIES_TO_SPLIT, relevant_counts, validation_split

BM25 = seed_path("bm25").read_text(encoding="utf-8")
SPLIT = split_block(BM25)


# -- the validation split ---------------------------------------------------------------------------

def test_split_is_seeded_disjoint_and_stratified():
    rng = np.random.default_rng(0)
    n_rel = rng.integers(1, 40, size=300)
    train, val = validation_split(n_rel, 0.3, "coll", seed=4)
    again_train, again_val = validation_split(n_rel, 0.3, "coll", seed=4)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not set(train) & set(val) and sorted([*train, *val]) == list(range(300))
    assert len(val) == 90
    other = validation_split(n_rel, 0.3, "coll", seed=5)[1]
    assert not np.array_equal(val, other) and not np.array_equal(val, validation_split(n_rel, 0.3, "x", 4)[1])
    strata = np.floor(np.log2(n_rel)).astype(int)
    for s in np.unique(strata):  # each stratum split in proportion (within one query)
        members = np.flatnonzero(strata == s)
        assert abs(np.isin(members, val).sum() - 0.3 * len(members)) <= 1.0


def test_small_collections_and_zero_fraction_are_not_split():
    assert len(validation_split(np.ones(MIN_QUERIES_TO_SPLIT - 1), 0.3, "c")[1]) == 0
    assert len(validation_split(np.ones(100), 0.0, "c")[1]) == 0
    train, val = validation_split(np.ones(MIN_QUERIES_TO_SPLIT), 0.99, "c")
    assert len(train) >= 1 and len(val) == MIN_QUERIES_TO_SPLIT - 1


def test_evaluator_measures_train_and_validation_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("EVORANK_CACHE", str(tmp_path / "cache"))
    topics = load_topics(str(write_random_beir(tmp_path / "c", n_docs=120, n_queries=40)))
    train, val = validation_split(relevant_counts(topics.judged), 0.3, topics.name, seed=7)
    ref, ranking = evaluate_on(compile_program(BM25), topics)
    with Evaluator([], n_workers=1, limits=Limits(timeout_s=20), topics=[topics], validation=0.3, seed=7) as ev:
        res = ev.evaluate([BM25], [BM25], [None])[0]
    assert res.ok and res.validation is not None and len(val) == 12
    assert res.suite.collections[0].metrics == measure(subset_ranking(ranking, train),
                                                       subset_topics(topics, train)).metrics
    assert res.validation.collections[0].metrics == measure(subset_ranking(ranking, val),
                                                            subset_topics(topics, val)).metrics
    assert res.suite.collections[0].n_queries == 28 and res.validation.collections[0].n_queries == 12


# -- retrieving everything does not pay ---------------------------------------------------------------

CONSTANT = SPLIT.join("def score(query, index, state):\n    return np.zeros(index.n_docs)\n")
EVERYTHING = BM25.replace("return np.where(matched, scores, -np.inf)", "return np.where(matched, scores, -1.0)")


@pytest.mark.shared_data
def test_retrieving_everything_does_not_beat_bm25_on_small_collections(shared_env):
    """On adi (82 documents) and time (423) a constant score has R@100 = 1, and BM25 that retrieves unmatched
    documents at -1 raises R@100; under the collection-size rule neither beats BM25."""
    topics = [load_topics("local:adi"), load_topics("local:time")]
    spec = fitness_spec("rankevolve")
    results = {}
    for label, src in (("bm25", BM25), ("constant", CONSTANT), ("everything", EVERYTHING)):
        program = compile_program(src)
        results[label] = [evaluate_on(program, t)[0] for t in topics]
    suites = {label: summarize(label, rs, spec) for label, rs in results.items()}
    assert suites["constant"].fitness < suites["bm25"].fitness
    assert suites["everything"].fitness == pytest.approx(suites["bm25"].fitness, abs=1e-12)
    # without the rule both would have won (the failures the rule exists for): the constant score on adi, the
    # everything-retrieving BM25 on adi + time
    unruled = {label: fitness({r.name: r.metrics for r in rs}, spec) for label, rs in results.items()}
    adi_only = {label: fitness({rs[0].name: rs[0].metrics}, spec) for label, rs in results.items()}
    assert adi_only["constant"] > adi_only["bm25"] and unruled["everything"] > unruled["bm25"]
    assert results["constant"][0].metrics["recall@100"] == 1.0
    assert summarize("c", results["constant"][:1], spec).fitness < summarize("b", results["bm25"][:1], spec).fitness


def test_collection_size_rule_keeps_fitness_on_large_collections():
    metrics = {"big": {"recall@100": 0.5, "ndcg@10": 0.3}, "small": {"recall@100": 1.0, "ndcg@10": 0.2}}
    spec = FitnessSpec()
    assert fitness(metrics, spec, n_docs={"big": 5000, "small": 900}) == pytest.approx((0.8 * 0.5 + 0.2 * 0.3 + 0.2) / 2)
    assert fitness(metrics, spec, n_docs={"big": 5000, "small": 1000}) == pytest.approx(fitness(metrics, spec))


# -- robust fitness -------------------------------------------------------------------------------------

def test_robust_fitness_rewards_gains_that_hold_everywhere():
    spec = fitness_spec("robust")
    ref = {"a": {"recall@100": 0.5, "ndcg@10": 0.5}, "b": {"recall@100": 0.4, "ndcg@10": 0.4}}
    everywhere = {c: {m: v * 1.02 for m, v in ms.items()} for c, ms in ref.items()}
    lopsided = {"a": {m: v * 1.06 for m, v in ref["a"].items()}, "b": {m: v * 0.98 for m, v in ref["b"].items()}}
    assert fitness(ref, spec, reference=ref) == pytest.approx(1.0)
    assert fitness(everywhere, spec, reference=ref) == pytest.approx(1.02)
    assert fitness(lopsided, spec, reference=ref) == pytest.approx(1.01)  # +6% and -2% x 2, averaged
    assert fitness(everywhere, spec, reference=ref) > fitness(lopsided, spec, reference=ref)
    assert fitness(lopsided, fitness_spec("rankevolve")) > fitness(everywhere, fitness_spec("rankevolve")) * 0.99
    with pytest.raises(ValueError, match="reference"):
        fitness(ref, spec)


def test_consistent_fitness_counts_each_metric_and_the_worst_collection():
    spec = fitness_spec("consistent")
    ref = {"a": {"recall@100": 0.5, "ndcg@10": 0.5}, "b": {"recall@100": 0.4, "ndcg@10": 0.4}}
    everywhere = {c: {m: v * 1.02 for m, v in ms.items()} for c, ms in ref.items()}
    assert fitness(ref, spec, reference=ref) == pytest.approx(1.0)
    assert fitness(everywhere, spec, reference=ref) == pytest.approx(1.02)
    # +5% recall and -5% nDCG@10 on both: robust sees a 3% gain (0.8 x 5 - 0.2 x 5), consistent a 2% one
    # (0.8 x 5 - 0.2 x 5 x 2): the nDCG loss is not hidden inside the collection's fitness
    trade = {c: {"recall@100": ms["recall@100"] * 1.05, "ndcg@10": ms["ndcg@10"] * 0.95} for c, ms in ref.items()}
    assert fitness(trade, fitness_spec("robust"), reference=ref) == pytest.approx(1.03)
    assert fitness(trade, spec, reference=ref) == pytest.approx(1.02)
    # +6% on a, -2% on b: robust 1 + (6 - 4) / 2 = 1.01; consistent half that mean and half the worst, -4%
    lopsided = {"a": {m: v * 1.06 for m, v in ref["a"].items()}, "b": {m: v * 0.98 for m, v in ref["b"].items()}}
    assert fitness(lopsided, spec, reference=ref) == pytest.approx(1 + 0.5 * 0.01 + 0.5 * -0.04)
    # a metric that does not count on a small collection does not count in its gain either
    small = {"a": {"recall@100": 0.5 * 1.5, "ndcg@10": 0.5}}
    assert fitness(small, spec, n_docs={"a": 100}, reference={"a": ref["a"]}) == pytest.approx(1.0)


def test_robust_fitness_through_the_evaluator(tmp_path, monkeypatch):
    monkeypatch.setenv("EVORANK_CACHE", str(tmp_path / "cache"))
    topics = [load_topics(str(write_random_beir(tmp_path / f"c{i}", n_docs=60, n_queries=20, seed=i)))
              for i in range(2)]
    better = BM25.replace("K1 = 0.9", "K1 = 1.2")
    with Evaluator([], n_workers=1, limits=Limits(timeout_s=20), topics=topics, fitness="robust") as ev:
        same, other = ev.evaluate([BM25, better], [BM25, BM25])
    assert same.fitness == pytest.approx(1.0, abs=1e-12)
    assert other.ok and other.fitness != pytest.approx(1.0)
