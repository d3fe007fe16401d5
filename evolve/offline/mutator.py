"""Offline mutator (``--llm offline``): genetic programming over a program's EVOLVE-BLOCK AST.

No network and no LLM: the block is parsed with :mod:`ast`, one or a few generic edits are applied,
and the block is written back with :func:`ast.unparse`. The head and tail of the program stay
byte-identical. Every draw comes from the ``numpy.random.Generator`` passed in, so the same parent
text and the same generator state always give the same child.

Entry points: :func:`mutate` here, :func:`evorank.evolve.offline.crossover.crossover` for a
crossover without the extra point edit; both return an
:class:`~evorank.evolve.offline.block.Mutation`. Point edits, each recorded as
``Mutation.operator`` (:mod:`~evorank.evolve.offline.point_edits`):

``offline:constant``     perturb a numeric constant (a module-level ``NAME = number`` or a literal in a
                         weight formula): log-normal steps, occasionally a big jump; constants in (0, 1)
                         move in logit space so they stay in (0, 1) (interpolation weights such as B).
``offline:unary_swap``   replace or insert a unary function on a sub-expression of a weight formula:
                         ``np.log1p`` / ``np.log`` / ``np.sqrt`` / identity / ``x ** p``.
``offline:binop``        swap a binary operator (``+ - * /``) or the operands of ``-`` and ``/``.
``offline:insert_term``  insert a term built from a feature already in scope (a local weight
                         variable, a leaf of the formula, ``index.df`` / ``index.cf`` / ``index.doc_len``
                         gathered to the postings the way the program already gathers), e.g.
                         ``E * (1 + c * np.log1p(F))``, ``E + c * F``, ``E / (1 + c * F)``,
                         ``E * (1 + F) ** c``, ``E + c`` or ``c * E``.
``offline:prune``        replace a binary operation by one of its operands (the GP "hoist"; fights bloat).

Splices (:mod:`~evorank.evolve.offline.splice`, templates in
:mod:`~evorank.evolve.offline.splice_templates`) add structure rather than move constants: a new kind
of index evidence from the widened program contract, spliced in as a self-contained, vectorised channel
with its own module-level constants (weight first, starting small), added to the parent's scores just
before ``score``'s final ``return np.where(matched, scores, -np.inf)``:

``offline:splice_field``      a BM25F-like tf mix (title occurrences count 1 + ``TITLE_WEIGHT`` times,
                              lengths likewise) where the program reads ``index.term_doc``'s
                              frequencies, or a saturated title-frequency channel (``W_TITLE``);
``offline:splice_proximity``  adjacent query-term pairs found as bigrams or within a window
                              (``index.positions``, ``query.token_ids`` / ``query.positions``);
``offline:splice_variants``   query terms matched to vocabulary variants: a shared prefix or
                              character-trigram similarity over ``index.terms`` (table built in
                              ``prepare``, whose state becomes ``(parent's state, table)``);
``offline:splice_feedback``   an RM3-like second pass over the ``doc_term`` rows of the parent's own
                              best first-pass documents.

``mutate`` without a partner and without ``n_edits`` tries a splice with probability
``SPLICE_RATE`` (0.10; kinds drawn by ``SPLICE_WEIGHTS``: field 0.25, proximity 0.30, variants 0.20,
feedback 0.25), so most edits stay point edits; a kind that does not apply (unrecognised ``score``,
channel already there) is skipped, and when none applies the point edits run as usual.
:func:`~evorank.evolve.engine.evidence.evidence_kinds` tells which of the new kinds of evidence
(``term_strings``, ``positions``, ``fields``, ``feedback``, ``query_words``) a program reads.

Recombination (operator ``offline:crossover``, :mod:`~evorank.evolve.offline.crossover`): take module
constants from the other parent, graft the other parent's definition of a variable (with the local
definitions it depends on), blend the two definitions (``mine + c * theirs``), or take a whole
function from the other parent when both ``prepare`` functions return the same kind of state.

Where edits go (:mod:`~evorank.evolve.offline.sites`): only right-hand sides of assignments inside
functions that compute numeric arrays or scalars (the weight computation), plus module-level
constants; index arrays, sparse matrices, ``np.bincount`` / ``np.where`` and ``return`` statements
are never touched.

Safety: a small static analysis (:mod:`~evorank.evolve.offline.analysis`) infers, for every
expression, its level (scalar, per-term, per-document, per-posting, per-query-term) and its sign,
and an edit is kept only if it keeps every level, reads only defined names, adds no numerically
unsafe site and keeps formulas under a size cap (:mod:`~evorank.evolve.offline.checks`). New
``log`` / ``sqrt`` / powers of quantities of unknown sign get an ``np.maximum`` guard.

Point edits and crossovers use only the names the parent programs already use, fresh local
variables that a crossover graft may bind (``tf_2``), and these attributes of the numpy alias:
``np.log``, ``np.log1p``, ``np.sqrt``, ``np.maximum``, ``np.mean``. A splice brings its template's
helper functions, constants, builtins and numpy attributes (``SPLICE_NP_ATTRS``). No imports.

When nothing applies (a block the analysis does not understand), ``mutate`` perturbs any float
literal of the block; when there is none, it returns the parent unchanged with operator
``offline:none``. ``Mutation.archive_operator`` maps the operator to ``ProgramRecord.operator``
(``offline`` or ``crossover``).
"""
from __future__ import annotations

import numpy as np

from .block import (
    CROSSOVER_OPERATOR,
    DEBUG,
    Mutation,
    NoEdit,
    ParsedProgram,
    names_in,
    parse_program,
)
from .checks import Checker
from .crossover import crossover
from .point_edits import POINT_OPERATORS, fallback_mutation, point_edit, point_mutation
from .splice import SPLICE_OPERATORS, SPLICE_RATE, splice_mutation

OPERATORS = (*POINT_OPERATORS, *SPLICE_OPERATORS, CROSSOVER_OPERATOR)


def mutate(parent_source: str, rng: np.random.Generator, other_source: str | None = None,
           n_edits: int | None = None) -> Mutation:
    """A child of ``parent_source``: crossover with ``other_source`` when one is given (then, one time
    in four, one more point edit), otherwise ``n_edits`` point edits; when ``n_edits`` is None, a
    splice with probability ``SPLICE_RATE`` (when one applies), else 1-3 point edits.

    Raises ValueError when the parent has no EVOLVE-BLOCK or the block does not parse (an unusable
    ``other_source`` is ignored). Never raises otherwise: when no edit applies, the child is the
    parent with a perturbed constant, and as a last resort (no constant at all) the parent itself
    with operator ``offline:none``.
    """
    prog = parse_program(parent_source)
    if other_source is not None:
        try:
            parse_program(other_source, "other")
        except ValueError:
            other_source = None
    if other_source is None:
        if n_edits is None and rng.random() < SPLICE_RATE:
            try:
                m = splice_mutation(prog, rng)
            except Exception:
                if DEBUG.strict:
                    raise
                m = None
            if m is not None:
                return m
        return point_mutation(prog, rng, n_edits)
    try:
        return _mutate_cross(prog, parent_source, other_source, rng)
    except Exception:
        if DEBUG.strict:
            raise
        return fallback_mutation(prog, rng)


def _mutate_cross(prog: ParsedProgram, parent_source: str, other_source: str, rng) -> Mutation:
    m = crossover(parent_source, other_source, rng)
    if m.operator == CROSSOVER_OPERATOR and rng.random() < 0.25:
        child = parse_program(m.source)
        checker = Checker(child, names_in(prog.tree) | names_in(parse_program(other_source).tree))
        try:
            _, text, k, desc = point_edit(child, checker, rng)
        except NoEdit:
            return m
        return Mutation(prog.head + text + prog.tail, CROSSOVER_OPERATOR, f"{m.description}; then {desc}")
    return m
