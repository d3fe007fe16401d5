"""The evolution engine: propose, evaluate, archive, select, and again.

- ``loop``         ``Engine``: drives a run (iterations, islands, in-flight proposals, repairs, resume, signals)
- ``proposers``    ``make_proposer``: the offline mutator or the members of ``--llm``; ``OfflineProposer``
- ``descriptors``  MAP-Elites descriptors of a program (evidence read, recall vs precision, size, work per query)
- ``evidence``     which kinds of index evidence a program reads, from its syntax tree
- ``heldout``      ``HeldoutTracker``: each new best measured on collections the run never selects on
- ``pruning``      ``--prune-best``: the run's best with each part its validation queries do not support removed
- ``provenance``   the docstring an evolved program carries into ``best.py`` and exports

Public: ``Engine``, ``open_run_store``, ``make_proposer``, ``describe``, ``evidence_kinds``, ``program_docstring``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast, evorank.evolve.config,
evorank.evolve.proposal, evorank.evolve.offline, evorank.evolve.llm
"""
