"""Ranking programs as code: the source and its EVOLVE-BLOCK, the static checks, running one over queries.

- ``source``     a program's text, its block, compiled into ``prepare``/``score``; where seeds and examples live;
                 ``contract.md`` is the contract programs are written against (and what a model is shown)
- ``checks``     static checks, run in the trusted process before any of a candidate executes
- ``payload``    the literal data (numbers, strings) a program carries, and its bound
- ``export_check`` the exportable subset: the allowlist a program must stay within to be exported
- ``ranking``    ``rank``: analysed queries in, validated top-k rankings out (used in the jail and in-process);
                 ``allocator``: per-query arrays kept mapped in a scoring loop
- ``parts``      what a program adds over its seed, read from the two syntax trees, and the program without each
- ``fusion``     several programs written as one that sums their per-query z-scores (CombSUM), and back
- ``output``     text a candidate produced, made safe to show (truncated, cleaned, fenced, code blocks nothing
                 inside can close, hidden characters escaped)

Public: ``load_program``, ``compile_program``, ``split_block``, ``static_check``, ``rank``, ``make_queries``,
``fence``, ``verify_exportable``.

May import: evorank.evaluators.errors, evorank.evaluators.index, evorank.threadsafe_ast
"""
