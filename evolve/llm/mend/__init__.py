"""Trusted mends of a chat model's candidate: mistakes that can be corrected from the code alone, before anything runs.

Each module reads the candidate's syntax tree (never runs it) and returns an edited source with a one-line
description, or None where the code is not the kind it mends: :mod:`.attributes` (an attribute the contract lacks
that can mean one thing only), :mod:`.scope` (a local named after the helper it is computed from), :mod:`.parameters`
(a parameter dropped from a copied helper), :mod:`.state` (half of another program's state passing), :mod:`.names`
(names read but never defined, borrowed from the programs the prompt showed) and :mod:`.array_kinds` (per-term or
per-document arrays meeting per-posting ones, gathered). :func:`fix_candidate` applies them in that order.

``bindings`` holds the syntax-tree helpers (names a statement binds, defines, reads) that the mends and the reply
parser share. Public: ``fix_candidate``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast
"""
from __future__ import annotations

from .array_kinds import lift_to_postings
from .attributes import mend_attributes
from .names import borrow_missing_names
from .parameters import restore_dropped_parameters
from .scope import rename_shadowing_locals
from .state import take_prepare_for_unpacked_state

__all__ = ["fix_candidate"]


def fix_candidate(source: str, donors) -> tuple[str, str | None]:
    """A model's candidate with the mistakes trusted code can mend from the code alone, and what was changed (None
    when nothing): attributes the contract lacks that can mean one thing only
    (:mod:`~evorank.evolve.llm.mend.attributes`), a local that shadows the helper it is computed from
    (``x = x(...)``, :mod:`~evorank.evolve.llm.mend.scope`), a parameter dropped from a copied helper whose body still
    reads it (:mod:`~evorank.evolve.llm.mend.parameters`), a ``prepare`` returning one matrix where ``score`` unpacks
    the state of a donor's (:mod:`~evorank.evolve.llm.mend.state`), names it reads but never defines, borrowed from
    ``donors``
    (:mod:`~evorank.evolve.llm.mend.names`), then element-wise operations that meet per-posting with per-term or
    per-document arrays, written with the gather that makes them run
    (:func:`~evorank.evolve.llm.mend.array_kinds.lift_to_postings`). Each step reads what the one before wrote."""
    donors = list(donors)
    steps = (lambda code: mend_attributes(code, donors), lambda code: rename_shadowing_locals(code, donors),
             lambda code: restore_dropped_parameters(code, donors),
             lambda code: take_prepare_for_unpacked_state(code, donors), lambda code: borrow_missing_names(code, donors),
             lift_to_postings)
    original, notes = source, []
    try:
        for step in steps:
            fix = step(source)
            if fix is not None:
                source = fix.source
                notes.append(fix.description)
    except RecursionError:  # nested too deeply to read: the static check will say so, on the model's own code
        return original, None
    return source, "; ".join(notes) or None
