"""The ``evorank`` command line.

- ``main``      every subcommand's parser and the dispatch (commands imported lazily, so ``--help`` is fast)
- ``run``       ``evorank run``: the configuration, the run folder, the engine, the closing summary
- ``evaluate``  ``evorank eval`` and ``evorank datasets``
- ``live``      what a running job shows: the progress line, ``run.log``, the closing summary

Public: ``main``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast, evorank.evolve
"""
