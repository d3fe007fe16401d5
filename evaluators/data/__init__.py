"""Test collections and suites: documents, judged queries and judgements, from any of three sources.

- ``collections``  ``load_collection``: ir_datasets ids, BEIR-layout folders (``local:<name>``), ``builtin:demo``
                   (``demo/``, shipped)
- ``suites``       named suites and per-collection settings, from ``suites.toml``

Public: ``load_collection``, ``resolve``, ``get_suite``, ``resolve_collections``.

May import: evorank.evaluators.errors, evorank.evaluators.index
"""
