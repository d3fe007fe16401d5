"""Metrics against hand-computed values and against ranx (the reference implementation), and fitness."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evorank.evaluators.metrics import (
    METRICS, FitnessSpec, Judgements, evaluate_ranking, fitness, fitness_spec, judgements, macro_means, without_excluded,
)
from evorank.evaluators.program.ranking import Ranking


def make_ranking(runs: list[list[int]]) -> Ranking:
    docs = [np.asarray(r, dtype=np.int64) for r in runs]
    scores = [np.arange(len(r), 0, -1, dtype=np.float64) for r in runs]
    return Ranking([f"q{i}" for i in range(len(runs))], docs, scores, np.zeros(len(runs)), 0.0)


def make_judgements(qrels: list[dict[int, int]], min_relevance: int = 1) -> Judgements:
    arrays = []
    for q in qrels:
        a = np.array([[d, g] for d, g in q.items()], dtype=np.float64).reshape(-1, 2)
        arrays.append(a[np.argsort(-a[:, 1], kind="stable")])
    return Judgements([f"q{i}" for i in range(len(qrels))], arrays, min_relevance)


def test_hand_computed_values():
    # q0: relevant docs 3 (grade 2) and 7 (grade 1); ranking 5, 3, 9, 7
    # q1: relevant 1 (grade 1) and an unknown document (-1, never retrievable); ranking 1
    ranking = make_ranking([[5, 3, 9, 7], [1]])
    judged = make_judgements([{3: 2, 7: 1}, {1: 1, -1: 1}])
    m = evaluate_ranking(ranking, judged)
    dcg0 = 2 / math.log2(3) + 1 / math.log2(5)
    idcg0 = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@10"][0] == pytest.approx(dcg0 / idcg0, abs=1e-12)
    assert m["ndcg@10"][1] == pytest.approx(1 / (1 + 1 / math.log2(3)), abs=1e-12)
    assert m["recall@100"].tolist() == [1.0, 0.5]
    assert m["recall@1000"].tolist() == [1.0, 0.5]
    assert m["map@1000"][0] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-12)
    assert m["map@1000"][1] == pytest.approx(1 / 2, abs=1e-12)
    assert set(m) == set(METRICS)


def test_cutoffs_and_threshold():
    # 150 irrelevant documents, then the relevant one: outside R@100, inside R@1000 and MAP@1000
    ranking = make_ranking([list(range(100, 250)) + [1]])
    m = evaluate_ranking(ranking, make_judgements([{1: 1}]))
    assert m["recall@100"][0] == 0.0 and m["recall@1000"][0] == 1.0
    assert m["map@1000"][0] == pytest.approx(1 / 151) and m["ndcg@10"][0] == 0.0
    # min_relevance 2: grade-1 documents are not relevant for recall/MAP, but still gains for nDCG
    judged = make_judgements([{1: 1, 2: 2}], min_relevance=2)
    m = evaluate_ranking(make_ranking([[1, 2]]), judged)
    assert m["recall@100"][0] == 1.0 and m["map@1000"][0] == pytest.approx(1 / 2)
    assert m["ndcg@10"][0] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_empty_rankings_and_no_queries():
    m = evaluate_ranking(make_ranking([[], [4]]), make_judgements([{1: 1}, {4: 3}]))
    assert m["ndcg@10"].tolist() == [0.0, 1.0] and m["map@1000"].tolist() == [0.0, 1.0]
    empty = evaluate_ranking(Ranking([], [], [], np.zeros(0), 0.0), Judgements([], [], 1))
    assert all(len(v) == 0 for v in empty.values())


def test_repeated_documents_are_refused():
    """Counting a repeated document would let a forged ranking score recall above 1."""
    with pytest.raises(ValueError, match="q1.*same document twice"):
        evaluate_ranking(make_ranking([[1, 2], [3, 4, 3]]), make_judgements([{1: 1}, {3: 1}]))


def test_mismatched_queries_refused():
    with pytest.raises(ValueError, match="different queries"):
        evaluate_ranking(make_ranking([[1]]), make_judgements([{1: 1}, {2: 1}]))


@pytest.mark.parametrize("seed", range(6))
def test_equals_ranx_on_random_runs(seed):
    """Random graded judgements (some documents outside the corpus) and random rankings without ties: our
    numpy metrics equal ranx's to 1e-12, for a threshold of 1 and of 2."""
    import warnings

    from numba.core.errors import NumbaTypeSafetyWarning
    from numba.typed import List as TypedList
    from ranx import evaluate

    rng = np.random.default_rng(seed)
    n_docs, runs, qrels = 3000, [], []
    for _ in range(60):
        judged = rng.choice(n_docs, size=rng.integers(1, 40), replace=False)
        q = {int(d): int(rng.integers(1, 4)) for d in judged}
        if rng.random() < 0.3:
            q[-int(rng.integers(1, 5))] = 1  # judged but not in the corpus
        qrels.append(q)
        pool = np.concatenate([judged, rng.choice(n_docs, size=1500)])
        run = list(dict.fromkeys(rng.permutation(pool).tolist()))[: int(rng.integers(0, 1200))]
        runs.append(run)
    ranking = make_ranking(runs)
    for min_rel in (1, 2):
        if min_rel == 2:  # every query keeps a relevant document, as load_collection guarantees
            for q in qrels:
                q[next(iter(q))] = 3
        judged = make_judgements(qrels, min_rel)
        ours = evaluate_ranking(ranking, judged)
        lvl = f"-l{min_rel}" if min_rel > 1 else ""
        names = {"ndcg@10": "ndcg@10", "recall@100": f"recall@100{lvl}", "recall@1000": f"recall@1000{lvl}",
                 "map@1000": f"map@1000{lvl}"}
        run_list = TypedList()
        for d, s in zip(ranking.doc_idx, ranking.scores):
            run_list.append(np.column_stack([d.astype(np.float64), s]) if len(d) else np.array([[-1e18, 0.0]]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=NumbaTypeSafetyWarning)
            theirs = evaluate(TypedList(judged.arrays), run_list, list(names.values()), return_mean=False)
        for m, name in names.items():
            np.testing.assert_allclose(ours[m], theirs[name], rtol=0, atol=1e-12, err_msg=f"{m} min_rel={min_rel}")


def with_exclusions(judged: Judgements, excluded: list[list[int]]) -> Judgements:
    return Judgements(judged.query_ids, judged.arrays, judged.min_relevance, judged.unknown_docs,
                      [np.array(sorted(e), dtype=np.int64) for e in excluded])


def test_excluded_documents_leave_the_ranking_before_the_metrics():
    """BRIGHT's rule: q0 excludes document 9, so its ranking 5, 9, 3, 7 counts as 5, 3, 7 (3 moves to rank 2,
    7 to rank 3); document 9 is relevant for q1 and counts there, and q1 excludes 3, which q0 finds relevant."""
    ranking = make_ranking([[5, 9, 3, 7], [3, 9]])
    judged = with_exclusions(make_judgements([{3: 2, 7: 1}, {9: 1}]), [[9], [3]])
    m = evaluate_ranking(ranking, judged)
    dcg0 = 2 / math.log2(3) + 1 / math.log2(4)
    idcg0 = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@10"][0] == pytest.approx(dcg0 / idcg0, abs=1e-12)
    assert m["map@1000"][0] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-12)
    assert m["ndcg@10"][1] == 1.0 and m["map@1000"][1] == 1.0 and m["recall@100"].tolist() == [1.0, 1.0]
    assert without_excluded(ranking, judged)[1] == 2
    # without the rule, the same ranking scores lower on q0 and q1
    plain = evaluate_ranking(ranking, make_judgements([{3: 2, 7: 1}, {9: 1}]))
    assert plain["ndcg@10"][0] < m["ndcg@10"][0] and plain["map@1000"][1] == 0.5


def test_exclusions_keep_k_documents_for_the_cutoffs():
    """A ranking of k + e documents, e of them excluded, is measured as its k others: the relevant document at
    position 1000 (0-based) counts for R@1000 once one document above it is excluded."""
    docs = list(range(10, 1010)) + [1]
    ranking = make_ranking([docs])
    assert evaluate_ranking(ranking, make_judgements([{1: 1}]))["recall@1000"][0] == 0.0
    judged = with_exclusions(make_judgements([{1: 1}]), [[500]])
    assert evaluate_ranking(ranking, judged)["recall@1000"][0] == 1.0
    assert judged.max_excluded == 1 and judged.n_excluded == 1
    assert judged.subset([0]).excluded[0].tolist() == [500]
    # cut to k after the removal: with k = 2, q0 keeps 5, 3 of 5, 9, 3, 7 and q1 (nothing excluded) 3, 8 of 3, 8, 9
    two = with_exclusions(make_judgements([{7: 1}, {9: 1}]), [[9], []])
    m = evaluate_ranking(make_ranking([[5, 9, 3, 7], [3, 8, 9]]), two, k=2)
    assert m["recall@100"].tolist() == [0.0, 0.0]
    assert evaluate_ranking(make_ranking([[5, 9, 3, 7], [3, 8, 9]]), two, k=3)["recall@100"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("seed", range(3))
def test_exclusion_equals_removing_by_hand(seed):
    """Random rankings and exclusions: the metrics equal those of the rankings with each query's excluded
    documents removed by hand and no exclusion rule; a query without exclusions is measured as it was."""
    rng = np.random.default_rng(seed)
    runs, qrels, excluded = [], [], []
    for _ in range(40):
        run = rng.permutation(2000)[: int(rng.integers(0, 1100))].tolist()
        rel = rng.choice(2000, size=int(rng.integers(1, 20)), replace=False)
        q = {int(d): int(rng.integers(1, 4)) for d in rel}
        ex = [int(d) for d in rng.choice(2000, size=int(rng.integers(0, 30)), replace=False) if int(d) not in q]
        runs.append(run), qrels.append(q), excluded.append(ex if rng.random() < 0.7 else [])
    judged = make_judgements(qrels)
    ours = evaluate_ranking(make_ranking(runs), with_exclusions(judged, excluded))
    by_hand = evaluate_ranking(make_ranking([[d for d in r if d not in set(e)] for r, e in zip(runs, excluded)]),
                               judged)
    for metric in METRICS:
        np.testing.assert_array_equal(ours[metric], by_hand[metric], err_msg=metric)


def test_judgements_map_excluded_ids_to_document_numbers():
    class Index:
        doc_ids = ["a", "b", "c", "d"]

    judged = judgements({"q1": {"a": 1}, "q2": {"b": 1}}, ["q1", "q2"], Index(),
                        excluded={"q1": ["c", "zz", "b"]})
    assert [e.tolist() for e in judged.excluded] == [[1, 2], []]
    assert judgements({"q1": {"a": 1}}, ["q1"], Index(), excluded={}).excluded == []


def test_fitness_and_presets():
    per = {"a": {"recall@100": 0.5, "ndcg@10": 0.3}, "b": {"recall@100": 0.7, "ndcg@10": 0.1}}
    assert macro_means(per) == pytest.approx({"recall@100": 0.6, "ndcg@10": 0.2})
    assert fitness(per, fitness_spec("rankevolve")) == pytest.approx(0.8 * 0.6 + 0.2 * 0.2)
    assert fitness(None, FitnessSpec()) == 0.0 and fitness({}, FitnessSpec()) == 0.0
    slow = fitness(per, fitness_spec("latency-aware"), latency_ratio=15.0)
    assert slow == pytest.approx((0.8 * 0.6 + 0.2 * 0.2) * 15 ** -0.05)
    assert fitness(per, fitness_spec("latency-aware"), latency_ratio=0.5) == pytest.approx(0.8 * 0.6 + 0.2 * 0.2)
    with pytest.raises(ValueError, match="unknown fitness preset"):
        fitness_spec("nope")
