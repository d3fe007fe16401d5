"""The trusted evaluation side: collections, the index, ranking programs, the sandbox, metrics.

Subpackages, lowest first:

- ``index``    text analysis (Lucene's EnglishAnalyzer) and the memory-mapped inverted/forward index
- ``program``  a ranking program's source, its static checks, running it over queries, its output made safe
- ``sandbox``  the jail a candidate runs in, the byte protocol out of it, ``prepare()`` states shared across
               candidates
- ``data``     collections from ir_datasets, BEIR folders or the built-in demo; named suites

and, beside them, what evaluates: ``errors`` (messages fit to show a user, and the check that an output path can be
written; imported by everything), ``metrics`` (trusted metrics and fitness), ``significance`` (paired tests of a
program against a baseline, per query), ``evaluate`` (in-process evaluation), ``parallel`` (many candidates,
sandboxed), ``cascade`` (its query sample and threshold, and whether a candidate ranks on that sample as the
program it started from: a no-op), ``tasks`` (one evaluation task and its worker processes), ``workers`` (the
workers' environment; workers forked from a one-shot command), ``cluster`` (Dask), ``splits`` (train/validation
queries), ``cost`` (estimated evaluation cost), ``availability`` (what is on this machine).

Nothing here imports ``evorank.evolve``: evaluation knows no proposer, prompt or run loop.

May import: evorank.threadsafe_ast, evorank.evaluators.index, evorank.evaluators.program, evorank.evaluators.sandbox,
evorank.evaluators.data
"""
