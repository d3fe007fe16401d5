"""What each part of the search for gains that hold everywhere buys, on the dev suite's train and validation
queries (the only queries a search may look at); held-out numbers are printed last, as the transfer measurement.

The parts: the query-adaptive gate of the feedback channel, the ``consistent`` fitness in the search, and the
reported best chosen on validation under that fitness. Measured:

1. the gate on a channel built by hand: BM25 + the feedback channel (W_FB 0.3, 10 documents, 10 terms), gate open
   (FB_GATE -99) and at 0.5 ... 0.85, on the train and validation split of seed 0;
2. the gate in each run's best that has a feedback channel: as evolved vs the gate opened;
3. the best-choice rule, from each run's archive (no evaluation): the reported best (top 10 by train fitness, the
   best by validation fitness) under ``consistent`` vs under ``rankevolve``, their validation metrics;
4. the fitness in the search (``--ablation RUN --prefix RUN``): a run with ``--fitness rankevolve`` against the
   first as many proposals of a ``consistent`` run of the same seed (runs reproduce, so that prefix is the run
   it would have been), their reported bests evaluated on train, validation and held-out.

Every figure is a ratio to BM25 on the same queries: macro nDCG@10, macro R@100, and the worst collection's
nDCG@10. Usage (shared data as for ``evorank eval``):

    nice -n 5 python bench/robust_parts.py --runs /tmp/acceptance/new-s0 /tmp/acceptance/new-s1 \\
        [--ablation /tmp/acceptance/rankevolve-s0 --prefix /tmp/acceptance/new-s0]
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path

import numpy as np

METRICS = ("ndcg@10", "recall@100")
OPEN = -99.0  # an FB_GATE below any share of the query's idf mass: the gate always open


def feedback_program() -> str:
    """BM25 with the offline splice's feedback channel (fixed constants)."""
    from evorank.evaluators.program.source import seed_path
    from evorank.evolve.offline.splice import splice

    src = splice(seed_path("bm25").read_text(encoding="utf-8"), np.random.default_rng(0), "offline:splice_feedback").source
    for name, value in (("W_FB", 0.3), ("FB_DOCS", 10.0), ("FB_TERMS", 10.0)):
        src = re.sub(rf"(?m)^{name} = .*$", f"{name} = {value}", src)
    return src


def with_gate(source: str, gate: float) -> str:
    return re.sub(r"(?m)^FB_GATE = .*$", f"FB_GATE = {gate}", source)


def evaluate(sources: dict[str, str], addresses: list[str], seed: int, validation: float = 0.3) -> dict:
    """{label: {"train": {coll: metrics}, "validation": {...}}} of each program (sandboxed), BM25 under "bm25"."""
    from evorank.evaluators.parallel import Evaluator
    from evorank.evaluators.program.source import seed_path

    labels = ["bm25", *sources]
    codes = [seed_path("bm25").read_text(encoding="utf-8"), *sources.values()]
    with Evaluator(addresses, n_workers=2, cascade=None, seed=seed, validation=validation) as ev:
        results = ev.evaluate(codes, [None] * len(codes), None, labels)
    out = {}
    for label, res in zip(labels, results):
        if not res.ok:
            print(f"  {label} failed: {res.failure_reason}", file=sys.stderr)
            continue
        out[label] = {"train": {c.name: c.metrics for c in res.suite.collections}}
        if res.validation is not None:
            out[label]["validation"] = {c.name: c.metrics for c in res.validation.collections}
    return out


def ratios(metrics: dict, bm25: dict) -> str:
    """Macro nDCG@10, macro R@100 and the worst collection's nDCG@10, each relative to BM25's."""
    colls = list(bm25)
    macro = {m: np.mean([metrics[c][m] for c in colls]) / np.mean([bm25[c][m] for c in colls]) for m in METRICS}
    worst = min(metrics[c]["ndcg@10"] / bm25[c]["ndcg@10"] for c in colls)
    return f"nDCG@10 {macro['ndcg@10']:.4f}x  R@100 {macro['recall@100']:.4f}x  worst nDCG@10 {worst:.4f}x"


def show(title: str, results: dict, parts=("train", "validation")) -> None:
    print(f"\n{title}")
    for label, res in results.items():
        if label == "bm25":
            continue
        for part in parts:
            if part in res:
                print(f"  {label:<28} {part:<10} {ratios(res[part], results['bm25'][part])}")


def run_seed(run_dir: Path) -> int:
    from evorank.archive import RunStore

    with RunStore.open(run_dir, readonly=True) as store:
        return int(store.config().get("seed", 0))


def reported_best(run_dir: Path, fitness_name: str, upto: int | None = None, best_of: int = 10):
    """The run's reported best under ``fitness_name``: the ``best_of`` best by train fitness, then the best by
    validation fitness, recomputed from the archived train and validation metrics (BM25: the run's seed)."""
    from evorank.archive import RunStore
    from evorank.evaluators.metrics import fitness, fitness_spec

    spec = fitness_spec(fitness_name)
    with RunStore.open(run_dir, readonly=True) as store:
        progs = store.programs(status="accepted")
    bm25 = next(p for p in progs if p.operator == "seed" and p.features.get("seed_name") == "bm25")
    sizes = _sizes(tuple(bm25.metrics))
    val_ref = bm25.features.get("val_metrics")

    def score(metrics, ref):
        return fitness(metrics, spec, n_docs=sizes, reference=ref)

    pool = [p for p in progs if p.operator != "migration" and (upto is None or p.iteration <= upto)]
    top = sorted(pool, key=lambda p: (-score(p.metrics, bm25.metrics), p.id))[:best_of]
    return max(top, key=lambda p: (score(p.features["val_metrics"], val_ref) if p.features.get("val_metrics")
                                   else float("-inf"), score(p.metrics, bm25.metrics), -p.id)), bm25


@functools.lru_cache(maxsize=None)
def _sizes(addresses: tuple[str, ...]) -> dict[str, int]:
    from evorank.evaluators.evaluate import load_topics

    return {a: int(load_topics(a).index.n_docs) for a in addresses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=[], help="runs of the consistent search (their bests)")
    ap.add_argument("--ablation", help="a run with --fitness rankevolve")
    ap.add_argument("--prefix", help="the consistent run of the same seed, cut at the ablation's proposals")
    ap.add_argument("--suite", default="dev")
    ap.add_argument("--heldout", default="heldout")
    args = ap.parse_args()
    from evorank.archive import RunStore
    from evorank.evaluators.data.suites import resolve_collections

    dev = resolve_collections(args.suite, None)
    fb = feedback_program()
    gates = {"gate open": with_gate(fb, OPEN), **{f"FB_GATE {g}": with_gate(fb, g) for g in (0.5, 0.6, 0.7, 0.85)}}
    show("1. BM25 + feedback channel, by gate (dev, split of seed 0)", evaluate(gates, dev, 0))

    for run in map(Path, args.runs):
        seed = run_seed(run)
        best, _ = reported_best(run, "consistent")
        if "FB_GATE" not in best.code:
            print(f"\n2. {run}: best #{best.id} has no gated feedback channel")
            continue
        gate = re.search(r"(?m)^FB_GATE = (.*)$", best.code).group(1)
        show(f"2. {run}: best #{best.id} (FB_GATE {gate}) vs its gate opened (dev, split of seed {seed})",
             evaluate({f"#{best.id} as evolved": best.code, f"#{best.id} gate open": with_gate(best.code, OPEN)},
                      dev, seed))

    for run in map(Path, args.runs):
        print(f"\n3. {run}: the reported best by fitness (validation metrics from the archive, vs BM25's)")
        for name in ("consistent", "rankevolve"):
            best, bm25 = reported_best(run, name)
            print(f"  chosen under {name:<11} #{best.id:<5} validation: "
                  f"{ratios(best.features['val_metrics'], bm25.features['val_metrics'])}")

    if args.ablation and args.prefix:
        with RunStore.open(Path(args.ablation), readonly=True) as store:
            upto = max(p.iteration for p in store.programs())
        seed = run_seed(Path(args.ablation))
        ours, _ = reported_best(Path(args.prefix), "consistent", upto)
        theirs, _ = reported_best(Path(args.ablation), "rankevolve")
        programs = {f"consistent #{ours.id}": ours.code, f"rankevolve #{theirs.id}": theirs.code}
        show(f"4. the fitness in the search: {upto} proposals, seed {seed} (dev)", evaluate(programs, dev, seed))
        held = evaluate(programs, resolve_collections(args.heldout, None), seed, validation=0.0)
        show("4. the same, held-out (transfer measurement only)", held, ("train",))


if __name__ == "__main__":
    main()
