"""Example ranking programs written from the IR literature (BM25F, term proximity, variant matching, RM3, PL2).

Each is a complete ranking program with an EVOLVE-BLOCK: ``evorank eval examples/bm25f.py --suite dev`` evaluates
one, ``evorank run --start bm25,examples/proximity.py`` starts a run from it. ``evorank.evaluators.program.source.program_path``
finds them here when ``examples/<name>.py`` does not exist relative to the current folder.

May import: (nothing)
"""
