"""Benchmark of the sandboxed evaluator (run by hand; not a test).

    export IR_DATASETS_HOME=<writable copy of ../shared/ir_datasets> EVORANK_DATA=/work/shared/datasets
    python bench/sandbox_speed.py [--suite dev] [--workers 2] [--reps 15] [--batch 12]

Prints:
1. per-(candidate, collection) sandbox overhead: an empty-but-valid program (all scores -inf, and all
   zeros = 1,000 results per query) run through ``run_sandboxed`` minus the same program run in
   process with ``rank()``; median over --reps runs, per collection;
2. end-to-end per-task cost through the Evaluator (loky workers, IPC, trusted ``measure()``);
3. wall time of one BM25 candidate fully evaluated on the suite (warm workers; target <= 3 s);
4. candidates per minute on the suite with --workers workers, cascade off and on.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from evorank.evaluators.evaluate import load_topics  # noqa: E402
from evorank.evaluators.cascade import CascadeConfig  # noqa: E402
from evorank.evaluators.parallel import Evaluator, Limits  # noqa: E402
from evorank.evaluators.program.source import compile_program, seed_path, split_block  # noqa: E402
from evorank.evaluators.program.ranking import rank  # noqa: E402
from evorank.evaluators.sandbox.jail import prepare_process  # noqa: E402
from evorank.evaluators.sandbox.runner import isolation_layers, run_sandboxed  # noqa: E402
from evorank.evaluators.data.suites import resolve_collections  # noqa: E402

BM25 = seed_path("bm25").read_text(encoding="utf-8")
QL = seed_path("ql_dirichlet").read_text(encoding="utf-8")
EMPTY = "import numpy as np\n# EVOLVE-BLOCK-START\ndef score(query, index, state):\n    return np.full(index.n_docs, -np.inf)\n# EVOLVE-BLOCK-END\n"
ZEROS = "import numpy as np\n# EVOLVE-BLOCK-START\ndef score(query, index, state):\n    return np.zeros(index.n_docs)\n# EVOLVE-BLOCK-END\n"


def variants(n: int) -> list[tuple[str, str]]:
    """A mix like an evolution batch: BM25 and QL parameter variants, and some clearly worse programs
    (first query term only, shortest matching document first, raw tf without idf). (source, seed) pairs."""
    split = split_block(BM25)
    out = []
    for k1, b in [(1.2, 0.75), (0.6, 0.3), (2.0, 0.9), (1.5, 0.5)]:
        out.append((split.join(split.block.replace("K1 = 0.9", f"K1 = {k1}").replace("B = 0.4", f"B = {b}")), BM25))
    qsplit = split_block(QL)
    for mu in (1000.0, 3000.0):
        out.append((qsplit.join(qsplit.block.replace("MU = 2000.0", f"MU = {mu}")), QL))
    weak = [
        split.block.replace("rows = state[query.term_ids]", "rows = state[query.term_ids[:1]]"),
        split.block.replace("return np.where(matched, scores, -np.inf)", "return np.where(matched, -index.doc_len, -np.inf)"),
        split.block.replace("weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices])",
                            "weights = tf"),
    ]
    assert all(b != split.block for b in weak), "the BM25 seed no longer has a line these variants edit"
    out += [(split.join(b), BM25) for b in weak]
    return (out * ((n + len(out) - 1) // len(out)))[:n]


def timed_ms(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(fn, reps: int) -> float:
    return statistics.median(timed_ms(fn, reps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="dev")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=12)
    args = ap.parse_args()

    addresses = resolve_collections(args.suite, None)
    t0 = time.perf_counter()
    topics = [load_topics(a) for a in addresses]
    print(f"loaded {len(topics)} collections in {time.perf_counter() - t0:.1f} s (trusted, once)")
    prepare_process()
    print("isolation layers active:", ", ".join(isolation_layers(topics[0].index)))

    print("\n1. sandbox overhead per (candidate, collection), serial, over", args.reps, "runs [ms]: median (min)")
    print(f"   {'collection':<20}{'queries':>8}{'in-process':>14}{'sandboxed':>14}{'overhead':>14}"
          f"{'zeros: in-proc':>16}{'sandboxed':>14}{'overhead':>14}")
    limits = Limits(timeout_s=60)
    overheads, overheads_min, overheads_z = [], [], []
    for t in topics:
        cells = []
        for j, src in enumerate((EMPTY, ZEROS)):
            prog = compile_program(src)
            inproc = timed_ms(lambda: rank(prog, t.index, t.queries, 1000), args.reps)
            sandboxed = timed_ms(lambda: run_sandboxed(src, t.index, t.queries, 1000, limits), args.reps)
            med = (statistics.median(inproc), statistics.median(sandboxed))
            low = (min(inproc), min(sandboxed))
            cells += [f"{med[0]:.1f} ({low[0]:.1f})", f"{med[1]:.1f} ({low[1]:.1f})",
                      f"{med[1] - med[0]:.1f} ({low[1] - low[0]:.1f})"]
            if j == 0:
                overheads.append(med[1] - med[0])
                overheads_min.append(low[1] - low[0])
            else:
                overheads_z.append(med[1] - med[0])
        print(f"   {t.name:<20}{len(t.queries):>8}" + "".join(f"{c:>14}" if i % 3 else f"{c:>14}" for i, c in
                                                             enumerate(cells)))
    print(f"   overhead, median over collections: {statistics.median(overheads):.1f} ms empty "
          f"(best case {statistics.median(overheads_min):.1f} ms), {statistics.median(overheads_z):.1f} ms with "
          "1,000 results per query  [target <= 50 ms]")

    print(f"\n2-4. Evaluator with {args.workers} workers on '{args.suite}'")
    ev = Evaluator(addresses, n_workers=args.workers, limits=limits, topics=topics, cascade=None)
    t0 = time.perf_counter()
    first = ev.evaluate([BM25], [BM25])[0]
    print(f"   cold start (workers spawn, map indexes) + BM25: {time.perf_counter() - t0:.2f} s "
          f"(fitness {first.fitness:.4f})")
    ev.evaluate([BM25] * args.workers, [BM25] * args.workers)  # every worker warm
    n_tasks = len(topics)
    e2e = median_ms(lambda: ev.evaluate([EMPTY]), max(3, args.reps // 3))
    print(f"   empty program, all collections: {e2e:.0f} ms wall = {e2e * args.workers / n_tasks:.1f} ms per "
          f"(candidate, collection) per worker (fork, isolation, IPC, parse, trusted measure)")
    bm = median_ms(lambda: ev.evaluate([BM25], [BM25]), max(3, args.reps // 3))
    res = ev.evaluate([BM25], [BM25])[0]
    print(f"   BM25 fully evaluated: {bm / 1e3:.2f} s wall (target <= 3 s); fitness {res.fitness:.4f}, "
          f"stage-1 fitness {res.stage1_fitness:.4f}, latency {res.latency_ms:.3f} ms/query")

    batch = variants(args.batch)
    t0 = time.perf_counter()
    full = ev.evaluate([s for s, _ in batch], [sd for _, sd in batch])
    wall_off = time.perf_counter() - t0
    ev.close()
    evc = Evaluator(addresses, n_workers=args.workers, limits=limits, topics=topics, cascade=CascadeConfig())
    evc.evaluate([BM25] * args.workers, [BM25] * args.workers)  # warm
    parent = {BM25: evc.evaluate([BM25], [BM25])[0].stage1_fitness, QL: evc.evaluate([QL], [QL])[0].stage1_fitness}
    t0 = time.perf_counter()
    casc = evc.evaluate([s for s, _ in batch], [sd for _, sd in batch], [parent[sd] for _, sd in batch])
    wall_on = time.perf_counter() - t0
    evc.close()
    stopped = sum(r.stage == 1 for r in casc)
    same = all(a.fitness == b.fitness for a, b in zip(full, casc) if b.stage == 2)
    print(f"   batch of {len(batch)} BM25/QL variants, cascade off: {wall_off:.2f} s = "
          f"{60 * len(batch) / wall_off:.0f} candidates/min")
    print(f"   same batch, cascade on (parent = seed's stage-1 fitness, threshold 0.9): {wall_on:.2f} s = "
          f"{60 * len(batch) / wall_on:.0f} candidates/min; {stopped} of {len(batch)} stopped at stage 1; "
          f"full-stage fitness identical to cascade-off: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
