"""Evidence channels that :mod:`evorank.evolve.offline.splice` splices into a program: the templates.

Each channel is self-contained, vectorised code over the widened program contract
(``evaluators/program/contract.md``): helper functions whose names no seed uses, module-level constants
for its weight and shape (so that later ``offline:constant`` edits tune them), a call that ``score``
makes just before its final ``return``, and, for the variant channel, a table built once in ``prepare``.
Loops run over query terms or query-term pairs only, never over documents; a channel returns one
float per document, >= 0, and 0 where it has no evidence.

:func:`draw_channel` draws one form of a kind and its starting constants from the generator:

``field``      ``title``: the query terms' title frequencies, saturated (``K_TITLE``), idf-weighted;
               0 on a collection without titles. (The other field form, a BM25F-like tf mix, rewrites
               the parent and lives in :mod:`~evorank.evolve.offline.splice`.)
``proximity``  ``ordered`` (the next query term follows within its query gap + ``PROX_WINDOW`` - 1
               positions: a bigram when the window is 1) or ``unordered`` (either side, a window):
               occurrences per document, saturated (``K_PROX``), weighted by the pair's mean idf.
``variants``   ``prefix`` (terms sharing the first ``VARIANT_PREFIX`` characters) or ``trigram``
               (character-trigram Dice similarity >= ``VARIANT_MIN_DICE``): occurrences of a query
               term's vocabulary variants, by similarity, saturated (``K_VARIANT``), weighted by the
               query term's idf; the table of variants is built in ``prepare``.
``feedback``   an RM3-like second pass: expansion terms from the ``doc_term`` rows of the ``FB_DOCS``
               best first-pass documents (P(t|d) x the document's share of the first-pass score), the
               ``FB_TERMS`` best by weight x idf, scored BM25-style and scaled by the query's length.
               Query-adaptive: the pass counts only as far as the first pass looks reliable, judged by
               the share of the query's idf mass that the feedback documents contain (a query whose best
               documents miss its rarer terms is answered by the first pass alone: feedback from
               off-topic documents would pull in more of them); the gate opens around ``FB_GATE``.

Starting weights are small (the channel nudges the parent's ranking); the ``variants`` and
``feedback`` channels may also add the documents they find to the retrieved set (``adds_matches``).
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass

from evorank.threadsafe_ast import parse_ast

from .block import round_sig

SPLICE_KINDS = ("field", "proximity", "variants", "feedback")


@dataclass(frozen=True)
class Channel:
    """One drawn channel: what to add to the block and how ``score`` calls it."""

    kind: str  # one of SPLICE_KINDS
    form: str  # e.g. "ordered"
    constants: tuple[tuple[str, float], ...]  # module-level constants, the weight first
    helpers: str  # source of the helper functions
    call: str  # the channel's value in score; placeholders {query} {index} {state} {first}
    var: str  # the local variable of score that holds it
    table: str | None = None  # the state part built in prepare (placeholder {index}); None: no state needed
    adds_matches: bool = False  # documents with evidence > 0 join the retrieved set

    @property
    def weight(self) -> str:
        return self.constants[0][0]

    @property
    def names(self) -> set[str]:
        """Every module-level name the channel adds."""
        funcs = {n.name for n in parse_ast(self.helpers).body if isinstance(n, ast.FunctionDef)}
        return funcs | {c for c, _ in self.constants}


TITLE = '''
def title_channel(query, index):
    """Field weight (splice): the query terms' title frequencies, saturated with K_TITLE and weighted by
    idf and query frequency; zero on a collection without titles."""
    if not index.has_titles:
        return np.zeros(index.n_docs)
    rows = index.field("title").term_doc[query.term_ids]
    tf = rows.data.astype(np.float64)
    idf = np.log1p((index.n_docs - index.df[query.term_ids] + 0.5) / (index.df[query.term_ids] + 0.5))
    weights = np.repeat(idf * query.qtf, np.diff(rows.indptr)) * tf / (tf + K_TITLE)
    return np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
'''

PROXIMITY = '''
def proximity_channel(query, index):
    \"\"\"Term proximity (splice): for each pair of adjacent query terms a, b, the occurrences of a with b
    {where} their query gap + PROX_WINDOW - 1 positions, per document, saturated with K_PROX
    and weighted by the pair's mean idf.\"\"\"
    ids = query.token_ids
    pos = query.positions
    idf = np.log1p((index.n_docs - index.df[np.maximum(ids, 0)] + 0.5) / (index.df[np.maximum(ids, 0)] + 0.5))
    window = max(1, int(round(PROX_WINDOW)))
    keys = {}
    docs = [np.zeros(0, dtype=np.int64)]
    gains = [np.zeros(0)]
    for i in range(len(ids) - 1):
        a = int(ids[i])
        b = int(ids[i + 1])
        if a < 0 or b < 0 or a == b:
            continue
        for t in (a, b):
            if t not in keys:
                found = index.positions(t)
                keys[t] = (found[0], (found[0].astype(np.int64) << 32) + found[1])
        reach = int(pos[i + 1] - pos[i]) + window - 1
        key_b = keys[b][1]
        j = np.searchsorted(key_b, keys[a][1] {low})
        near = (j < len(key_b)) & (key_b[np.minimum(j, len(key_b) - 1)] <= keys[a][1] + reach)
        hit = np.unique(keys[a][0][near], return_counts=True)
        docs.append(hit[0])
        gains.append(0.5 * (idf[i] + idf[i + 1]) * hit[1] / (hit[1] + K_PROX))
    return np.bincount(np.concatenate(docs), weights=np.concatenate(gains), minlength=index.n_docs)
'''

VARIANT_CHANNEL = '''
def variant_spans(lo, hi):
    \"\"\"Positions lo[i] .. hi[i] - 1 of every span, concatenated: (the span of each, the position).\"\"\"
    size = hi - lo
    return (np.repeat(np.arange(len(lo)), size), np.repeat(lo - np.cumsum(size) + size, size) + np.arange(np.sum(size)))


def variant_channel(query, index, table):
    \"\"\"Variant matching (splice): per query term, the occurrences of its vocabulary variants that are not
    query terms (at most 50, the most similar first), weighted by similarity, saturated with K_VARIANT
    and weighted by the query term's idf and query frequency.\"\"\"
    found = variant_candidates(query.term_ids, table)
    keep = ~np.isin(found[1], query.term_ids)
    order = np.lexsort((-found[2][keep], found[0][keep]))
    slot = found[0][keep][order]
    near = found[1][keep][order]
    sim = found[2][keep][order]
    top = np.arange(len(slot)) - np.searchsorted(slot, slot) < 50
    if not np.any(top):
        return np.zeros(index.n_docs)
    td = index.term_doc
    post = variant_spans(td.indptr[near[top]], td.indptr[near[top] + 1])
    uniq = np.unique(slot[top][post[0]] * index.n_docs + td.indices[post[1]], return_inverse=True)
    vtf = np.bincount(uniq[1].ravel(), weights=td.data[post[1]] * sim[top][post[0]])
    idf = query.qtf * np.log1p((index.n_docs - index.df[query.term_ids] + 0.5) / (index.df[query.term_ids] + 0.5))
    gain = idf[uniq[0] // index.n_docs] * vtf / (vtf + K_VARIANT)
    return np.bincount(uniq[0] % index.n_docs, weights=gain, minlength=index.n_docs)
'''

PREFIX_TABLE = '''
def variant_table(index):
    \"\"\"Vocabulary variants (splice, built once in prepare): the terms grouped by their first
    VARIANT_PREFIX characters, as (group of each term, terms ordered by group, group starts).\"\"\"
    n = min(8, max(3, int(round(VARIANT_PREFIX))))
    keys = {}
    group = np.array([keys.setdefault(s[:n], len(keys)) for s in index.terms], dtype=np.int64)
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(len(keys) + 1))
    return (group, order, starts)


def variant_candidates(terms, table):
    \"\"\"The variants of each of ``terms``, the term itself excluded, as (which of ``terms``, variant,
    similarity: 1 for a shared prefix).\"\"\"
    groups = table[0][terms]
    spans = variant_spans(table[2][groups], table[2][groups + 1])
    near = table[1][spans[1]]
    keep = near != terms[spans[0]]
    return (spans[0][keep], near[keep], np.ones(int(np.sum(keep))))
'''

TRIGRAM_TABLE = '''
def variant_table(index):
    \"\"\"Vocabulary variants (splice, built once in prepare): the character trigrams of every term, as
    (trigram ids term after term, each term's start in them, terms ordered by trigram, trigram starts,
    trigrams per term).\"\"\"
    gram_ids = {}
    term_of = []
    gram_of = []
    for t, s in enumerate(index.terms):
        for g in dict.fromkeys(s[i:i + 3] for i in range(len(s) - 2)):
            term_of.append(t)
            gram_of.append(gram_ids.setdefault(g, len(gram_ids)))
    grams = np.array(gram_of, dtype=np.int64)
    owners = np.array(term_of, dtype=np.int64)
    order = np.argsort(grams, kind="stable")
    starts = np.searchsorted(grams[order], np.arange(len(gram_ids) + 1))
    term_ptr = np.searchsorted(owners, np.arange(index.n_terms + 1))
    return (grams, term_ptr, owners[order], starts, np.diff(term_ptr))


def variant_candidates(terms, table):
    \"\"\"The variants of each of ``terms``, the term itself excluded: (which of ``terms``, variant, its
    trigram Dice similarity), for similarities of at least VARIANT_MIN_DICE.\"\"\"
    mine = variant_spans(table[1][terms], table[1][terms + 1])
    grams = table[0][mine[1]]
    shared = variant_spans(table[3][grams], table[3][grams + 1])
    n_terms = len(table[4])
    uniq = np.unique(mine[0][shared[0]] * n_terms + table[2][shared[1]], return_counts=True)
    slot = uniq[0] // n_terms
    near = uniq[0] % n_terms
    dice = 2.0 * uniq[1] / (table[4][terms][slot] + table[4][near])
    keep = (dice >= VARIANT_MIN_DICE) & (near != terms[slot])
    return (slot[keep], near[keep], dice[keep])
'''

FEEDBACK = '''
def feedback_rows(matrix, ids):
    \"\"\"Rows ``ids`` of a CSR matrix (no scipy indexing overhead): (row of each entry, column, value).\"\"\"
    lo = matrix.indptr[ids]
    size = matrix.indptr[ids + 1] - lo
    at = np.repeat(lo - np.cumsum(size) + size, size) + np.arange(np.sum(size))
    return (np.repeat(np.arange(len(ids)), size), matrix.indices[at], matrix.data[at])


def feedback_channel(query, index, first):
    \"\"\"Pseudo-relevance feedback (splice, an RM3-like second pass): the FB_DOCS best documents of the
    first pass give expansion terms from their doc_term rows, weighted by P(t|d) times the document's
    share of the first-pass score; the FB_TERMS best by weight x idf (query terms excluded) are scored
    BM25-style (k1=1.2, b=0.75), scaled by the query's length and by a gate: the share of the query's
    idf mass the feedback documents contain, from nothing below FB_GATE - 0.1 to all above FB_GATE + 0.1.\"\"\"
    out = np.zeros(index.n_docs)
    ok = np.flatnonzero(first > -np.inf)
    k = min(len(ok), max(1, int(round(FB_DOCS))))
    if k == 0:
        return out
    top = ok[np.argpartition(-first[ok], k - 1)[:k]]
    share = np.maximum(first[top], 0.0) + 1e-09
    rows = feedback_rows(index.doc_term, top)
    query_idf = query.qtf * np.log1p((index.n_docs - index.df[query.term_ids] + 0.5) / (index.df[query.term_ids] + 0.5))
    found = np.sum(query_idf[np.isin(query.term_ids, rows[1])]) / max(np.sum(query_idf), 1e-09)
    gate = min(1.0, max(0.0, (found - FB_GATE) / 0.2 + 0.5))
    if gate <= 0:
        return out
    p = rows[2] / np.maximum(index.doc_len[top], 1.0)[rows[0]] * (share / np.sum(share))[rows[0]]
    uniq = np.unique(rows[1], return_inverse=True)
    terms = uniq[0]
    weight = np.bincount(uniq[1].ravel(), weights=p, minlength=len(terms))
    weight = np.where(np.isin(terms, query.term_ids), 0.0, weight)
    idf = np.log1p((index.n_docs - index.df[terms] + 0.5) / (index.df[terms] + 0.5))
    pick = np.argsort(-(weight * idf), kind="stable")[:max(1, int(round(FB_TERMS)))]
    pick = pick[weight[pick] > 0]
    if len(pick) == 0:
        return out
    post = feedback_rows(index.term_doc, terms[pick])
    tf = post[2].astype(np.float64)
    norm = 1.2 * (0.25 + 0.75 * index.doc_len[post[1]] / index.avg_doc_len)
    gain = (weight[pick] / np.sum(weight[pick]) * idf[pick])[post[0]]
    return gate * np.sum(query.qtf) * np.bincount(post[1], weights=gain * tf / (tf + norm), minlength=index.n_docs)
'''


def log_uniform(rng, lo: float, hi: float) -> float:
    """A log-uniform draw in [lo, hi], 3 significant digits."""
    return round_sig(math.exp(rng.uniform(math.log(lo), math.log(hi))), 3)


def _pick(rng, values):
    return values[int(rng.integers(len(values)))]


def draw_channel(kind: str, rng) -> Channel:
    """One form of ``kind`` (see the module docstring) with its starting constants drawn from ``rng``."""
    if kind == "field":
        consts = (("W_TITLE", log_uniform(rng, 0.1, 0.6)), ("K_TITLE", log_uniform(rng, 0.5, 2.0)))
        return Channel(kind, "title", consts, TITLE, "title_channel({query}, {index})", "title_evidence")
    if kind == "proximity":
        ordered = rng.random() < 0.5
        window = float(_pick(rng, (1, 2, 3))) if ordered else float(_pick(rng, (3, 5, 8)))
        consts = (("W_PROX", log_uniform(rng, 0.05, 0.5)), ("PROX_WINDOW", window),
                  ("K_PROX", log_uniform(rng, 0.5, 2.0)))
        text = PROXIMITY.replace("{where}", "following within" if ordered else "on either side within")
        text = text.replace("{low}", "+ 1" if ordered else "- reach")
        return Channel(kind, "ordered" if ordered else "unordered", consts, text,
                       "proximity_channel({query}, {index})", "proximity_evidence")
    if kind == "variants":
        prefix = rng.random() < 0.5
        shape = ("VARIANT_PREFIX", float(_pick(rng, (4, 5, 6)))) if prefix else (
            "VARIANT_MIN_DICE", round_sig(rng.uniform(0.5, 0.75), 3))
        consts = (("W_VARIANT", log_uniform(rng, 0.05, 0.4)), shape, ("K_VARIANT", log_uniform(rng, 0.5, 2.0)))
        helpers = (PREFIX_TABLE if prefix else TRIGRAM_TABLE) + "\n\n" + VARIANT_CHANNEL
        return Channel(kind, "prefix" if prefix else "trigram", consts, helpers,
                       "variant_channel({query}, {index}, {state})", "variant_evidence",
                       table="variant_table({index})", adds_matches=bool(rng.random() < 0.3))
    if kind == "feedback":
        consts = (("W_FB", log_uniform(rng, 0.1, 0.6)), ("FB_DOCS", float(_pick(rng, (5, 10, 20)))),
                  ("FB_TERMS", float(_pick(rng, (5, 10, 20)))), ("FB_GATE", round_sig(rng.uniform(0.5, 0.85), 3)))
        return Channel(kind, "rm3", consts, FEEDBACK, "feedback_channel({query}, {index}, {first})",
                       "feedback_evidence", adds_matches=bool(rng.random() < 0.5))
    raise ValueError(f"unknown splice kind {kind!r}")


def template_np_attrs() -> frozenset[str]:
    """The numpy attributes the templates use (what a splice may add to a program's ``np.`` names)."""
    out = {"mean", "where", "inf"}  # the tf mix and the call sites
    for text in (TITLE, PROXIMITY.replace("{low}", "+ 1"), VARIANT_CHANNEL, PREFIX_TABLE, TRIGRAM_TABLE, FEEDBACK):
        out |= {n.attr for n in ast.walk(parse_ast(text))
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "np"}
    return frozenset(out)
