"""The seed programs every run may start from: ``bm25`` (Lucene BM25) and ``ql_dirichlet`` (Lucene LMDirichlet).

They are ranking programs (read as text, run like any candidate), not library code.

May import: (nothing)
"""
