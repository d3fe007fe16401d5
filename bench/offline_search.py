"""Benchmark the offline mutator: a small in-process evolutionary search on a suite (run by hand).

What it measures: whether ``evorank.evolve.offline.mutator`` alone (no LLM) can move from the seeds
{bm25, ql_dirichlet} to a program better than the BM25 seed within a budget of proposals, and how
often its proposals are valid and actually change the ranking. It is a stand-in for the engine's
loop, not the engine: programs run in this process without the sandbox (they are our own mutants),
and selection is a plain elitist pool.

Search: a pool of the best ``--pool`` (10) distinct programs, starting with the two seeds. Each
proposal picks a parent by tournament (size 3); with probability ``--crossover`` (0.2) a second
tournament picks a different program as ``other_source`` (crossover), otherwise 1-3 point edits.
The child is evaluated on every collection of the suite (fitness = the ``rankevolve`` preset:
0.8 macro Recall@100 + 0.2 macro nDCG@10) and enters the pool if it beats the pool's worst.
Children whose block text was already evaluated count as proposals but are not re-evaluated.

Reports, every 25 proposals and at the end: best fitness and its ratio to the BM25 seed, the share
of proposals that compile and return valid scores on every collection, the share whose rankings
differ from their parent's, per-operator counts, the proposal at which the best was found, wall time.

Needs the shared data (as for ``evorank eval``): IR_DATASETS_HOME (a writable copy of
shared/ir_datasets), EVORANK_DATA=shared/datasets, EVORANK_CACHE. Usage:

    nice -n 10 python bench/offline_search.py --seed 0 [--proposals 300] [--suite dev] [--json out.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from evorank.evaluators.errors import ProgramError
from evorank.evaluators.evaluate import evaluate_on, load_topics, summarize
from evorank.evaluators.program.source import compile_program, seed_path, split_block
from evorank.evaluators.data.suites import get_suite
from evorank.evolve.offline.mutator import mutate


@dataclass
class Member:
    fitness: float
    source: str
    fingerprint: str
    found_at: int
    name: str


def evaluate(source: str, topics) -> tuple[float | None, str | None, str | None]:
    """(fitness, ranking fingerprint, failure reason); fitness None when the program fails anywhere."""
    try:
        program = compile_program(source, "<candidate>")
    except ProgramError as e:
        return None, None, e.reason
    results, h = [], hashlib.sha1()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for t in topics:
            res, ranking = evaluate_on(program, t)
            if not res.ok:
                return None, None, res.error_reason
            results.append(res)
            for idx in ranking.doc_idx:
                h.update(idx[:100].tobytes())
                h.update(b"|")
    return summarize("candidate", results, "rankevolve").fitness, h.hexdigest(), None


def tournament(pool: list[Member], rng: np.random.Generator, k: int = 3, exclude: int | None = None) -> int:
    cands = [i for i in range(len(pool)) if i != exclude]
    picks = rng.choice(cands, size=min(k, len(cands)), replace=False)
    return int(max(picks, key=lambda i: pool[i].fitness))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proposals", type=int, default=300)
    ap.add_argument("--pool", type=int, default=10)
    ap.add_argument("--crossover", type=float, default=0.2)
    ap.add_argument("--tournament", type=int, default=3, help="tournament size (1 = uniform parent from the pool)")
    ap.add_argument("--suite", default="dev")
    ap.add_argument("--report-every", type=int, default=25)
    ap.add_argument("--target", type=float, default=1.02, help="report when best / bm25 first reaches this ratio")
    ap.add_argument("--json", help="write the figures (and the best program) to this file")
    args = ap.parse_args()

    t_start = time.perf_counter()
    topics = [load_topics(a) for a in get_suite(args.suite).collections]
    t_loaded = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    pool: list[Member] = []
    for name in ("bm25", "ql_dirichlet"):
        src = seed_path(name).read_text(encoding="utf-8")
        fit, fp, err = evaluate(src, topics)
        if fit is None:
            sys.exit(f"seed {name} failed: {err}")
        pool.append(Member(fit, src, fp, 0, name))
    bm25 = pool[0].fitness
    print(f"seeds: bm25 {bm25:.4f}, ql_dirichlet {pool[1].fitness:.4f}; topics loaded in {t_loaded - t_start:.1f}s",
          flush=True)

    seen = {split_block(m.source).block for m in pool}
    n_valid = n_changed = n_dup = 0
    by_op: dict[str, Counter] = defaultdict(Counter)
    failures: Counter = Counter()
    best = max(pool, key=lambda m: m.fitness)
    history = []
    reached_at = None
    t_search = time.perf_counter()
    for i in range(1, args.proposals + 1):
        pi = tournament(pool, rng, args.tournament)
        other = None
        if len(pool) > 1 and rng.random() < args.crossover:
            other = pool[tournament(pool, rng, args.tournament, exclude=pi)].source
        parent = pool[pi]
        m = mutate(parent.source, rng, other_source=other)
        op = m.operator.split("+")[0] if "+" in m.operator else m.operator
        by_op[op]["proposed"] += 1
        block = split_block(m.source).block
        if block in seen:
            n_dup += 1
            by_op[op]["duplicate"] += 1
        else:
            seen.add(block)
            fit, fp, err = evaluate(m.source, topics)
            if fit is None:
                failures[err] += 1
                by_op[op]["failed"] += 1
            else:
                n_valid += 1
                by_op[op]["valid"] += 1
                if fp != parent.fingerprint:
                    n_changed += 1
                    by_op[op]["changed"] += 1
                if fit > parent.fitness:
                    by_op[op]["improved_parent"] += 1
                worst = min(range(len(pool)), key=lambda j: pool[j].fitness)
                if fp not in {p.fingerprint for p in pool} and (len(pool) < args.pool or fit > pool[worst].fitness):
                    if len(pool) >= args.pool:
                        pool.pop(worst)
                    pool.append(Member(fit, m.source, fp, i, f"p{i}"))
                if fit > best.fitness:
                    best = pool[-1] if pool[-1].found_at == i else Member(fit, m.source, fp, i, f"p{i}")
                    print(f"  #{i:3d} new best {fit:.4f} ({fit / bm25:.4f}x) {m.operator}: {m.description[:140]}",
                          flush=True)
                    if reached_at is None and fit >= args.target * bm25:
                        reached_at = (i, time.perf_counter() - t_search)
        if i % args.report_every == 0 or i == args.proposals:
            el = time.perf_counter() - t_search
            evaluated = i - n_dup
            print(f"[{i:3d}] best {best.fitness:.4f} = {best.fitness / bm25:.4f}x bm25 | valid {n_valid}/{evaluated} "
                  f"| changed ranking {n_changed}/{evaluated} | duplicates {n_dup} | {el:.0f}s", flush=True)
            history.append({"proposal": i, "best": best.fitness, "ratio": best.fitness / bm25, "elapsed_s": el})

    wall = time.perf_counter() - t_start
    evaluated = args.proposals - n_dup
    print("\nper operator:", {k: dict(v) for k, v in sorted(by_op.items())})
    print("failures:", dict(failures))
    print(f"valid: {n_valid}/{evaluated} evaluated ({n_valid / max(evaluated, 1):.1%}); "
          f"changed ranking: {n_changed}/{evaluated} ({n_changed / max(evaluated, 1):.1%}); duplicates: {n_dup}")
    print(f"best: {best.fitness:.4f} = {best.fitness / bm25:.4f}x bm25 ({bm25:.4f}), found at proposal {best.found_at}")
    if reached_at:
        print(f"reached {args.target}x bm25 at proposal {reached_at[0]} ({reached_at[1]:.0f}s into the search)")
    else:
        print(f"did not reach {args.target}x bm25")
    print(f"wall: {wall:.0f}s (search {time.perf_counter() - t_search:.0f}s)")
    print("\nbest block:\n" + split_block(best.source).block)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "seed": args.seed, "proposals": args.proposals, "bm25": bm25, "best": best.fitness,
                "ratio": best.fitness / bm25, "best_found_at": best.found_at,
                "target": args.target, "target_reached_at": reached_at[0] if reached_at else None, "valid": n_valid,
                "evaluated": evaluated, "changed": n_changed, "duplicates": n_dup, "wall_s": wall,
                "by_operator": {k: dict(v) for k, v in by_op.items()}, "failures": dict(failures),
                "history": history, "best_source": best.source,
            }, f, indent=1)


if __name__ == "__main__":
    main()
