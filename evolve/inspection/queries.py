"""What the inspection commands and the HTML report ask of a run: opening it read-only, resolving
program addresses, and the data behind ``evorank status``, ``top``, ``show`` and ``lineage``.

Every function opens or reads the archive read-only (``RunStore.open(run, readonly=True)``), so it is
safe on a run that is still being written; all SQL lives in the store (``archive.queries``). Results are
plain dicts and records: ``terminal`` renders them on the terminal, ``report`` as HTML.

Program addresses (``ID`` below, and ``RUN:ID`` for ``evorank eval``):

- ``best``            the fittest elite of the run (what ``best.py`` holds)
- ``best@island:K``   the fittest elite of island K (``best@K`` also works)
- ``42``              program id 42
- ``3fa9c2``          a unique prefix of a program's normalized code hash (the one ``top`` shows);
                      when several programs share that code (seeds on every island, migration copies,
                      duplicates), the first accepted original is meant
- ``seed:bm25``       a seed program by name
"""
from __future__ import annotations

import bisect
import math
import os
import re
import time
from collections import Counter
from pathlib import Path

from evorank.archive import FUSE, PRUNE, Islands, ProgramRecord, RunStore
from evorank.evaluators.errors import EvorankError
from .format import ID_FORMS, METRIC_LABELS, macro
from .funnel import funnel_summary


class InspectError(EvorankError):
    """A run or program address that cannot be resolved; the message says why and what is accepted."""


# -- opening runs and resolving addresses --------------------------------------------------------

def open_run(run_dir) -> RunStore:
    """The run's archive, read-only (safe while the run is being written)."""
    run_dir = Path(run_dir)
    if not (run_dir / "archive.sqlite").is_file():
        hint = " (it is a file, not a run folder)" if run_dir.is_file() else ""
        raise InspectError(f"{run_dir} holds no run: no archive.sqlite there{hint}. "
                           "A run folder is what `evorank run --out DIR` created.")
    try:
        return RunStore.open(run_dir, readonly=True)
    except EvorankError:
        raise
    except Exception as e:  # schema version, corrupt file, ...
        raise InspectError(f"cannot open the archive in {run_dir}: {type(e).__name__}: {e}") from None


def seed_records(store: RunStore) -> dict[str, ProgramRecord]:
    """Seed name -> its first (island 0) record, in the run's seed order."""
    out: dict[str, ProgramRecord] = {}
    for rec in store.seed_programs():
        out.setdefault(str(rec.features.get("seed_name") or f"seed#{rec.id}"), rec)
    return out


def validation_fitness(rec: ProgramRecord) -> float | None:
    """The program's fitness on the run's validation queries (None: not measured, e.g. no validation split)."""
    val = rec.features.get("val_fitness")
    return float(val) if isinstance(val, (int, float)) else None


def _best(store: RunStore, island: int | None = None) -> ProgramRecord:
    n = store.n_islands()
    if island is not None and not 0 <= island < n:
        raise InspectError(f"island {island} does not exist: this run has {n} island(s), 0..{n - 1}")
    best = store.best_on_validation(int(store.config().get("best_of", 10)), island)
    if best is None:
        where = f" on island {island}" if island is not None else ""
        raise InspectError(f"no accepted program with a fitness{where} yet in {store.run_dir}")
    return best


def resolve_id(store: RunStore, text) -> ProgramRecord:
    """The program an address names (see the module docstring); InspectError if none or ambiguous."""
    text = str(text).strip()
    low = text.lower()
    if low == "best":
        return _best(store)
    m = re.fullmatch(r"best@(?:island:)?(\d+)", low)
    if m:
        return _best(store, int(m.group(1)))
    if low.startswith("seed:"):
        seeds = seed_records(store)
        name = text.split(":", 1)[1]
        if name not in seeds:
            raise InspectError(f"no seed {name!r} in this run; its seeds: {', '.join(seeds) or 'none'}")
        return seeds[name]
    if re.fullmatch(r"#?\d+", text):
        pid = int(text.lstrip("#"))
        try:
            return store.get(pid)
        except KeyError:
            if text.startswith("#") or len(text) < 4:  # short numbers are ids only
                raise InspectError(f"no program with id {pid} in {store.run_dir} "
                                   f"(ids run from 1 to {store.max_id()})") from None
    if re.fullmatch(r"[0-9a-f]{1,64}", low):
        matches = store.code_hash_matches(low)
        hashes = list(dict.fromkeys(m.code_hash for m in matches))
        if len(hashes) > 1:
            shown = ", ".join(f"{h[:12]} (#{next(m.id for m in matches if m.code_hash == h)})" for h in hashes[:5])
            raise InspectError(f"code-hash prefix {text!r} is ambiguous: {len(hashes)} programs match "
                               f"({shown}{', ...' if len(hashes) > 5 else ''}); give more characters")
        if matches:
            pick = next((m for m in matches if m.status == "accepted" and m.operator != "migration"), matches[0])
            return store.get(pick.id)
        if low.isdigit():
            raise InspectError(f"no program with id {int(low)} (ids run from 1 to {store.max_id()}) and no code hash "
                               f"starting with {text!r} in {store.run_dir}")
        raise InspectError(f"no code hash starting with {text!r} in {store.run_dir}")
    raise InspectError(f"cannot read program address {text!r}; use {ID_FORMS}")


def split_run_address(text: str) -> tuple[Path, str] | None:
    """``RUN:ID`` -> (run folder, ID), or None when ``text`` does not start with a run folder.
    A bare run folder means its best program."""
    p = Path(text)
    if (p / "archive.sqlite").is_file():
        return p, "best"
    for m in re.finditer(":", text):
        head = text[: m.start()]
        if head and (Path(head) / "archive.sqlite").is_file():
            return Path(head), text[m.end():] or "best"
    return None


def run_folder_of(path) -> Path | None:
    """The run folder a file lies in (the nearest folder above it holding ``archive.sqlite``), or None."""
    for folder in Path(path).resolve().parents:
        if (folder / "archive.sqlite").is_file():
            return folder
    return None


def resolve_program_arg(text: str) -> tuple[str, str] | None:
    """For ``evorank eval``: (display name, source) of ``RUN:ID``, else None (a file or seed name)."""
    found = split_run_address(str(text))
    if found is None:
        return None
    run_dir, ident = found
    with open_run(run_dir) as store:
        rec = resolve_id(store, ident)
    return f"{run_dir}:{ident} (#{rec.id})", rec.code


# -- status ---------------------------------------------------------------------------------------

def writer_pid(run_dir) -> int | None:
    """Pid of the process holding the run's writer lock (``archive.lock``), or None if nobody does.

    On Linux this reads /proc/locks, which never touches the lock itself (a probing flock could make
    a run that starts at that very instant fail with StoreLockedError); elsewhere it probes with a
    shared, non-blocking flock that is released at once.
    """
    path = Path(run_dir) / "archive.lock"
    if not path.exists():
        return None
    try:
        recorded = int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        recorded = None
    st = path.stat()
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = None
    if lines is not None:
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in lines:
            parts = line.split()
            if len(parts) < 6 or parts[1] != "FLOCK" or parts[3] != "WRITE":
                continue
            try:
                pid, ino = int(parts[4]), int(parts[5].rsplit(":", 1)[1])
            except ValueError:
                continue
            if parts[5] == dev or (ino == st.st_ino and pid == recorded):
                return pid
        return None
    try:  # pragma: no cover - non-Linux
        import fcntl
    except ImportError:  # pragma: no cover
        return None
    fd = os.open(path, os.O_RDONLY)  # pragma: no cover
    try:  # pragma: no cover
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # pragma: no cover
        return recorded or -1
    else:  # pragma: no cover
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:  # pragma: no cover
        os.close(fd)


def _sessions(events: list[dict], activity: list[float], alive: bool) -> list[dict]:
    """Start/resume .. stop spans with their durations. A span that never logged 'stop' (the process
    was killed) ends at its last archived program; the span still open while the writer lives, now."""
    out, cur = [], None

    def close_killed(span, limit):
        i = bisect.bisect_left(activity, limit) - 1  # last program before `limit`
        last = activity[i] if i >= 0 else span["start"]
        span["end"], span["stop_reason"] = max(span["start"], last), "killed"
        out.append(span)

    for e in events:
        if e["kind"] in ("start", "resume"):
            if cur is not None:
                close_killed(cur, e["ts"])
            cur = {"kind": e["kind"], "start": e["ts"], "end": None, "stop_reason": None}
        elif e["kind"] == "stop" and cur is not None:
            cur["end"], cur["stop_reason"] = e["ts"], e["data"].get("reason")
            out.append(cur)
            cur = None
    if cur is not None:
        if alive:
            cur["end"] = time.time()
            out.append(cur)
        else:
            close_killed(cur, math.inf)
    for s in out:
        s["elapsed_s"] = round(s["end"] - s["start"], 1)
    return out


def run_status(store: RunStore) -> dict:
    """Everything ``evorank status`` shows, as a dict."""
    run_dir = store.run_dir
    with store.read_snapshot():
        cfg = store.config()
        summary = store.summary()
        events = store.events()
        outcomes = store.outcome_counts()
        models = store.model_usage()
        operators = store.operator_usage()
        activity = store.creation_times()
        islands = Islands.from_store(store)
        seeds = seed_records(store)
        n_islands = store.n_islands()
        reuse = store.feature_sums(["prepare_runs", "prepare_reused"])
        # what model-written proposals came to (ideas, copies, no-ops): only runs with such proposals read them all
        wrote = any(m.model not in (None, "offline") for m in models)
        funnel = funnel_summary(store.programs(), cfg.get("max_tokens")) if wrote else None
    pid = writer_pid(run_dir)
    alive = pid is not None
    proposals = Counter()
    reasons = Counter()
    n_seed = n_migration = n_pruned = n_fused = 0
    for o in outcomes:
        if o.operator == "seed":
            n_seed += o.n
        elif o.operator == "migration":
            n_migration += o.n
        elif o.operator == PRUNE:
            n_pruned += o.n
        elif o.operator == FUSE:
            n_fused += o.n
        else:
            proposals[o.status] += o.n
            if o.status != "accepted":
                reasons[o.failure_reason or o.status] += o.n
    sessions = _sessions(events, activity, alive)
    lifecycle = [e for e in events if e["kind"] in ("start", "resume", "stop")]
    if alive:
        state = "running"
    elif not lifecycle:
        state = "not started"
    elif not outcomes:  # nothing was ever archived: there is nothing to resume
        state = ("never ran (it ended before archiving its first program; start it again, with the same --out if "
                 "you like)")
    elif lifecycle[-1]["kind"] == "stop":
        state = f"stopped ({lifecycle[-1]['data'].get('reason', '?')})"
    else:
        state = "killed (no clean stop was logged; continue it with `evorank run --resume`)"
    seed_best = max((s.fitness for s in seeds.values() if s.fitness is not None), default=None)
    per_island = []
    for i in range(n_islands):
        b = islands.best(i)
        per_island.append({
            "island": i, "best_id": b.id if b else None, "best_fitness": b.fitness if b else None,
            "best_migrated_from": b.parent_ids[0] if b and b.operator == "migration" else None,
            "elites": len(islands.elites(i)),
            "gain_vs_best_seed": (b.fitness / seed_best - 1) if b and seed_best else None,
        })
    best = store.best_on_validation(int(cfg.get("best_of", 10)))
    heldout = [e["data"] for e in events if e["kind"] == "heldout"]
    done = sum(proposals.values())
    # why the run may not reproduce under its seed, as its sessions logged it (None: logged by an older version)
    logged = [e["data"]["not_reproducible"] for e in lifecycle if "not_reproducible" in e["data"]]
    not_reproducible = sorted({r for reasons in logged for r in reasons}) if logged else None
    return {
        "run": str(run_dir),
        "state": state,
        "alive": alive,
        "writer_pid": pid,
        "iterations_total": cfg.get("iterations"),
        "proposals_done": done,
        "last_iteration": summary["iterations_done"],
        "elapsed_s": round(sum(s["elapsed_s"] for s in sessions), 1),
        "sessions": sessions,
        "created_at": events[0]["ts"] if events else None,
        "last_activity": activity[-1] if activity else None,
        "proposals": {k: proposals.get(k, 0) for k in ("accepted", "failed", "duplicate", "rejected_cascade")},
        "failure_reasons": dict(reasons.most_common()),
        "seeds": {name: {"id": s.id, "fitness": s.fitness} for name, s in seeds.items()},
        "seed_programs": n_seed,
        "migration_copies": n_migration,
        "pruned_programs": n_pruned,
        "fusions": n_fused,
        "islands": per_island,
        "best": {"id": best.id, "fitness": best.fitness, "island": best.island,
                 "validation_fitness": validation_fitness(best),
                 "gap": (best.fitness - validation_fitness(best)) if validation_fitness(best) is not None else None,
                 "gain_vs_best_seed": (best.fitness / seed_best - 1) if seed_best else None,
                 # a pruned best (``--prune-best``): the program it was pruned from and the parts taken out
                 "pruned_from": best.parent_ids[0] if best.operator == PRUNE else None,
                 "pruned": best.features.get("pruned") if best.operator == PRUNE else None,
                 # a fusion of the island bests (``--fuse-best``) that won on validation: its members
                 "fused_from": list(best.parent_ids) if best.operator == FUSE else None} if best else None,
        "heldout": heldout[-1] if heldout else None,
        "heldout_history": heldout,
        "not_reproducible": not_reproducible,
        "prompt_tokens": summary["prompt_tokens"],
        "completion_tokens": summary["completion_tokens"],
        "cost_usd": summary["cost_usd"],
        "prepare_reuse": {  # logged per batch; runs of older versions kept the counts as features
            "runs": int(reuse["prepare_runs"]) + sum(e["data"].get("runs", 0) for e in events if e["kind"] == "prepare"),
            "reused": int(reuse["prepare_reused"]) + sum(e["data"].get("reused", 0) for e in events
                                                         if e["kind"] == "prepare")},
        "funnel": funnel,
        "models": [{"model": m.model, "proposals": m.proposals, "prompt_tokens": m.prompt_tokens,
                    "completion_tokens": m.completion_tokens, "cost_usd": m.cost_usd} for m in models],
        "operators": [{"operator": o.operator, "proposals": o.proposals, "accepted": o.accepted,
                       "prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
                       "cost_usd": o.cost_usd} for o in operators],
        "config": {k: cfg.get(k) for k in ("suite", "datasets", "seeds", "llm", "fitness", "islands", "seed",
                                           "batch", "budget_usd", "best_of") if k in cfg},
    }


# -- top ------------------------------------------------------------------------------------------

def _sort_key(by: str, known_metrics: set[str]):
    if by == "fitness":
        return lambda r: (-(r.fitness if r.fitness is not None else -math.inf), r.id)
    if by == "latency":
        return lambda r: (r.latency_ratio if r.latency_ratio is not None else math.inf, r.id)
    if by not in known_metrics:
        raise InspectError(f"cannot sort by {by!r}: use fitness, latency, or a metric ({', '.join(sorted(known_metrics))})")
    return lambda r: (-(macro(r, by) if macro(r, by) is not None else -math.inf), r.id)


def listed_once(records):
    """The accepted programs among ``records`` (records or summaries), in their order, as a ranking lists them:
    migration copies left out, each seed once (the first record of each seed name)."""
    seen_seeds = set()
    for r in records:
        if r.status != "accepted" or r.operator == "migration":
            continue
        if r.operator == "seed":
            name = r.features.get("seed_name")
            if name in seen_seeds:
                continue
            seen_seeds.add(name)
        yield r


def top_programs(store: RunStore, n: int = 10, by: str = "fitness", island: int | None = None) -> list[ProgramRecord]:
    """Accepted programs, best first by ``by``: migration copies left out, each seed listed once."""
    recs = list(listed_once(store.programs(status="accepted", island=island)))
    known = set(METRIC_LABELS) | {m for r in recs for v in r.metrics.values() for m in v}
    recs.sort(key=_sort_key(by, known))
    return recs[:n] if n and n > 0 else recs


# -- lineage and comparisons -----------------------------------------------------------------------

def seed_ancestor(store: RunStore, rec: ProgramRecord) -> ProgramRecord | None:
    chain = lineage(store, rec)
    return chain[0] if chain and chain[0].operator == "seed" else None


def lineage(store: RunStore, rec: ProgramRecord, max_steps: int = 100_000) -> list[ProgramRecord]:
    """Ancestry oldest first, ending at ``rec``: follows each program's first parent back to a seed."""
    chain, seen = [rec], {rec.id}
    cur = rec
    while cur.parent_ids and cur.operator != "seed" and len(chain) < max_steps:
        pid = cur.parent_ids[0]
        if pid in seen:
            break
        try:
            cur = store.get(pid)
        except KeyError:
            break
        chain.append(cur)
        seen.add(pid)
    return chain[::-1]


def metric_comparison(rec: ProgramRecord, parent: ProgramRecord | None, seed: ProgramRecord | None) -> list[dict]:
    rows = [{"collection": None, "metric": "fitness", "value": rec.fitness,
             "parent": parent.fitness if parent else None, "seed": seed.fitness if seed else None}]
    rows.append({"collection": None, "metric": "latency_ratio", "value": rec.latency_ratio,
                 "parent": parent.latency_ratio if parent else None, "seed": seed.latency_ratio if seed else None})
    colls = list(dict.fromkeys([*rec.metrics, *(parent.metrics if parent else {}), *(seed.metrics if seed else {})]))
    for c in colls:
        names = list(dict.fromkeys([*rec.metrics.get(c, {}), *(parent.metrics.get(c, {}) if parent else {})]))
        names.sort(key=lambda m: (list(METRIC_LABELS).index(m) if m in METRIC_LABELS else len(METRIC_LABELS), m))
        for m in names:
            rows.append({
                "collection": c, "metric": m, "value": rec.metrics.get(c, {}).get(m),
                "parent": parent.metrics.get(c, {}).get(m) if parent else None,
                "seed": seed.metrics.get(c, {}).get(m) if seed else None,
            })
    return rows


def lineage_steps(store: RunStore, rec: ProgramRecord) -> list[dict]:
    chain = lineage(store, rec)
    steps, start = [], chain[0].fitness
    for i, r in enumerate(chain):
        prev = chain[i - 1] if i else None
        steps.append({
            "step": i, "id": r.id, "code_hash": r.code_hash, "operator": r.operator,
            "seed_name": r.features.get("seed_name"), "island": r.island, "iteration": r.iteration,
            "status": r.status, "fitness": r.fitness,
            "delta": (r.fitness - prev.fitness) if prev and r.fitness is not None and prev.fitness is not None else None,
            "delta_from_start": (r.fitness - start) if r.fitness is not None and start is not None else None,
            "other_parents": list(r.parent_ids[1:]), "model": r.model,
        })
    return steps
