"""The evolution side of evorank: who proposes candidate programs, the loop that evaluates and archives them,
and the command line that drives and inspects runs.

Two modules here are the vocabulary every subpackage shares: ``config`` (``RunConfig``: a run's settings, resolved
from defaults, a TOML file and flags) and ``proposal`` (``Proposal``, ``ArchiveView``, the ``Proposer`` protocol
and the order in which the engine calls a proposer). The subpackages, lowest first:

- ``offline``     the genetic-programming mutator (``--llm offline``): point edits, splices of evidence channels,
                  crossover, each edit checked before it is kept
- ``llm``         chat-model and command proposers: client, prompts, directions, reply parsing, repairs;
  ``llm.mend``    the trusted, parse-only mends of a model's candidate
- ``engine``      the loop (propose, evaluate, archive), MAP-Elites descriptors, held-out tracking, which proposer
                  a run uses, the docstring an evolved program carries
- ``inspection``  what a run's data looks like to people: status/top/show/diff/lineage, the HTML report, export,
                  transfer to held-out collections
- ``cli``         the ``evorank`` command: parsers, ``run``, ``eval``/``datasets``, the live progress line

Layering (checked by tests/test_module_structure.py from each package's ``May import`` line): a subpackage imports
only those below it; nothing under ``evolve`` is imported by ``evaluators`` or ``archive``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast
"""
