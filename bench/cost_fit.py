"""Fit and check the constants of ``evaluators/cost.py`` (the BM25 seed's cost model) (run by hand).

    python bench/cost_fit.py measure OUT.json COLLECTION...     # in the environment that has their indexes
    python bench/cost_fit.py fit FIT.json... --check CHECK.json...

``measure`` runs the BM25 seed in this process on each collection: the CPU time (``time.thread_time``) of its first
``prepare`` (pages not yet touched) and of each query's ``score`` + top-k, the least of three runs (what a query
costs without other jobs in the way), with the model's features (documents, postings, each query's distinct
terms and the postings of their rows). ``fit`` finds the non-negative constants of

    query ms = fixed + per_term x terms + per_doc x documents + per_posting x postings of the query's terms

that best fit the queries of the FIT files (each collection weighted equally) and prints, per collection, the
estimate against the measurement, for the FIT files and for the CHECK files, which the fit never saw; and the
nanoseconds per posting of each ``prepare``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def measure(out: Path, addresses: list[str]) -> None:
    import numpy as np

    from evorank.evaluators.evaluate import load_topics
    from evorank.evaluators.program.ranking import plain_scores, score_buffer, top_k
    from evorank.evaluators.program.source import load_program

    bm25, rows = load_program("bm25"), []
    for address in addresses:
        t = load_topics(address)
        index = t.index
        c = time.thread_time()
        state = bm25.prepare(index)
        prepare = time.thread_time() - c
        buffer, cpu = score_buffer(index.n_docs), [float("inf")] * len(t.queries)
        for _ in range(3):
            for i, q in enumerate(t.queries):
                c = time.thread_time()
                top_k(plain_scores(bm25.score(q, index, state), index.n_docs, buffer), t.depth())
                cpu[i] = min(cpu[i], (time.thread_time() - c) * 1e3)
        df = np.asarray(index.df)
        rows.append({"name": address, "n_docs": int(index.n_docs), "nnz": int(index.term_doc.nnz),
                     "prepare_cpu_s": prepare, "query_cpu_ms": cpu,
                     "touched": [float(df[q.term_ids].sum()) for q in t.queries],
                     "n_terms": [len(q.term_ids) for q in t.queries]})
        print(f"{address}: prepare {prepare:.3f} s, queries {sum(cpu) / 1e3:.3f} s", flush=True)
    out.write_text(json.dumps(rows))


def fit(fit_files: list[Path], check_files: list[Path]) -> None:
    import numpy as np
    from scipy.optimize import nnls

    def load(files):
        return [c for f in files for c in json.loads(f.read_text())]

    def design(cols):
        x, y, w = [], [], []
        for c in cols:
            for ms, touched, terms in zip(c["query_cpu_ms"], c["touched"], c["n_terms"]):
                x.append([1.0, terms, c["n_docs"], touched])
                y.append(ms)
                w.append(1.0 / len(c["query_cpu_ms"]))
        return np.array(x), np.array(y), np.sqrt(np.array(w))

    fitted, checked = load(fit_files), load(check_files)
    x, y, w = design(fitted)
    coef, _ = nnls(x * w[:, None], y * w)
    print(f"QUERY_FIXED_MS = {coef[0]:.3f}  QUERY_US_PER_TERM = {coef[1] * 1e3:.2f}  "
          f"QUERY_NS_PER_DOC = {coef[2] * 1e6:.1f}  QUERY_NS_PER_POSTING = {coef[3] * 1e6:.2f}")
    for label, cols in (("fit", fitted), ("check", checked)):
        est_total = meas_total = 0.0
        for c in cols:
            xc, yc, _ = design([c])
            est, meas = float((xc @ coef).sum()) / 1e3, float(yc.sum()) / 1e3
            est_total, meas_total = est_total + est, meas_total + meas
            print(f"  {label:5} {c['name']:45} queries est {est:7.3f} s  measured {meas:7.3f} s  {est / meas - 1:+.0%}"
                  f"   prepare {c['prepare_cpu_s'] / c['nnz'] * 1e9:5.1f} ns/posting")
        if cols:
            print(f"  {label:5} all: est {est_total:.2f} s  measured {meas_total:.2f} s  {est_total / meas_total - 1:+.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("out", type=Path)
    m.add_argument("collections", nargs="+")
    f = sub.add_parser("fit")
    f.add_argument("fit", nargs="+", type=Path)
    f.add_argument("--check", nargs="*", type=Path, default=[])
    args = ap.parse_args()
    if args.cmd == "measure":
        measure(args.out, args.collections)
    else:
        fit(args.fit, args.check)


if __name__ == "__main__":
    main()
