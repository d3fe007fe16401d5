"""Benchmark the evaluator core (run by hand; prints ratios against a reference measured in the same run).

1. BM25 seed on `quick`: prepare + scoring + top-1000 over all queries, vs bm25s (method="lucene",
   k1=0.9, b=0.4) indexing + top-1000 retrieval fed the very same tokens. Target: ratio <= 1.5.
2. Whole `dev` suite with the BM25 seed from a warm index cache: wall time in this process (imports
   already done) and in a fresh `evorank eval` process, in process and in the sandbox. Target: <= 3 s.
3. Cold index build of `dev` (empty cache).

Needs the shared data: IR_DATASETS_HOME (a writable copy of shared/ir_datasets) and
EVORANK_DATA=shared/datasets. Usage: python bench/eval_speed.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import bm25s
    from bm25s.tokenization import Tokenized

    from evorank.evaluators.evaluate import evaluate_on, load_topics
    from evorank.evaluators.program.source import load_program
    from evorank.evaluators.program.ranking import rank
    from evorank.evaluators.data.suites import get_suite


    # indexes start cold
    cache = Path(tempfile.mkdtemp(prefix="evorank-bench-"))
    os.environ["EVORANK_CACHE"] = str(cache)
    try:
        # -- 3. cold index build of dev -------------------------------------------------------
        t0 = time.perf_counter()
        dev = [load_topics(a) for a in get_suite("dev").collections]
        cold = time.perf_counter() - t0
        print(f"cold index build + query analysis, dev ({sum(t.index.n_docs for t in dev):,} docs): {cold:.2f} s")

        # -- 1. BM25 seed vs bm25s on quick ---------------------------------------------------
        bm25 = load_program("bm25")
        ours_total = theirs_total = 0.0
        for address in get_suite("quick").collections:
            topics = load_topics(address)
            index, queries = topics.index, topics.queries
            ours = best_of(lambda: rank(bm25, index, queries, k=1000), args.repeats)

            # bm25s gets the same analysed tokens: documents as term-id lists, queries as term ids.
            dt = index.doc_term
            doc_ids = [np.repeat(dt.indices[dt.indptr[d]:dt.indptr[d + 1]],
                                 dt.data[dt.indptr[d]:dt.indptr[d + 1]].astype(np.int64)).tolist()
                       for d in range(index.n_docs)]
            vocab = {t: i for i, t in enumerate(index.terms)}
            q_tokens = [list(q.terms) for q in queries]

            def bm25s_run():
                r = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
                r.index(Tokenized(ids=doc_ids, vocab=vocab), show_progress=False)
                qs = [[t for t in q if t in vocab] for q in q_tokens]
                keep = [q for q in qs if q]
                r.retrieve(keep, k=min(1000, index.n_docs), show_progress=False, n_threads=1)

            theirs = best_of(bm25s_run, args.repeats)
            ours_total += ours
            theirs_total += theirs
            print(f"{address:22s} evorank bm25 seed {ours * 1e3:8.1f} ms   bm25s {theirs * 1e3:8.1f} ms   "
                  f"ratio {ours / theirs:.2f}")
        print(f"quick total: evorank {ours_total * 1e3:.1f} ms, bm25s {theirs_total * 1e3:.1f} ms, "
              f"ratio {ours_total / theirs_total:.2f} (target <= 1.5)")

        # -- 2. dev suite from a warm cache -----------------------------------------------------
        evaluate_on(bm25, dev[0])  # warm-up

        def dev_inprocess():
            for a in get_suite("dev").collections:
                evaluate_on(bm25, load_topics(a))

        warm = best_of(dev_inprocess, args.repeats)
        print(f"dev suite, BM25 seed, warm cache, in-process: {warm:.2f} s (target <= 3 s)")
        for flags, how in ((["--in-process"], "in process"), ([], "in the sandbox (the default)")):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "evorank", "eval", "bm25", "--suite", "dev", "--json", *flags],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
            print(f"dev suite, BM25 seed, warm cache, fresh `evorank eval` process, {how}: "
                  f"{time.perf_counter() - t0:.2f} s")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
