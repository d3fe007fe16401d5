"""Generate a synthetic BEIR-layout collection for scale work (run by hand; nothing here is shipped).

    python bench/synthetic.py OUT --docs 1000000 --tokens 60 [--queries 200] [--query-tokens 4] [--seed 0]

Documents are ``--tokens`` words on average (uniform between half and 1.5 times that), drawn from a
Zipf-distributed vocabulary of ``--vocab`` made-up lower-case words (exponent ``--zipf``, default 1.07
as in English text; a smaller exponent gives more distinct words per document, i.e. more postings); about one in seven gets a title of 4 words. Each query has ``--query-tokens`` words from the
middle of the frequency range and 1-10 relevant documents, into which the query's words are woven,
so rankers have something to find. Words are built from syllables the analyzer keeps whole (no
stopwords, no digits); stemming conflates a few of them, as it would real words. ``--query-words zipf`` draws the
query words from the documents' Zipf distribution instead (long natural-language queries: common words too, so
they touch many more postings). Output: corpus.jsonl, queries.jsonl, qrels/test.tsv, written in chunks (memory
stays small whatever the size).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cr", "dr",
           "gr", "pl", "st", "tr", "sk", "sn", "kl", "fl")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea", "io")


def vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct made-up words (2-4 syllables)."""
    words: set[str] = set()
    out = []
    while len(out) < size:
        n = int(rng.integers(2, 5))
        w = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(n))
        w += "x" if rng.random() < 0.1 else ""
        if w not in words:
            words.add(w)
            out.append(w)
    return np.array(out, dtype=object)


def write_collection(folder: Path, n_docs: int, doc_tokens: int, n_queries: int = 200, query_tokens: int = 4,
                     vocab_size: int = 300_000, seed: int = 0, chunk: int = 50_000, log=print,
                     zipf: float = 1.07, query_words: str = "mid") -> Path:
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    vocab = vocabulary(vocab_size, rng)
    cdf = np.cumsum(1.0 / np.arange(1, vocab_size + 1) ** zipf)
    cdf /= cdf[-1]
    mid = np.arange(vocab_size // 200, vocab_size // 10)  # neither stopword-like nor hapaxes
    if query_words == "zipf":
        queries = [np.searchsorted(cdf, rng.random(query_tokens)) for _ in range(n_queries)]
    else:
        queries = [rng.choice(mid, size=query_tokens, replace=query_tokens > len(mid)) for _ in range(n_queries)]
    relevant = [rng.choice(n_docs, size=int(rng.integers(1, 11)), replace=False) for _ in range(n_queries)]
    inject: dict[int, list[int]] = {}
    for qi, docs in enumerate(relevant):
        for d in docs:
            inject.setdefault(int(d), []).extend(queries[qi].tolist())
    t0 = time.monotonic()
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for start in range(0, n_docs, chunk):
            n = min(chunk, n_docs - start)
            lengths = rng.integers(max(1, doc_tokens // 2), doc_tokens * 3 // 2 + 1, size=n)
            words = np.searchsorted(cdf, rng.random(int(lengths.sum())))
            ends = np.cumsum(lengths)
            lines = []
            for i in range(n):
                doc = start + i
                ids = words[ends[i] - lengths[i]:ends[i]].tolist() + inject.get(doc, [])
                title = " ".join(vocab[ids[:4]]) if doc % 7 == 0 else ""
                lines.append(json.dumps({"_id": f"d{doc}", "title": title, "text": " ".join(vocab[ids])}))
            f.write("\n".join(lines) + "\n")
            if log:
                log(f"  {start + n:,} / {n_docs:,} documents ({time.monotonic() - t0:.0f} s)")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for qi, words in enumerate(queries):
            f.write(json.dumps({"_id": f"q{qi}", "text": " ".join(vocab[words])}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qi, docs in enumerate(relevant):
            for d in docs:
                f.write(f"q{qi}\td{d}\t1\n")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--tokens", type=int, default=60, help="mean words per document (default 60)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--query-tokens", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zipf", type=float, default=1.07, help="Zipf exponent of word frequencies (default 1.07)")
    ap.add_argument("--query-words", choices=("mid", "zipf"), default="mid",
                    help="query words from the middle of the frequency range (default) or drawn as document words")
    args = ap.parse_args()
    write_collection(args.out, args.docs, args.tokens, args.queries, args.query_tokens, args.vocab, args.seed,
                     zipf=args.zipf, query_words=args.query_words)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
