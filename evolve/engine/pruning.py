"""The run's best, pruned: each part of it kept only where the validation queries show that it helps.

An evolved program carries parts that won it nothing measurable: a constant nudged, a formula that gained a
thousandth on the train queries, a channel whose gain on one collection is another's loss. Each such part is a
bet on the collections selection saw, and a part's average gain there is no evidence that it helps elsewhere.
A run asked to (``--prune-best``; off by default: on the dev suite it lowered the best's
fitness, ``bench/RESULTS.md``) ends by pruning its best program (``RunStore.best_on_validation``), greedily:

1. take the program's parts over its seed (``evaluators.program.parts``: channels added to the score, formulas
   and constants that differ from the seed's) and evaluate the program without each, sandboxed like any candidate;
2. on the run's validation queries (never selected on during the run), compare the program with each ablation in
   a paired two-sided randomization test (``evaluators.significance.paired_test``) over every validation query of
   every collection, each query's value being the run's fitness weights applied to its metrics, each metric
   divided by BM25's mean on that collection's validation queries (so that collections of different difficulty
   weigh alike, as the fitness's per-collection gains do);
3. a part is *supported* when the program with it is better on average and p < ``ALPHA``; if any part is not,
   remove the one that adds least (most negative first) and start again from 1 with the smaller program;
4. stop when every remaining part is supported (or none is left).

The pruned program is archived as its own program (operator ``prune``, parent the best), never placed in a grid,
and ``best_on_validation`` answers it in place of the program it was pruned from; the run's log and its
``prune`` event say what was removed and what each test found. Everything is deterministic (the evaluation, and
the randomization test under a fixed seed), so a run still reproduces under its seed. Only the validation queries
decide, so the figures a run reports on them for the pruned program are no longer unseen: a held-out suite
(``--heldout``, ``evorank eval --suite``) is what measures it.

Parts whose removal does not run (the state a channel passes from ``prepare`` to ``score``, removed alone) are
kept: they go with the channel that uses them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from evorank.archive import NOT_IN_GRIDS, PRUNE, ProgramRecord
from evorank.evaluators.metrics import FitnessSpec, collection_weights
from evorank.evaluators.program.parts import parts
from evorank.evaluators.significance import ALPHA, paired_test

log = logging.getLogger(__name__)


@dataclass
class Pruned:
    """The pruned program (``source``, its evaluation ``result``), the parts ``removed`` in order, and each round's
    tests: a list of rounds, each ``{part name: {"adds": mean per-query gain, "p": p-value}}`` (``None`` for a
    part whose removal failed to run)."""

    source: str
    result: object
    removed: list[str] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)


def query_values(result, reference: dict[str, dict[str, float]], spec: FitnessSpec,
                 sizes: dict[str, int]) -> np.ndarray:
    """Each validation query's value: the fitness weights of its collection applied to its metrics, each divided by
    the reference's mean of that metric on the collection's validation queries; all collections, in order."""
    out = []
    for c in result.validation.collections:
        weights = collection_weights(spec, sizes.get(c.name))
        kept = {m: w for m, w in weights.items() if reference[c.name].get(m, 0.0) > 0}
        total = sum(kept.values())
        if not kept or total <= 0:
            continue  # the reference scores nothing there: no gain to measure
        value = sum(w * np.asarray(c.per_query[m], dtype=np.float64) / reference[c.name][m] for m, w in kept.items())
        out.append(value / total)
    return np.concatenate(out) if out else np.zeros(0)


def prune(source: str, seed_source: str, result, evaluator, reference: dict[str, dict[str, float]],
          spec: FitnessSpec, alpha: float = ALPHA) -> Pruned:
    """Prune ``source`` (evaluated as ``result``, with validation) against ``seed_source`` as the module docstring
    says, evaluating ablations with ``evaluator`` (the run's: same collections, same validation split);
    ``reference``: the BM25 seed's per-collection metrics on the validation queries."""
    sizes = evaluator.collection_sizes()
    out = Pruned(source, result)
    while True:
        found = parts(out.source, seed_source)
        if not found:
            return out
        results = evaluator.evaluate([p.ablated for p in found], [seed_source] * len(found), None,
                                     [f"without {p.name}" for p in found])
        mine = query_values(out.result, reference, spec, sizes)
        tests, weak = {}, []
        for p, r in zip(found, results):
            if not r.ok or r.validation is None:
                tests[p.name] = None
                continue
            t = paired_test(mine, query_values(r, reference, spec, sizes))
            tests[p.name] = {"adds": t.delta, "p": t.p_randomization}
            if not (t.delta > 0 and t.p_randomization < alpha):
                weak.append((t.delta, p.name, p.ablated, r))
        out.rounds.append(tests)
        if not weak:
            return out
        _, name, out.source, out.result = min(weak, key=lambda w: w[0])
        out.removed.append(name)
        log.info("pruning: removed %s (adds %+.4f, p %.3f on the validation queries)", name,
                 tests[name]["adds"], tests[name]["p"])


def prune_best(store, evaluator, best: ProgramRecord, seed_source: str, reference: dict[str, dict[str, float]],
               spec: FitnessSpec, complete) -> ProgramRecord | None:
    """Prune a run's ``best`` once: archive the pruned program (operator ``prune``, parent the best; the run's best
    from then on) when a part was removed, and log a ``prune`` event either way, so a resumed run does not prune
    the same best again; both in one transaction. ``complete(record, result)`` fills a record from its evaluation
    (the engine's). Returns the archived program (None: nothing pruned, or nothing to prune)."""
    if best.operator in ("seed", *NOT_IN_GRIDS) or any(e["data"].get("best") == best.id for e in store.events("prune")):
        return None
    log.info("pruning the best (#%d): each part kept only where the validation queries show it helps", best.id)
    result = evaluator.evaluate([best.code], [seed_source], None, [f"#{best.id}"])[0]
    if not result.ok or result.validation is None:
        log.warning("pruning skipped: #%d did not evaluate again (%s)", best.id, result.failure_reason)
        return None
    pruned = prune(best.code, seed_source, result, evaluator, reference, spec)
    rec = None
    with store.atomic():
        if pruned.removed:
            rec = complete(ProgramRecord(code=pruned.source, operator=PRUNE, island=best.island,
                                         generation=best.generation + 1, iteration=0, parent_ids=(best.id,),
                                         features={"pruned": list(pruned.removed)}), pruned.result)
            store.add_program(rec)
            log.info("pruned #%d into #%d: removed %s; fitness %.4f (was %.4f)", best.id, rec.id,
                     ", ".join(pruned.removed), rec.fitness or 0.0, best.fitness or 0.0)
        store.log_event("prune", {"best": best.id, "removed": pruned.removed, "rounds": pruned.rounds})
    return rec
