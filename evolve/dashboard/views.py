"""What the dashboard page asks of a run, as JSON-ready dicts: the overview (progress, ETA, outcomes, best, the
MAP-Elites grids, the top programs), the programs as plot points, and one program in full (code, diff against its
parent, metrics per collection, the proposer's explanation, its lineage as a tree).

Every function reads a store opened read-only, inside one ``read_snapshot()`` taken by the caller, so each answer
is one consistent state of a run that may be being written. Program text (code, replies, failure details) is
passed through as data: the page shows it with ``textContent``, never as markup.
"""
from __future__ import annotations

import math
import time

from evorank.archive import ProgramRecord, ProgramSummary, RunStore
from evorank.evolve.inspection.format import bin_labels, program_diff, short_names
from evorank.evolve.inspection.queries import (lineage, listed_once, metric_comparison, resolve_id, run_status,
                                              validation_fitness)

# Point fields sent to the page for the fitness plot, in this order (compact rows: a long run has many programs).
POINT_FIELDS = ("id", "iteration", "island", "operator", "status", "fitness", "val_fitness", "created_at")
TOP_N = 20
RATE_WINDOW = 100  # proposals over which the current speed (and so the ETA) is measured
SHOWN_METRICS = ("ndcg@10", "recall@100")


def is_proposal(p) -> bool:
    """A program the loop proposed (not a seed, not a migration copy)."""
    return p.iteration > 0 and p.operator not in ("seed", "migration")


def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def point_row(p: ProgramSummary) -> list:
    return [p.id, p.iteration, p.island, p.operator, p.status, _num(p.fitness),
            _num(p.features.get("val_fitness")), round(p.created_at, 3)]


def speed(summaries: list[ProgramSummary], status: dict) -> dict:
    """Proposals per minute over the last ``RATE_WINDOW`` proposals of the session now running, and the time
    left at that speed (None when the run is not running or too little is known)."""
    sessions = status.get("sessions") or []
    start = sessions[-1]["start"] if sessions else 0.0
    times = sorted(p.created_at for p in summaries if is_proposal(p) and p.created_at >= start)[-RATE_WINDOW:]
    per_min = None
    if len(times) >= 2 and times[-1] > times[0]:
        per_min = (len(times) - 1) / (times[-1] - times[0]) * 60.0
    total, done = status.get("iterations_total"), status.get("proposals_done") or 0
    eta = None
    if status.get("alive") and per_min and total is not None and total > done:
        eta = (total - done) / per_min * 60.0
    return {"per_min": per_min, "eta_s": eta}


def grids(store: RunStore, by_id: dict[int, ProgramSummary], seed_best: float | None) -> dict:
    """Each island's grid along the first two descriptor dimensions (the best elite over any further ones), with
    the bin labels of both axes; every cell names its elite, so the page can open it. Read from the elite table (no
    program text), with the programs' details from ``by_id``."""
    spec = store.grid_spec()
    dims = spec.dimensions
    ydim, xdim = dims[0], (dims[1] if len(dims) > 1 else None)
    shown: list[dict[tuple[int, int], dict]] = [{} for _ in range(store.n_islands())]
    for (island, cell), pid in sorted(store.elite_table().items()):
        rec = by_id.get(pid)
        if rec is None or not 0 <= island < len(shown):
            continue
        key = (cell[0], cell[1] if xdim else 0)
        entry = shown[island].setdefault(key, {"y": key[0], "x": key[1], "elites": 0, "id": None, "fitness": None})
        entry["elites"] += 1
        if rec.fitness is not None and (entry["fitness"] is None or rec.fitness > entry["fitness"]):
            entry.update(id=rec.id, fitness=rec.fitness, operator=rec.operator,
                         gain=(rec.fitness / seed_best - 1) if seed_best else None)
    return {
        "y": {"name": ydim.name, "labels": bin_labels(ydim)},
        "x": {"name": xdim.name, "labels": bin_labels(xdim)} if xdim else None,
        "folded": [d.name for d in dims[2:]],
        "islands": [{"island": i, "elites": sum(c["elites"] for c in cells.values()),
                     "cells": sorted(cells.values(), key=lambda c: (c["y"], c["x"]))} for i, cells in enumerate(shown)],
    }


def top_rows(summaries: list[ProgramSummary], n: int = TOP_N) -> tuple[list[dict], list[str]]:
    """The best accepted programs by fitness (each seed once, no migration copies) and the collections their
    metrics cover."""
    pool = list(listed_once(p for p in summaries if p.fitness is not None))
    pool.sort(key=lambda p: (-p.fitness, p.id))
    rows = pool[:n]
    colls = list(dict.fromkeys(c for p in rows for c in p.metrics))
    return [{
        "rank": k, "id": p.id, "operator": p.operator, "seed_name": p.features.get("seed_name"), "island": p.island,
        "iteration": p.iteration, "fitness": p.fitness, "val_fitness": _num(p.features.get("val_fitness")),
        "latency_ratio": p.latency_ratio, "model": p.model,
        "metrics": {c: {m: _num(p.metrics.get(c, {}).get(m)) for m in SHOWN_METRICS} for c in colls},
    } for k, p in enumerate(rows, 1)], colls


def overview(store: RunStore, summaries: list[ProgramSummary]) -> dict:
    """Everything the page shows of a run but the per-program points and the program panel. ``summaries``: every
    program of the run in the same snapshot (the caller keeps them, tailing new ones)."""
    st = run_status(store)
    seed_best = max((s["fitness"] for s in st["seeds"].values() if s["fitness"] is not None), default=None)
    top, colls = top_rows(summaries)
    labels = short_names(colls)
    return {
        **{k: st[k] for k in ("state", "alive", "writer_pid", "iterations_total", "proposals_done", "last_iteration",
                              "elapsed_s", "proposals", "failure_reasons", "seeds", "seed_programs",
                              "migration_copies", "islands", "best", "heldout", "heldout_history", "prompt_tokens",
                              "completion_tokens", "cost_usd", "config", "operators")},
        "speed": speed(summaries, st),
        "seed_best": seed_best,
        "grid": grids(store, {p.id: p for p in summaries}, seed_best),
        "top": top,
        "collections": [{"address": c, "label": labels[c]} for c in colls],
        "max_id": summaries[-1].id if summaries else 0,
        "read_at": time.time(),
    }


def _brief(r: ProgramRecord | ProgramSummary) -> dict:
    return {"id": r.id, "operator": r.operator, "status": r.status, "fitness": r.fitness, "island": r.island,
            "iteration": r.iteration, "seed_name": r.features.get("seed_name"), "failure_reason": r.failure_reason}


def program_detail(store: RunStore, ident: str) -> dict:
    """One program in full: code, where it comes from, its metrics per collection beside its parent's and its
    seed's, the diff against its parent, the proposer's explanation (a model's reply, or the offline mutator's
    description), why it failed, and its lineage as a tree: the first-parent chain back to a seed, each step's other
    parents (crossover partners) beside it, and the program's own children."""
    rec = resolve_id(store, ident)
    chain = lineage(store, rec)
    others = {pid for r in chain for pid in r.parent_ids[1:]}
    partners = store.get_many(others) if others else {}
    parent = chain[-2] if len(chain) > 1 else None  # the first parent (the chain stops where one is missing)
    seed = chain[0] if chain[0].operator == "seed" and chain[0] is not rec else None
    tree = []
    for k, r in enumerate(chain):
        prev = chain[k - 1] if k else None
        tree.append({**_brief(r), "delta": (r.fitness - prev.fitness) if prev and r.fitness is not None
                     and prev.fitness is not None else None,
                     "other_parents": [_brief(partners[p]) for p in r.parent_ids[1:] if p in partners]})
    children = store.children(rec.id)
    colls = list(dict.fromkeys([*rec.metrics, *(parent.metrics if parent else {})]))
    labels = short_names(colls)
    val = rec.features.get("val_metrics") if isinstance(rec.features.get("val_metrics"), dict) else {}
    return {
        **_brief(rec),
        "code_hash": rec.code_hash, "generation": rec.generation, "parent_ids": list(rec.parent_ids),
        "parent": _brief(parent) if parent else None, "seed": _brief(seed) if seed else None,
        "failure_detail": rec.failure_detail, "model": rec.model, "explanation": rec.response,
        "direction": rec.features.get("direction"), "latency_ratio": rec.latency_ratio,
        "val_fitness": validation_fitness(rec), "cell": list(rec.cell) if rec.cell else None,
        "prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.completion_tokens, "cost_usd": rec.cost_usd,
        "created_at": rec.created_at, "code": rec.code,
        "diff": program_diff(parent, rec) if parent else None,
        "comparison": metric_comparison(rec, parent, seed),
        "collections": [{"address": c, "label": labels[c]} for c in colls],
        "validation_metrics": val,
        "lineage": tree,
        "children": [_brief(c) for c in children],
    }
