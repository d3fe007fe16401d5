import numpy as np
import pytest

from evorank.evaluators.data.collections import load_collection
from evorank.evaluators.index.index import get_index, load_index


def test_index_statistics(tiny_collection):
    idx = get_index(load_collection(str(tiny_collection)))
    assert idx.n_docs == 8 and idx.doc_ids[0] == "d1"
    t = idx.term_id("electr")
    assert t >= 0 and idx.term_id("nonexistent") == -1
    docs, tfs = idx.postings(t)
    assert [idx.doc_ids[d] for d in docs] == ["d1", "d2", "d7"] and tfs.tolist() == [1.0, 1.0, 2.0]  # d7 says it in title and text
    assert idx.df[t] == 3 and idx.cf[t] == 4
    assert idx.doc_len[7] == 0  # empty document
    assert idx.total_tokens == idx.doc_len.sum() == idx.doc_term.sum() == idx.term_doc.sum()
    terms, tf = idx.doc_terms(0)
    assert sorted(idx.terms[i] for i in terms) == sorted(set(idx.terms[i] for i in terms))
    assert (idx.term_doc.T != idx.doc_term).nnz == 0


def test_index_is_read_only(tiny_collection):
    idx = get_index(load_collection(str(tiny_collection)))
    with pytest.raises(ValueError, match="read-only"):
        idx.doc_len[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        idx.term_doc.data[0] = 5


def test_cache_is_reused_then_rebuilt_when_stale(tiny_collection, cache_dir):
    coll = load_collection(str(tiny_collection))
    first = get_index(coll)
    again = get_index(load_collection(str(tiny_collection)))
    assert again.path == first.path
    with open(tiny_collection / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d9", "title": "", "text": "new document about solar"}\n')
    rebuilt = get_index(load_collection(str(tiny_collection)))
    assert rebuilt.n_docs == 9 and rebuilt.path != first.path
    assert not first.path.exists()  # the stale build was removed
    assert [p.name for p in (cache_dir / "indexes").iterdir() if p.name.startswith(".tmp")] == []


def test_corrupt_cache_is_detected_and_rebuilt(tiny_collection):
    coll = load_collection(str(tiny_collection))
    idx = get_index(coll)
    path = idx.path
    expected = np.array(idx.doc_len)
    del idx
    raw = bytearray((path / "doc_len.npy").read_bytes())
    raw[-1] ^= 0xFF  # same size, different content
    (path / "doc_len.npy").write_bytes(bytes(raw))
    logged = []
    fixed = get_index(coll, log=logged.append)
    assert "corrupt" in logged[0] and np.array_equal(fixed.doc_len, expected)
    (path / "df.npy").unlink()
    assert get_index(coll).n_docs == 8
    (path / "manifest.json").write_text("{not json")
    assert get_index(coll).n_docs == 8
    assert load_index(path).n_docs == 8
