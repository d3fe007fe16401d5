"""The index of a collection: analysed once, cached on disk, loaded memory-mapped.

- ``analyzer``  Lucene's EnglishAnalyzer as Pyserini uses it for BEIR "flat" indexes
- ``index``     ``Index`` (what programs read), ``get_index``/``load_index``, the cache folders
- ``build``     the format, the in-memory reference build, the atomic commit of a built folder
- ``stream``    the bounded-memory streaming build every collection takes; ``analyse`` (its worker half),
                ``merge`` (term-ordered runs and their merge), ``files`` (spill and ``.npy`` writers)
- ``views``     the vocabulary's prefix groups and character n-grams, built on first use and cached beside the index

Public: ``Index``, ``get_index``, ``load_index``, ``Analyzer``, ``analyze``.

May import: evorank.evaluators.errors, evorank.threadsafe_ast
"""
