"""The offline mutator (``--llm offline``): genetic programming over a program's EVOLVE-BLOCK syntax tree.

- ``block``             a program's block as a tree, and the helpers every edit shares
- ``analysis``          the level (per term, per document, per posting) and sign of every expression
- ``sites``             where edits may go: constants, features, gathers
- ``point_edits``       one small change to one formula or constant
- ``splice``            add a whole evidence channel (fields, proximity, variants, feedback);
  ``splice_templates``  the channels' code
- ``crossover``         recombine two parents
- ``checks``            whether an edited block may be kept (``Checker``)
- ``mutator``           ``mutate(code, rng)``: draws one operator and returns a ``Mutation``

Public: ``mutate``, ``crossover``. Deterministic under a seeded generator; nothing is executed.

May import: evorank.evaluators, evorank.threadsafe_ast
"""
