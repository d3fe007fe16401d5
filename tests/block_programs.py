"""Shared by the tests of trusted edits (the mends: names, attributes, array_kinds): candidate programs built from
an EVOLVE-BLOCK, the seeds as donors, and a tiny index to run them on (trusted test programs only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
SEEDS = [("seed bm25", (REPO / "seeds" / "bm25.py").read_text()),
         ("seed ql_dirichlet", (REPO / "seeds" / "ql_dirichlet.py").read_text())]

HEAD = "import numpy as np\nimport scipy.sparse as sp\n\n# EVOLVE-BLOCK-START\n"
TAIL = "# EVOLVE-BLOCK-END\n"


def program(block: str) -> str:
    return HEAD + block + TAIL


def exec_module(code: str) -> dict:
    """The module's names, as the sandbox would define them."""
    namespace: dict = {}
    exec(compile(code, "<candidate>", "exec"), namespace)  # trusted test programs only
    return namespace


class TinyIndex:
    """3 terms x 4 documents, 6 postings: enough for the shapes to differ at every level."""

    def __init__(self):
        self.term_doc = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 1, 0, 0], [3, 1, 0, 1]], dtype=np.float32))
        self.n_terms, self.n_docs = self.term_doc.shape
        self.df = np.diff(self.term_doc.indptr)
        self.cf = np.asarray(self.term_doc.sum(axis=1)).ravel()
        self.doc_len = np.asarray(self.term_doc.sum(axis=0)).ravel().astype(np.float64)
        self.avg_doc_len = float(self.doc_len.mean())
        self.total_tokens = int(self.doc_len.sum())
        self.posting_positions = np.arange(self.total_tokens)


class TinyQuery:
    term_ids = np.array([0, 2])
    qtf = np.array([1.0, 1.0])
