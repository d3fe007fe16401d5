"""The streaming, parallel, bounded-memory build (index/stream.py) writes the same index as the in-memory reference
(index/build.py build_arrays): array-equal and byte-identical files, on the shared collections and on random ones
(titles, empty documents, stopwords only, long tokens, underscores, non-Latin text, duplicate ids), with small
memory budgets that force many runs and merge blocks, with one worker and with several."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from evorank.evaluators.index.analyzer import Analyzer
from evorank.evaluators.data.collections import load_collection
from evorank.evaluators.errors import CollectionError
from evorank.evaluators.index.index import get_index, load_index
from evorank.evaluators.index.build import ARRAYS, build_arrays, write_index
from evorank.evaluators.index.stream import build_streaming

from conftest import write_beir

PIECES = ["the", "The", "John's", "dog’s", "U.S.A.", "3.14", "1,000", "don't", "a.1", "___", "__x", "x" * 300,
          "café", "naïve", "Ünïcode", "h2o", "covid-19", "running", "connections", "us", "is", "ОЧЕНЬ", "日本語",
          "x_y", "_", "0.5.6", "apple", "apples", "bank", "banking", "river's", "of", "and", "İstanbul", "e-mail",
          "(see", "a/b)", "—", "x" * 260 + "'s", "it's.", "don't,"]


def random_text(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choice(PIECES) + rnd.choice(["", " ", " ", ". ", ", ", "\n", "\t", "\xa0", "\u3000", "\x1c"])
                   for _ in range(n))


def random_corpus(seed: int, n: int = 300) -> list[tuple[str, str, str]]:
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        title = random_text(rnd, rnd.randint(0, 5)) if rnd.random() < 0.5 else ""
        body = random_text(rnd, rnd.randint(0, 60)) if rnd.random() < 0.95 else ""
        doc_id = f"d{rnd.randint(0, n // 2)}" if rnd.random() < 0.05 else f"doc-{i}"  # a few repeated ids
        docs.append((doc_id, title, body))
    return docs


def assert_same_index(folder, reference_docs, tmp_path):
    """``folder`` (built by the streaming path) holds exactly what build_arrays + write_index write."""
    arrays, doc_ids, terms, warnings, has_titles = build_arrays(reference_docs)
    ref = tmp_path / "reference"
    write_index(ref, "x", "fp", arrays, doc_ids, terms, warnings, has_titles)
    for key in ARRAYS:
        got = np.load(folder / f"{key}.npy")
        assert got.dtype == arrays[key].dtype and np.array_equal(got, arrays[key]), key
        assert (folder / f"{key}.npy").read_bytes() == (ref / f"{key}.npy").read_bytes(), key
    for name in ("terms.txt", "doc_ids.txt"):
        assert (folder / name).read_bytes() == (ref / name).read_bytes(), name
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else None
    if manifest is not None:
        expected = json.loads((ref / "manifest.json").read_text())
        for key in ("n_docs", "n_terms", "total_tokens", "warnings", "has_titles", "files"):
            assert manifest[key] == expected[key], key


def test_fast_analyzer_path_equals_token_by_token():
    a = Analyzer(cache_limit=50)  # small: the memo is emptied many times on the way
    rnd = random.Random(0)
    for _ in range(3000):
        text = random_text(rnd, rnd.randint(0, 30))
        start = rnd.randint(0, 5)
        assert a.analyze_positions(text, start) == a._analyze_positions_exact(text, start), text


@pytest.mark.parametrize("seed,memory_mb,workers", [(0, 1, 1), (1, 1, 2), (2, 64, 2), (3, 1, 3)])
def test_streaming_build_equals_in_memory_build_on_random_collections(seed, memory_mb, workers, tmp_path):
    docs = random_corpus(seed)
    blocks_folder = write_beir(tmp_path / "coll", {}, {"q": "apple"}, [("q", "doc-1", 1)])
    with open(blocks_folder / "corpus.jsonl", "w") as f:
        for doc_id, title, body in docs:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": body}) + "\n")
    coll = load_collection(str(blocks_folder))
    out = tmp_path / "built"
    out.mkdir()
    built = build_streaming(coll.iter_doc_blocks(block_bytes=2000), out, memory_mb=memory_mb, workers=workers)
    assert built.n_docs == len(docs) and (built.warnings != []) == (len({d for d, _, _ in docs}) < len(docs))
    assert_same_index(out, docs, tmp_path)
    assert not (out / ".spill").exists()


def test_streaming_build_of_parsed_blocks_and_edge_cases(tmp_path):
    from evorank.evaluators.data.collections import DocBlock

    for docs in ([], [("a", "", "")], [("a", "", "the of and")], [("a", "Title only", "")]):
        out = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        blocks = [DocBlock(parsed=tuple(docs))] if docs else []
        built = build_streaming(blocks, out, memory_mb=1, workers=2)
        assert built.n_docs == len(docs)
        assert_same_index(out, docs, tmp_path / f"ref{len(list(tmp_path.iterdir()))}")


def test_raw_blocks_parse_like_the_file_reader(tmp_path):
    folder = write_beir(tmp_path / "c", {"a": ("T", "one two"), "b": "three"}, {"q": "one"}, [("q", "a", 1)])
    lines = (folder / "corpus.jsonl").read_bytes().split(b"\n")
    (folder / "corpus.jsonl").write_bytes(lines[0] + b"\r\n\n" + lines[1] + b"\rnot json\n")
    coll = load_collection(str(folder))
    with pytest.raises(CollectionError) as by_file:
        list(coll.iter_docs())
    with pytest.raises(CollectionError) as by_blocks:
        [d for b in coll.iter_doc_blocks(block_bytes=8) for d in b.docs()]
    assert str(by_file.value) == str(by_blocks.value) and "line 4" in str(by_file.value)


def test_get_index_builds_by_streaming_and_loads(tiny_collection, monkeypatch):
    monkeypatch.setenv("EVORANK_INDEX_MEMORY_MB", "1")
    coll = load_collection(str(tiny_collection))
    index = get_index(coll, workers=2)
    docs = list(coll.iter_docs())
    assert index.n_docs == len(docs) and load_index(index.path).n_terms == index.n_terms
    arrays, doc_ids, terms, _, _ = build_arrays(docs)
    assert index.terms == tuple(terms) and index.doc_ids == doc_ids
    assert all(np.array_equal(np.asarray(getattr(index, a)), arrays[a]) for a in ("doc_len", "df", "cf"))


@pytest.mark.shared_data
@pytest.mark.parametrize("address", ["local:cranfield", "local:cisi", "local:med", "beir/scifact/test"])
def test_streaming_build_equals_in_memory_build_on_shared_collections(address, tmp_path, monkeypatch):
    coll = load_collection(address)
    monkeypatch.setenv("EVORANK_INDEX_MEMORY_MB", "4")  # several runs and merge blocks
    index = get_index(coll, cache_dir=tmp_path / "cache", workers=2)
    assert_same_index(index.path, coll.iter_docs(), tmp_path)


def test_streaming_build_from_a_threaded_process(tmp_path):
    """A process with threads (a Dask worker) builds through forkserver workers; same result."""
    import threading

    from evorank.evaluators.data.collections import DocBlock

    docs = random_corpus(7, n=120)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        out = tmp_path / "built"
        out.mkdir()
        blocks = [DocBlock(parsed=tuple(docs[i:i + 30])) for i in range(0, len(docs), 30)]
        build_streaming(blocks, out, memory_mb=1, workers=2)
    finally:
        stop.set()
    assert_same_index(out, docs, tmp_path)
