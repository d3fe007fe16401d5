"""A score that unpacks the tuple state of a program the prompt showed, next to a prepare that returns one matrix
(ValueError on the first query), gets that program's prepare (evolve/llm/mend/state.py)."""
from __future__ import annotations

import numpy as np
import pytest

from evorank.evaluators.program.checks import static_check
from evorank.evolve.llm.directions import Direction
from evorank.evolve.llm.mend import fix_candidate
from evorank.evolve.llm.proposer import direction_donor
from evorank.evolve.llm.mend.state import take_prepare_for_unpacked_state

from block_programs import SEEDS, TinyIndex, TinyQuery, exec_module, program

# Two directions as an earlier version of the prompts showed them, each with a complete prepare and score after its helpers
# (a directions file may still hold such an example program): the donors the replies below copied from.
DIRECTIONS = {
    "smoothing": Direction("smoothing", r'''Score by how likely the document's language model makes the query: query likelihood with Dirichlet or
Jelinek-Mercer smoothing (Zhai & Lafferty 2001), two-stage smoothing, or a different collection model
p(t|C) = cf / total_tokens.
```python
def dirichlet_weights(index, mu=1000.0):
    """Query likelihood with Dirichlet smoothing in its rank-equivalent form: a per-posting weight
    log(1 + tf / (mu p(t|C))) and a per-document part log(mu / (dl + mu)) counted once per query term."""
    td = index.term_doc
    p_c = np.repeat(index.cf / index.total_tokens, np.diff(td.indptr))   # per posting
    posting = sp.csr_matrix((np.log1p(td.data / (mu * p_c)), td.indices, td.indptr), shape=td.shape)
    per_doc = np.log(mu / (index.doc_len + mu))
    return posting, per_doc
```
Used in a complete program (prepare and score):
```python
def prepare(index):
    return dirichlet_weights(index)


def score(query, index, state):
    posting, per_doc = state
    rows = posting[query.term_ids]
    scores = np.bincount(rows.indices, weights=rows.data * np.repeat(query.qtf, np.diff(rows.indptr)), minlength=index.n_docs).astype(np.float64, copy=False)
    return scores + query.qtf.sum() * per_doc
```
'''),
    "variants": Direction("variants", r'''Let vocabulary terms that share a long prefix with a query term count as weaker matches (morphological
variants that stemming missed). `index.terms` is the vocabulary (strings in term-id order); scan it in prepare.
```python
def prefix_classes(index, length=5):
    """Prefix -> ids of the vocabulary terms that start with it (terms of at least `length` characters)."""
    classes = {}
    for t, s in enumerate(index.terms):
        if len(s) >= length:
            classes.setdefault(s[:length], []).append(t)
    return {p: np.array(ts, dtype=np.int64) for p, ts in classes.items()}

def variant_terms(query, classes, length=5):
    """Vocabulary terms sharing a prefix with a query term, the query terms themselves left out."""
    found = [classes[s[:length]] for s in query.terms if s[:length] in classes]
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.concatenate(found), query.term_ids)
```
Used in a complete program (prepare and score):
```python
def prepare(index):
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    norm = 0.9 * (1.0 - 0.4 + 0.4 * index.doc_len / index.avg_doc_len)
    weights = np.repeat(idf, np.diff(td.indptr)) * td.data / (td.data + norm[td.indices])
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape), prefix_classes(index)


def score(query, index, state):
    weights, classes = state
    rows = weights[query.term_ids]
    scores = np.bincount(rows.indices, weights=rows.data * np.repeat(query.qtf, np.diff(rows.indptr)), minlength=index.n_docs).astype(np.float64, copy=False)
    extra = weights[variant_terms(query, classes)]
    return scores + 0.3 * np.bincount(extra.indices, weights=extra.data, minlength=index.n_docs)
```
'''),
}
ONE_MATRIX = ("def prepare(index):\n    td = index.term_doc\n"
              "    return sp.csr_matrix((td.data * 2.0, td.indices, td.indptr), shape=td.shape)\n\n\n")
DONOR = ("program 7", program(
    "def parts(index):\n    return index.term_doc * 1.0, np.log1p(index.doc_len)\n\n\n"
    "def prepare(index):\n    return parts(index)\n\n\n"
    "def score(query, index, state):\n    weights, prior = state\n"
    "    rows = weights[query.term_ids]\n"
    "    return np.asarray(rows.sum(axis=0)).ravel() + prior\n"))
UNPACKS = ("def score(query, index, state):\n    weights, prior = state\n"
           "    rows = weights[query.term_ids]\n    return np.asarray(rows.sum(axis=0)).ravel() + 0.5 * prior\n")


def test_the_donors_prepare_replaces_the_one_matrix_prepare_and_the_program_runs():
    code = program(ONE_MATRIX + UNPACKS)
    ns = exec_module(code)
    with pytest.raises((ValueError, TypeError)):
        ns["score"](TinyQuery(), TinyIndex(), ns["prepare"](TinyIndex()))
    fix = take_prepare_for_unpacked_state(code, [*SEEDS, DONOR])
    assert fix is not None and "    return parts(index)" in fix.source and "td.data * 2.0" not in fix.source
    assert fix.description == ("took prepare() from program 7: score() unpacks its state into weights, prior, the "
                               "candidate's prepare() returned one matrix")
    source, note = fix_candidate(code, [*SEEDS, DONOR])  # parts() is then borrowed
    assert "def parts(index):" in source and "parts from program 7" in note
    static_check(source)
    ns, index = exec_module(source), TinyIndex()
    scores = ns["score"](TinyQuery(), index, ns["prepare"](index))
    assert scores.shape == (index.n_docs,) and np.isfinite(scores).all()


def test_a_candidate_without_prepare_gets_one():
    fix = take_prepare_for_unpacked_state(program(UNPACKS), [DONOR])
    assert fix is not None and fix.source.index("def prepare(index):") < fix.source.index("def score(")


@pytest.mark.parametrize("block", [
    # prepare returns a tuple already
    "def prepare(index):\n    return index.term_doc, index.doc_len\n\n\n" + UNPACKS,
    # prepare returns something that is not plainly one matrix
    "def prepare(index):\n    return index.term_doc\n\n\n" + UNPACKS,
    # score does not unpack the state
    ONE_MATRIX + "def score(query, index, state):\n    return np.asarray(state[query.term_ids].sum(axis=0)).ravel()\n",
    # unpacks into other names than any donor
    ONE_MATRIX + UNPACKS.replace("weights, prior = state", "weights, extra = state").replace("prior", "extra"),
])
def test_programs_that_run_or_match_no_donor_are_left_alone(block):
    assert take_prepare_for_unpacked_state(program(block), [*SEEDS, DONOR]) is None


def test_a_donor_whose_prepare_gives_another_number_of_values_is_not_taken():
    three = ("program 8", DONOR[1].replace("return index.term_doc * 1.0, np.log1p(index.doc_len)",
                                           "return index.term_doc * 1.0, np.log1p(index.doc_len), 1.0"))
    assert take_prepare_for_unpacked_state(program(ONE_MATRIX + UNPACKS), [three]) is None


@pytest.mark.parametrize("run_id, name, keep_prepare_of", [
    # the smoothing direction's score after the query-likelihood seed's prepare
    ("smoothing-after-ql", "smoothing", SEEDS[1][1]),
    # the variants direction's score after a BM25 prepare without the classes
    ("variants-after-bm25", "variants", SEEDS[0][1]),
])
def test_the_directions_score_after_the_parents_prepare_runs_after_the_mend(run_id, name, keep_prepare_of):
    direction = DIRECTIONS[name]
    seed_block = keep_prepare_of.split("# EVOLVE-BLOCK-START\n")[1].split("def score(")[0]
    score = "def score(" + direction.example.split("def score(")[1]
    code = program(seed_block + score)
    source, note = fix_candidate(code, [direction_donor(direction), *SEEDS])
    assert note is not None and note.startswith(f"took prepare() from direction {name}"), (run_id, note)
    static_check(source)


def test_the_directions_prepare_with_the_parents_score_gets_the_directions_score():
    """The smoothing direction's prepare copied, the query-likelihood seed's score kept (state
    indexed as a matrix: TypeError on every query)."""
    direction = DIRECTIONS["smoothing"]
    seed_score = "def score(" + SEEDS[1][1].split("def score(")[1].split("# EVOLVE-BLOCK-END")[0]
    prepare = "def prepare(index):\n    # the direction's\n    return dirichlet_weights(index)\n\n\n"
    code = program(prepare + seed_score)
    source, note = fix_candidate(code, [direction_donor(direction), *SEEDS])
    assert note is not None and note.startswith("took score() from direction smoothing: prepare() is its and "
                                                "returns 2 values"), note
    assert "posting, per_doc = state" in source and "def dirichlet_weights" in source
    static_check(source)


def test_a_score_that_indexes_the_state_is_left_alone_when_prepare_is_not_a_donors():
    seed_score = "def score(" + SEEDS[1][1].split("def score(")[1].split("# EVOLVE-BLOCK-END")[0]
    prepare = "def prepare(index):\n    return dirichlet_weights(index, mu=500.0)\n\n\n"
    assert take_prepare_for_unpacked_state(program(prepare + seed_score),
                                           [direction_donor(DIRECTIONS["smoothing"]), *SEEDS]) is None
