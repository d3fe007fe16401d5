"""Score fusion: several programs written as one whose scores are the sum of the members' per-query z-scores; the
members read back from it; the fusion without one member."""
import numpy as np
import pytest

from evorank.archive.programs import essential_code
from evorank.evaluators.errors import ProgramError
from evorank.evaluators.index.build import build_arrays
from evorank.evaluators.index.index import Index
from evorank.evaluators.program.checks import static_check
from evorank.evaluators.program.fusion import fuse, members, without_member
from evorank.evaluators.program.parts import parts
from evorank.evaluators.program.ranking import make_queries
from evorank.evaluators.program.source import compile_program, program_path, split_block

BM25 = program_path("bm25").read_text(encoding="utf-8")
RAW = [("", "alpha beta beta gamma"), ("", "alpha alpha delta"), ("", "beta gamma gamma gamma omega"),
       ("", "sigma theta"), ("", "alpha beta gamma delta omega sigma theta kappa"), ("", "beta beta beta")]

# a member whose parameter and local variable share names with its own top-level constants, that calls its own
# helper with a keyword named like one of them, and declares a global: renaming must keep all of that apart
SHADOWING = split_block(BM25).join('''K1 = 2.0
B = 0.9
SCALE = 3.0


def boost(x, SCALE=SCALE):
    return x * SCALE


def prepare(index):
    global B
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    norm = K1 * (1.0 - B + B * index.doc_len / index.avg_doc_len)
    tf = td.data
    weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices])
    return sp.csr_matrix((boost(weights, SCALE=1.0), td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    rows = state[query.term_ids]
    scores = rows.T @ query.qtf
    matched = rows.T @ np.ones(len(query.term_ids)) > 0
    return np.where(matched, scores, -np.inf)
''')
NO_PREPARE = split_block(BM25).join('''def score(query, index, state):
    """Coordination level only: how many distinct query terms each document holds."""
    held = np.bincount(index.term_doc[query.term_ids].indices, minlength=index.n_docs).astype(np.float64)
    return np.where(held > 0, held, -np.inf)
''')


def make_index(raw: list[tuple[str, str]]) -> Index:
    arrays, doc_ids, terms, _, has_titles = build_arrays((f"d{i}", t, b) for i, (t, b) in enumerate(raw))
    meta = {"n_docs": len(doc_ids), "n_terms": len(terms), "total_tokens": int(arrays["doc_len"].sum()),
            "has_titles": has_titles, "_terms": terms, "_doc_ids": doc_ids}
    return Index("fusion", arrays, meta)


def scores_of(source: str, query: str) -> np.ndarray:
    index = make_index(RAW)
    program = compile_program(source)
    (q,) = make_queries([("q", query)], index)
    return program.score(q, index, program.prepare(index) if program.prepare else None)


def zscores(s: np.ndarray) -> np.ndarray:
    """Hand-computed: z-scores over the retrieved documents, the lowest of them for the rest."""
    s = s.astype(np.float64)
    ok = np.isfinite(s)
    mean, sd = s[ok].mean(), s[ok].std() or 1.0  # a member that ties every document it retrieves adds 0 to each
    z = np.full(len(s), (s[ok].min() - mean) / sd)
    z[ok] = (s[ok] - mean) / sd
    return z


@pytest.mark.parametrize("query", ["alpha beta", "gamma omega sigma", "beta"])
def test_the_fusion_scores_the_sum_of_the_members_z_scores(query):
    sources = [BM25, SHADOWING, NO_PREPARE]
    fused = fuse(sources)
    static_check(fused, BM25)  # passes the checks every candidate passes (raises otherwise)
    got = scores_of(fused, query)
    each = [scores_of(s, query) for s in sources]
    retrieved = np.any([np.isfinite(s) for s in each], axis=0)
    expected = np.where(retrieved, np.sum([zscores(s) for s in each], axis=0), -np.inf)
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))
    np.testing.assert_allclose(got[retrieved], expected[retrieved], rtol=0, atol=1e-9)
    # the renamed shadowing member still scores as it did alone (its constants, its keyword, its global)
    assert not np.allclose(each[0][np.isfinite(each[0])], each[1][np.isfinite(each[1])])


def test_a_query_no_member_matches_is_minus_inf_everywhere():
    got = scores_of(fuse([BM25, SHADOWING]), "zeta")
    assert np.all(np.isneginf(got))


def test_members_read_back_and_the_fusion_without_one():
    sources = [BM25, SHADOWING, NO_PREPARE]
    fused = fuse(sources)
    back = members(fused)
    assert [essential_code(m) for m in back] == [essential_code(s) for s in sources]
    assert members(BM25) is None
    assert essential_code(without_member(fused, 2)) == essential_code(fuse(sources[:2]))
    assert essential_code(without_member(fuse(sources[:2]), 0)) == essential_code(SHADOWING)
    assert without_member(fused, 3) is None and without_member(BM25, 0) is None
    # explain's parts of a fused program are its members, each taken out
    found = parts(fused, BM25)
    assert [p.kind for p in found] == ["member"] * 3
    assert essential_code(found[1].ablated) == essential_code(fuse([BM25, NO_PREPARE]))


def test_what_cannot_be_fused_is_refused():
    with pytest.raises(ProgramError):
        fuse([BM25])
    ql = program_path("ql_dirichlet").read_text(encoding="utf-8")
    with pytest.raises(ProgramError, match="outside their EVOLVE-BLOCK"):
        fuse([BM25, ql])  # two seeds' heads
    clash = split_block(BM25).join("m0_K1 = 1.0\n" + split_block(BM25).block)
    with pytest.raises(ProgramError, match="starting with"):
        fuse([clash, BM25])
