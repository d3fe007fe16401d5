"""evorank from Python (notebooks, scripts): what the ``evorank`` command does, as functions and objects. The
command line calls these same functions.

- ``runs``        ``open_run(path) -> Run``: status, programs (a pandas DataFrame), best, one program with its code,
                  metrics, parent and lineage, export, comparison of two programs; consistent snapshots of a run
                  that is being written
- ``evaluation``  ``evaluate(program, suite=..., datasets=..., sandbox=True) -> Evaluation``: metrics per
                  collection, per-query values, pandas views
- ``evolution``   ``run_evolution(config) -> Run``: a run from Python; ``EvolutionJob``, the steps ``evorank run``
                  drives with its progress line around them
- ``run_folder``  a new run's folder: checked before anything is written, removed again if the run archived nothing

The root package exposes ``evorank.open_run``, ``evorank.evaluate`` and ``evorank.run_evolution`` lazily, so that
``import evorank`` stays cheap. pandas is imported only by the views that return DataFrames.

Public: ``open_run``, ``Run``, ``Program``, ``Comparison``, ``evaluate``, ``Evaluation``, ``run_evolution``,
``run_config``, ``EvolutionJob``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast, evorank.evolve.config,
evorank.evolve.engine, evorank.evolve.llm, evorank.evolve.inspection
"""
