"""Looking inside a run: ``evorank status|top|show|diff|lineage|report|export`` and program addresses.

Every command opens the archive read-only (``RunStore.open(run, readonly=True)``), so it is safe on a
run that is still being written, and every command takes ``--json`` for scripts.

Program addresses (``ID`` below, and ``RUN:ID`` for ``evorank eval``):

- ``best``            the fittest elite of the run (what ``best.py`` holds)
- ``best@island:K``   the fittest elite of island K (``best@K`` also works)
- ``42``              program id 42
- ``3fa9c2``          a unique prefix of a program's normalized code hash (the one ``top`` shows);
                      when several programs share that code (seeds on every island, migration copies,
                      duplicates), the first accepted original is meant
- ``seed:bm25``       a seed program by name

The data functions (``run_status``, ``top_programs``, ``lineage``, ...) return plain dicts/records and
are shared with the HTML report (``evolve.report``).
"""
from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

from evorank.archive import Islands, ProgramRecord, RunStore
from evorank.evaluators.errors import EvorankError

METRIC_LABELS = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "recall@1000": "R@1000", "map@1000": "MAP@1000"}
ID_FORMS = "best, best@island:K, a program id, a code-hash prefix, or seed:NAME"


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
    for rec in store.programs():
        if rec.operator == "seed":
            out.setdefault(str(rec.features.get("seed_name") or f"seed#{rec.id}"), rec)
    return out


def _best(store: RunStore, island: int | None = None) -> ProgramRecord:
    n = store.n_islands()
    if island is not None and not 0 <= island < n:
        raise InspectError(f"island {island} does not exist: this run has {n} island(s), 0..{n - 1}")
    best = Islands.from_store(store).best(island)
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
                top = store.execute("SELECT MAX(id) FROM programs")[0][0]
                raise InspectError(f"no program with id {pid} in {store.run_dir} "
                                   f"(ids run from 1 to {top or 0})") from None
    if re.fullmatch(r"[0-9a-f]{1,64}", low):
        rows = store.execute(
            "SELECT id, code_hash, status, operator FROM programs WHERE substr(code_hash, 1, ?) = ? ORDER BY id",
            (len(low), low),
        )
        hashes = list(dict.fromkeys(r["code_hash"] for r in rows))
        if len(hashes) > 1:
            shown = ", ".join(f"{h[:12]} (#{next(r['id'] for r in rows if r['code_hash'] == h)})" for h in hashes[:5])
            raise InspectError(f"code-hash prefix {text!r} is ambiguous: {len(hashes)} programs match "
                               f"({shown}{', ...' if len(hashes) > 5 else ''}); give more characters")
        if hashes:
            pick = next((r for r in rows if r["status"] == "accepted" and r["operator"] != "migration"), rows[0])
            return store.get(pick["id"])
        if low.isdigit():
            top = store.execute("SELECT MAX(id) FROM programs")[0][0]
            raise InspectError(f"no program with id {int(low)} (ids run from 1 to {top or 0}) and no code hash "
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


def resolve_program_arg(text: str) -> tuple[str, str] | None:
    """For ``evorank eval``: (display name, source) of ``RUN:ID``, else None (a file or seed name)."""
    found = split_run_address(str(text))
    if found is None:
        return None
    run_dir, ident = found
    with open_run(run_dir) as store:
        rec = resolve_id(store, ident)
    return f"{run_dir}:{ident} (#{rec.id})", rec.code


# -- small helpers --------------------------------------------------------------------------------

def short_name(address: str) -> str:
    """'beir/scifact/test' -> 'scifact', 'local:cisi' -> 'cisi', '/data/x/' -> 'x'."""
    if ":" in address and not address.startswith(("/", ".", "~")):
        address = address.split(":", 1)[1]
    parts = [p for p in re.split(r"[\\/]", address) if p]
    if not parts:
        return address
    if len(parts) >= 2 and parts[-1] in ("test", "dev", "train", "judged") and parts[0] in ("beir", "bright", "msmarco-passage"):
        return parts[-2]
    if len(parts) >= 2 and parts[0] in ("beir", "bright"):
        return "/".join(parts[1:])
    return parts[-1]


def short_names(addresses) -> dict[str, str]:
    """Short labels for a set of collection addresses, full addresses where short ones would clash."""
    addresses = list(dict.fromkeys(addresses))
    short = {a: short_name(a) for a in addresses}
    counts = Counter(short.values())
    return {a: (s if counts[s] == 1 else a) for a, s in short.items()}


def fmt(x, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def pct(new, old) -> str:
    if new is None or old is None or not old:
        return ""
    return f"{(new / old - 1) * 100:+.2f}%"


def macro(rec: ProgramRecord, metric: str) -> float | None:
    vals = [m[metric] for m in rec.metrics.values() if m.get(metric) is not None]
    return sum(vals) / len(vals) if vals else None


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def record_json(rec: ProgramRecord, *, code: bool = True, prompt: bool = False, response: bool = False) -> dict:
    out = {
        "id": rec.id, "code_hash": rec.code_hash, "island": rec.island, "generation": rec.generation,
        "iteration": rec.iteration, "operator": rec.operator, "parent_ids": list(rec.parent_ids),
        "status": rec.status, "failure_reason": rec.failure_reason, "failure_detail": rec.failure_detail,
        "fitness": rec.fitness, "metrics": rec.metrics, "latency_ms": rec.latency_ms,
        "latency_ratio": rec.latency_ratio, "stage": rec.stage, "cell": list(rec.cell) if rec.cell else None,
        "features": rec.features, "model": rec.model, "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens, "cost_usd": rec.cost_usd, "created_at": rec.created_at,
    }
    if code:
        out["code"] = rec.code
    if prompt:
        out["prompt"] = rec.prompt
    if response:
        out["response"] = rec.response
    return out


def _console():
    from rich.console import Console

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160))
    return Console(highlight=False, width=width)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


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
    import bisect

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
        rows = store.execute(
            "SELECT operator, status, failure_reason, COUNT(*) AS n FROM programs GROUP BY operator, status, failure_reason"
        )
        models = store.execute(
            "SELECT model, COUNT(*) AS n, SUM(prompt_tokens) AS p, SUM(completion_tokens) AS c, SUM(cost_usd) AS usd "
            "FROM programs WHERE iteration > 0 AND operator != 'migration' GROUP BY model ORDER BY n DESC"
        )
        activity = [r[0] for r in store.execute("SELECT created_at FROM programs ORDER BY created_at")]
        islands = Islands.from_store(store)
        seeds = seed_records(store)
        n_islands = store.n_islands()
    pid = writer_pid(run_dir)
    alive = pid is not None
    proposals = Counter()
    reasons = Counter()
    n_seed = n_migration = 0
    for r in rows:
        if r["operator"] == "seed":
            n_seed += r["n"]
        elif r["operator"] == "migration":
            n_migration += r["n"]
        else:
            proposals[r["status"]] += r["n"]
            if r["status"] != "accepted":
                reasons[r["failure_reason"] or r["status"]] += r["n"]
    sessions = _sessions(events, activity, alive)
    lifecycle = [e for e in events if e["kind"] in ("start", "resume", "stop")]
    if alive:
        state = "running"
    elif not lifecycle:
        state = "not started"
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
    best = islands.best()
    done = sum(proposals.values())
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
        "islands": per_island,
        "best": {"id": best.id, "fitness": best.fitness, "island": best.island,
                 "gain_vs_best_seed": (best.fitness / seed_best - 1) if seed_best else None} if best else None,
        "prompt_tokens": summary["prompt_tokens"],
        "completion_tokens": summary["completion_tokens"],
        "cost_usd": summary["cost_usd"],
        "models": [{"model": m["model"], "proposals": m["n"], "prompt_tokens": m["p"] or 0,
                    "completion_tokens": m["c"] or 0, "cost_usd": m["usd"] or 0.0} for m in models],
        "config": {k: cfg.get(k) for k in ("suite", "datasets", "seeds", "llm", "fitness", "islands", "seed",
                                           "budget_usd") if k in cfg},
    }


def print_status(st: dict) -> None:
    c = _console()
    style = "green" if st["alive"] else ("yellow" if st["state"].startswith("killed") else "")
    pid = f", pid {st['writer_pid']}" if st["alive"] else ""
    c.print(f"[bold]{st['run']}[/]  [{style or 'default'}]{st['state']}{pid}[/]")
    total = st["iterations_total"]
    c.print(f"iterations: {st['proposals_done']}/{total if total is not None else '?'} proposals   "
            f"elapsed: {fmt_duration(st['elapsed_s'])} over {len(st['sessions'])} session(s)")
    p = st["proposals"]
    c.print(f"programs:   {p['accepted']} accepted, {p['failed']} failed, {p['duplicate']} duplicate, "
            f"{p['rejected_cascade']} cut by the cascade  (+ {st['seed_programs']} seed, "
            f"{st['migration_copies']} migration copies)")
    if st["failure_reasons"]:
        items = list(st["failure_reasons"].items())
        shown = ", ".join(f"{k} {v}" for k, v in items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
        c.print(f"not accepted, by reason: {shown}")
    seeds = ", ".join(f"{n} {fmt(s['fitness'])} (#{s['id']})" for n, s in st["seeds"].items())
    c.print(f"seeds:      {seeds or '-'}")
    for isl in st["islands"]:
        gain = f"  {isl['gain_vs_best_seed'] * 100:+.2f}% vs best seed" if isl["gain_vs_best_seed"] is not None else ""
        best = f"#{isl['best_id']} {fmt(isl['best_fitness'])}" if isl["best_id"] else "-"
        if isl["best_migrated_from"]:
            best += f" (migrant copy of #{isl['best_migrated_from']})"
        c.print(f"island {isl['island']}:   best {best}{gain}  ({isl['elites']} elites)")
    if st["best"]:
        b = st["best"]
        gain = f" ({b['gain_vs_best_seed'] * 100:+.2f}% vs best seed)" if b["gain_vs_best_seed"] is not None else ""
        c.print(f"best:       [bold]#{b['id']} fitness {fmt(b['fitness'])}[/]{gain} on island {b['island']}")
    tokens = st["prompt_tokens"] + st["completion_tokens"]
    c.print(f"LLM:        {st['prompt_tokens']:,} prompt + {st['completion_tokens']:,} completion tokens "
            f"= {tokens:,}; cost ${st['cost_usd']:.4f}"
            + (f" of ${st['config']['budget_usd']:.2f} budget" if st["config"].get("budget_usd") else ""))
    for m in st["models"]:
        c.print(f"  {m['model'] or '(none)'}: {m['proposals']} proposals, "
                f"{m['prompt_tokens'] + m['completion_tokens']:,} tokens, ${m['cost_usd']:.4f}")


def cmd_status(args) -> int:
    with open_run(args.run) as store:
        st = run_status(store)
    if args.json:
        _print_json(st)
    else:
        print_status(st)
    return 0


# -- top ------------------------------------------------------------------------------------------

def _sort_key(by: str, known_metrics: set[str]):
    if by == "fitness":
        return lambda r: (-(r.fitness if r.fitness is not None else -math.inf), r.id)
    if by == "latency":
        return lambda r: (r.latency_ratio if r.latency_ratio is not None else math.inf, r.id)
    if by not in known_metrics:
        raise InspectError(f"cannot sort by {by!r}: use fitness, latency, or a metric ({', '.join(sorted(known_metrics))})")
    return lambda r: (-(macro(r, by) if macro(r, by) is not None else -math.inf), r.id)


def top_programs(store: RunStore, n: int = 10, by: str = "fitness", island: int | None = None) -> list[ProgramRecord]:
    """Accepted programs, best first by ``by``: migration copies left out, each seed listed once."""
    recs, seen_seeds = [], set()
    for r in store.programs(status="accepted", island=island):
        if r.operator == "migration":
            continue
        if r.operator == "seed":
            name = r.features.get("seed_name")
            if name in seen_seeds:
                continue
            seen_seeds.add(name)
        recs.append(r)
    known = set(METRIC_LABELS) | {m for r in recs for v in r.metrics.values() for m in v}
    recs.sort(key=_sort_key(by, known))
    return recs[:n] if n and n > 0 else recs


def cmd_top(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            recs = top_programs(store, args.n, args.by, args.island)
            seeds = seed_records(store)
    if args.json:
        _print_json([{"rank": i, **record_json(r, code=False),
                      "seed_name": r.features.get("seed_name")} for i, r in enumerate(recs, 1)])
        return 0
    from rich.table import Table

    colls = list(dict.fromkeys(c for r in recs for c in r.metrics))
    labels = short_names(colls)
    metrics = [args.metric] if args.metric else ["ndcg@10", "recall@100"]
    table = Table(title=f"top {len(recs)} by {args.by} — {args.run}", title_justify="left")
    for col, just in (("#", "right"), ("id", "right"), ("hash", "left"), ("isl", "right"), ("iter", "right"),
                      ("operator", "left"), ("fitness", "right"), ("latency", "right")):
        table.add_column(col, justify=just)
    for c in colls:
        table.add_column(f"{labels[c]}\n{'/'.join(METRIC_LABELS.get(m, m) for m in metrics)}", justify="right")
    bm25 = seeds.get("bm25")
    for i, r in enumerate(recs, 1):
        op = r.operator + (f" ({r.features.get('seed_name')})" if r.operator == "seed" else "")
        cells = ["/".join(fmt(r.metrics.get(c, {}).get(m)) for m in metrics) for c in colls]
        lat = f"{r.latency_ratio:.2f}x" if r.latency_ratio is not None else "-"
        fit = fmt(r.fitness) + (f" ({pct(r.fitness, bm25.fitness)})" if bm25 and r.id != bm25.id else "")
        table.add_row(str(i), str(r.id), (r.code_hash or "")[:8], str(r.island), str(r.iteration), op, fit, lat, *cells)
    c = _console()
    c.print(table)
    c.print("latency = median scoring time per query relative to the BM25 seed; "
            "fitness gain in brackets is vs the BM25 seed")
    return 0


# -- show -----------------------------------------------------------------------------------------

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


def _delta(a, b, digits: int = 4) -> str:
    if a is None or b is None:
        return ""
    return f"{a - b:+.{digits}f}"


def cmd_show(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            rec = resolve_id(store, args.id)
            parent = store.get(rec.parent_ids[0]) if rec.parent_ids else None
            seed = seed_ancestor(store, rec)
    seed_name = seed.features.get("seed_name") if seed else None
    comparison = metric_comparison(rec, parent, seed)
    if args.json:
        out = record_json(rec, prompt=args.prompt, response=args.response)
        out["parent"] = {"id": parent.id, "fitness": parent.fitness} if parent else None
        out["seed"] = {"id": seed.id, "name": seed_name, "fitness": seed.fitness} if seed else None
        out["comparison"] = comparison
        _print_json(out)
        return 0
    from rich.syntax import Syntax
    from rich.table import Table

    c = _console()
    head = f"[bold]program #{rec.id}[/] {rec.code_hash[:12] if rec.code_hash else ''}  {rec.status}"
    if rec.failure_reason:
        head += f" ([red]{rec.failure_reason}[/])"
    c.print(head)
    origin = f"operator {rec.operator}"
    if rec.operator == "seed":
        origin += f" ({seed_name})"
    elif rec.operator == "migration" and parent:
        origin += f" (copy of #{parent.id} from island {parent.island})"
    parents = ", ".join(f"#{p}" for p in rec.parent_ids) or "-"
    c.print(f"{origin}, island {rec.island}, generation {rec.generation}, iteration {rec.iteration}, parents {parents}, "
            f"descends from seed {seed_name or '?'}")
    if rec.model or rec.prompt_tokens or rec.completion_tokens:
        c.print(f"model {rec.model or '-'}: {rec.prompt_tokens:,} prompt + {rec.completion_tokens:,} completion tokens, "
                f"${rec.cost_usd:.4f}")
    if rec.failure_detail:
        c.print(f"[red]{rec.failure_detail}[/]")
    table = Table(title_justify="left")
    table.add_column("collection")
    table.add_column("metric")
    table.add_column(f"#{rec.id}", justify="right")
    table.add_column(f"parent #{parent.id}" if parent else "parent", justify="right")
    table.add_column("Δ", justify="right")
    table.add_column(f"seed {seed_name}" if seed else "seed", justify="right")
    table.add_column("Δ", justify="right")
    labels = short_names([r["collection"] for r in comparison if r["collection"]])
    for r in comparison:
        coll = labels.get(r["collection"], "") if r["collection"] else "[bold]all[/]"
        digits = 2 if r["metric"] == "latency_ratio" else 4
        label = "latency (x BM25)" if r["metric"] == "latency_ratio" else METRIC_LABELS.get(r["metric"], r["metric"])
        table.add_row(coll, label, fmt(r["value"], digits), fmt(r["parent"], digits),
                      _delta(r["value"], r["parent"], digits), fmt(r["seed"], digits),
                      _delta(r["value"], r["seed"], digits))
    c.print(table)
    if sys.stdout.isatty() and not args.plain:
        c.print(Syntax(rec.code, "python", line_numbers=True, word_wrap=False))
    else:
        print(rec.code, end="" if rec.code.endswith("\n") else "\n")
    for flag, text, title in ((args.prompt, rec.prompt, "prompt"), (args.response, rec.response, "response")):
        if flag:
            c.rule(title)
            print(text if text is not None else f"(no {title} recorded for this program)")
    return 0


# -- diff -----------------------------------------------------------------------------------------

def program_diff(a: ProgramRecord, b: ProgramRecord, context: int = 3) -> str:
    """Unified diff from ``a`` to ``b``."""
    def label(r):
        return f"#{r.id} {r.operator} fitness {fmt(r.fitness)}"

    return "".join(difflib.unified_diff(
        a.code.splitlines(keepends=True), b.code.splitlines(keepends=True),
        fromfile=label(a), tofile=label(b), n=context,
    ))


def cmd_diff(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            rec = resolve_id(store, args.id)
            if args.other:
                base = resolve_id(store, args.other)
            elif rec.parent_ids:
                base = store.get(rec.parent_ids[0])
            else:
                raise InspectError(f"program #{rec.id} is a seed and has no parent; "
                                   "name a second program to compare with (evorank diff RUN ID OTHER)")
    text = program_diff(base, rec, args.context)
    if args.json:
        _print_json({"from": base.id, "to": rec.id, "identical": not text, "diff": text})
        return 0
    if not text:
        print(f"#{base.id} and #{rec.id} have identical code")
    elif sys.stdout.isatty():
        from rich.syntax import Syntax

        _console().print(Syntax(text, "diff"))
    else:
        print(text, end="")
    return 0


# -- lineage --------------------------------------------------------------------------------------

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


def cmd_lineage(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            rec = resolve_id(store, args.id)
            steps = lineage_steps(store, rec)
    if args.json:
        _print_json(steps)
        return 0
    from rich.table import Table

    first = steps[0]
    origin = f"seed {first['seed_name']}" if first["operator"] == "seed" else f"#{first['id']} (no further parents)"
    table = Table(title=f"lineage of #{rec.id}: {len(steps) - 1} step(s) from {origin}", title_justify="left")
    for col, just in (("step", "right"), ("id", "right"), ("operator", "left"), ("island", "right"),
                      ("iteration", "right"), ("fitness", "right"), ("Δ step", "right"), ("Δ total", "right"),
                      ("note", "left")):
        table.add_column(col, justify=just)
    for s in steps:
        note = ", ".join(f"crossed with #{p}" for p in s["other_parents"])
        if s["operator"] == "seed":
            note = s["seed_name"] or ""
        delta = f"{s['delta']:+.4f}" if s["delta"] is not None else ""
        style = "green" if (s["delta"] or 0) > 0 else ("red" if (s["delta"] or 0) < 0 else "")
        table.add_row(str(s["step"]), str(s["id"]), s["operator"], str(s["island"]), str(s["iteration"]),
                      fmt(s["fitness"]), f"[{style}]{delta}[/]" if style else delta,
                      f"{s['delta_from_start']:+.4f}" if s["delta_from_start"] is not None else "", note)
    _console().print(table)
    return 0


# -- transfer evaluation (shared by `evorank eval RUN:ID` users and the report) ------------------

def available_collections(addresses) -> tuple[list[str], dict[str, str]]:
    """(loadable addresses, {missing address: why}) without downloading anything new."""
    from evorank.evaluators.collections import load_collection, resolve

    ok, missing = [], {}
    for a in addresses:
        kind, where = resolve(a)
        if kind == "local" and not (Path(where) / "corpus.jsonl").is_file():
            missing[a] = f"no corpus.jsonl in {where}"
            continue
        try:
            load_collection(a)
        except EvorankError as e:
            missing[a] = str(e)[:200]
            continue
        ok.append(a)
    return ok, missing


def evaluate_sources(sources: dict[str, str], addresses, k: int = 1000, log=None,
                     trusted: frozenset[str] | set[str] = frozenset()) -> dict[str, dict]:
    """Evaluate programs (label -> source) on collections as ``evorank eval`` does: ``load_topics`` once per
    collection; programs whose label is in ``trusted`` (the seeds) with ``evaluate_on`` in this process, the
    others (LLM-written code) through the static checks and the sandbox, as in ``evorank run``.

    Returns {label: {"collections": {address: metrics | None}, "errors": {address: reason}}}."""
    from evorank.evaluators.evaluate import evaluate_on, load_topics
    from evorank.evaluators.parallel import evaluate_program_sandboxed
    from evorank.evaluators.program import compile_program

    addresses = list(addresses)
    topics = [load_topics(a, log=log) for a in addresses]
    out = {label: {"collections": {}, "errors": {}} for label in sources}

    def record(label, address, ok, metrics, why):
        out[label]["collections"][address] = dict(metrics) if ok else None
        if not ok:
            out[label]["errors"][address] = why

    for label, src in sources.items():
        if label in trusted:
            try:
                prog = compile_program(src, name=label)
            except EvorankError as e:
                out[label]["errors"]["*"] = str(e)
                continue
            for address, t in zip(addresses, topics):
                res, _ = evaluate_on(prog, t, k=k)
                record(label, address, res.ok, res.metrics, f"{res.error_reason}: {res.error}")
        else:
            suite = evaluate_program_sandboxed(src, addresses, name=label, k=k, topics=topics)
            for address, res in zip(addresses, suite.collections):
                record(label, address, res.ok, res.metrics, f"{res.error_reason}: {res.error}")
    return out


# -- parser ---------------------------------------------------------------------------------------

def _id_help(default: str | None = None) -> str:
    return f"program: {ID_FORMS}" + (f" (default {default})" if default else "")


def add_inspection_commands(sub) -> None:
    """Register status, top, show, diff, lineage, report and export on the ``evorank`` subparsers."""
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("status", help="progress of a run: iterations, outcomes, best per island, tokens, cost, alive?",
                       description="Summarise a run (safe while it runs): proposals done of the total, elapsed time, "
                       "accepted/failed programs by reason, the best fitness per island, LLM tokens and cost, and "
                       "whether a process is writing to it now (its archive.lock is held).",
                       epilog="example:\n  evorank status runs/20261122-101500\n", formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("top", help="the best programs of a run, with per-collection metrics and latency",
                       description="List a run's accepted programs (each seed once, no migration copies), best first.",
                       epilog="examples:\n  evorank top runs/x -n 20\n  evorank top runs/x --by latency\n"
                       "  evorank top runs/x --by ndcg@10 --metric ndcg@10\n", formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("-n", type=int, default=10, help="how many (default 10; 0 = all)")
    p.add_argument("--by", default="fitness",
                   help="sort key: fitness (default), latency (fastest first), or a metric such as ndcg@10, "
                   "recall@100 (macro mean over the run's collections)")
    p.add_argument("--metric", help="the one metric to show per collection (default nDCG@10/R@100)")
    p.add_argument("--island", type=int, help="only this island")
    p.add_argument("--json", action="store_true", help="print as JSON (all metrics)")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("show", help="one program: code, metrics vs its parent and its seed, operator, model",
                       description=f"Show one program. ID: {ID_FORMS}.",
                       epilog="examples:\n  evorank show runs/x best\n  evorank show runs/x 42 --prompt --response\n"
                       "  evorank show runs/x best@island:1 --json\n", formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("id", nargs="?", default="best", help=_id_help("best"))
    p.add_argument("--prompt", action="store_true", help="also print the prompt sent to the LLM")
    p.add_argument("--response", action="store_true", help="also print the LLM's reply")
    p.add_argument("--plain", action="store_true", help="no syntax highlighting")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("diff", help="unified diff of a program against its parent (or another program)",
                       description=f"Unified diff from the parent (or OTHER) to ID. IDs: {ID_FORMS}.",
                       epilog="examples:\n  evorank diff runs/x best\n  evorank diff runs/x best seed:bm25\n",
                       formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("id", help=_id_help())
    p.add_argument("other", nargs="?", help="compare against this program instead of the parent")
    p.add_argument("-U", "--context", type=int, default=3, help="lines of context (default 3)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("lineage", help="ancestry of a program back to its seed, with the fitness change per step",
                       description=f"Follow first parents back to a seed. ID: {ID_FORMS}.",
                       epilog="example:\n  evorank lineage runs/x best\n", formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("id", nargs="?", default="best", help=_id_help("best"))
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run (plots, grids, lineage, transfer)",
                       description="One HTML file with everything inline (no network): fitness over iterations, the "
                       "best program vs the seeds per collection, each island's MAP-Elites grid, the best program's "
                       "lineage with diffs, seen vs held-out (transfer) metrics, failures, tokens and cost.",
                       epilog="examples:\n  evorank report runs/x -o report.html\n"
                       "  evorank report runs/x --heldout local:npl,local:adi\n  evorank report runs/x --no-transfer\n",
                       formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("-o", "--out", help="HTML file to write (default RUN/report.html)")
    p.add_argument("--heldout", default="heldout",
                   help="suite name or comma-separated collections for the transfer table (default: heldout)")
    p.add_argument("--no-transfer", dest="no_transfer", action="store_true",
                   help="skip the held-out evaluation (no program is run)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="write a program as a standalone scorer module (numpy, scipy, PyStemmer only)",
                       description="Write a single .py file with the program's code, the text analyzer, an index "
                       "builder and a Retriever: Retriever(docs).search(query, k=10). It does not import evorank.",
                       epilog="examples:\n  evorank export runs/x -o my_scorer.py\n  evorank export runs/x 42 -o s.py\n"
                       "  python -c \"from my_scorer import Retriever; "
                       "print(Retriever({'a': 'solar power', 'b': 'bread'}).search('solar'))\"\n",
                       formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("id", nargs="?", default="best", help=_id_help("best"))
    p.add_argument("-o", "--out", help="file to write (default scorer_<id>.py in the current folder)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_cmd_export)


def _cmd_report(args) -> int:
    from evorank.evolve.report import cmd_report

    return cmd_report(args)


def _cmd_export(args) -> int:
    from evorank.evolve.export import cmd_export

    return cmd_export(args)

