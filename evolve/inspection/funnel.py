"""What a run's model-written proposals came to: for each chain (a fresh proposal and its repairs), whether it ended
in an idea, a copy, a no-op or a failure, and whether its idea improved the program it started from.

"Runs cleanly" counts the wrong thing: a program that runs may be a program its prompt showed, given back, or a
change that ranks every query as its start. Every program a model or command wrote is put in one class:

- **copy**: its code is a program its prompt showed (the parent, the crossover partner, an inspiration, a
  direction's example program), up to layout, comments and code nothing uses (``archive.essential_code``); or the
  proposer refused it as such before evaluation (``no_change``, ``copy``), or the archive as an archived program
  (``duplicate``);
- **no-op**: it ran but ranks as the program it started from (the chain's start, or for a crossover either
  parent) or as an archived program its prompt showed (an inspiration: a seed with a helper added that changes
  nothing is that seed again): the evaluator found it on the query sample (reason ``no_op``), or its sample
  signature or its metrics say so (``evaluators.cascade``: top 100 documents per query, or metrics equal within a
  small tolerance);
- **idea**: it ran, changes the ranking and is not a copy (cut by the cascade included: it ran and ranks
  differently, worse);
- **failed**: anything else (no code, a failed check, an exception).

A chain's outcome is the best class among its programs (idea, then no-op, then copy, then failed); "clean" chains
are those with a program that ran. The programs a prompt showed are read back from the archived prompt (the chain's
first request and the repair's own): each markdown section's code fences, joined, are one shown program.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from evorank.archive import ProgramRecord, essential_code
from evorank.evaluators.cascade import metrics_alike
from evorank.evolve.proposal import COPY, DIRECTION_FEATURE, NO_OP, REPAIR, SAMPLE_RANKING_FEATURE

__all__ = ["KINDS", "shown_programs", "classify_run", "funnel_summary"]

#: The classes, best first (a chain's outcome is the best class among its programs).
KINDS = ("idea", "no_op", "copy", "failed")
_RAN = ("accepted", "rejected_cascade")
_GAVE_BACK = ("no_change", COPY, "duplicate")  # refused before evaluation: code already there
_OPEN = re.compile(r"^(`{3,}|~{3,})")


def shown_programs(prompt: str | None) -> list[str]:
    """The programs a prompt showed: per markdown section (a line starting with ``#`` outside code fences starts
    one), its code fences joined, when they define ``score`` (a helper alone is no program)."""
    sections: list[list[str]] = [[]]
    fence: str | None = None
    code: list[str] = []
    for line in (prompt or "").splitlines():
        if fence is None:
            m = _OPEN.match(line)
            if m:
                fence, code = m.group(1), []
            elif line.startswith("#"):
                sections.append([])
        elif line.strip() and set(line.strip()) == {fence[0]} and len(line.strip()) >= len(fence):
            sections[-1].append("\n".join(code))
            fence = None
        else:
            code.append(line)
    out = []
    for fences in sections:
        text = "\n\n".join(fences)
        if "def score" in text:
            out.append(text)
    return out


@dataclass
class Classified:
    """One model-written program and its class (``kind``), with the program it is judged against (``start``)."""

    program: ProgramRecord
    kind: str
    start: ProgramRecord
    root: ProgramRecord  # the fresh proposal its chain began with


def _ran(p: ProgramRecord) -> bool:
    return p.status in _RAN or p.failure_reason == NO_OP


def classify_run(programs: list[ProgramRecord]) -> list[Classified]:
    """Every program a model or command wrote (those with a prompt), classified; in id order."""
    by_id = {p.id: p for p in programs}
    essential: dict[str, str | None] = {}

    def ess(code: str) -> str | None:
        if code not in essential:
            essential[code] = essential_code(code)
        return essential[code]

    def root_of(p: ProgramRecord) -> ProgramRecord:
        while p.operator == REPAIR and p.parent_ids and p.parent_ids[0] in by_id:
            p = by_id[p.parent_ids[0]]
        return p

    ran_by_code: dict[str | None, list[ProgramRecord]] = {}  # essential code -> the archived programs that ran

    def archived_as(codes: set) -> list[ProgramRecord]:
        """The archived programs that ran with one of these essential codes (the map built on first use)."""
        if not ran_by_code:
            ran_by_code[None] = []  # built: a run with no program that ran is not read again
            for r in programs:
                if r.status == "accepted" and r.metrics:
                    ran_by_code.setdefault(ess(r.code), []).append(r)
        return [r for code in codes if code is not None for r in ran_by_code.get(code, [])]

    out = []
    for p in sorted(programs, key=lambda r: r.id):
        if p.prompt is None or p.iteration <= 0 or p.operator in ("seed", "migration") or not p.parent_ids:
            continue
        root = root_of(p)
        if not root.parent_ids or root.parent_ids[0] not in by_id:
            continue
        starts = [by_id[i] for i in root.parent_ids if i in by_id]
        kind = "failed"
        if p.failure_reason in _GAVE_BACK:
            kind = "copy"
        elif p.failure_reason == NO_OP:
            kind = "no_op"
        elif _ran(p):
            mine = ess(p.code)
            shown = {ess(code) for prompt in {root.prompt, p.prompt} for code in shown_programs(prompt)}
            shown |= {ess(s.code) for s in starts}
            if mine is not None and mine in shown:
                kind = "copy"
            elif p.status == "accepted" and any(_ranks_alike(p, s) for s in [*starts, *archived_as(shown)]):
                kind = "no_op"
            else:
                kind = "idea"
        out.append(Classified(p, kind, starts[0], root))
    return out


def _ranks_alike(p: ProgramRecord, start: ProgramRecord) -> bool:
    mine, theirs = p.features.get(SAMPLE_RANKING_FEATURE), start.features.get(SAMPLE_RANKING_FEATURE)
    return bool(mine) and mine == theirs or metrics_alike(p.metrics, start.metrics)


def funnel_summary(programs: list[ProgramRecord], max_tokens: int | None = None, since_iteration: int = 0) -> dict:
    """Chains and their outcomes (``chains``, ``clean``, ``ideas``, ``no_ops``, ``copies``, ``failed``,
    ``improved``), each idea chain's best idea and how it compares with its start on the train queries (and the
    validation queries, when measured), the same by direction, and per request: prompt tokens, seconds, and how
    many replies were cut off (``max_tokens`` completion tokens). ``since_iteration``: only the chains whose fresh
    proposal was made at that iteration or later (a part of a run, e.g. after its model server was changed)."""
    classified = [c for c in classify_run(programs) if c.root.iteration >= since_iteration]
    chains: dict[int, list[Classified]] = {}
    for c in classified:
        chains.setdefault(c.root.id, []).append(c)
    rank = {k: i for i, k in enumerate(KINDS)}
    outcome = {root: min((c.kind for c in cs), key=rank.__getitem__) for root, cs in chains.items()}
    ideas = []
    for root, cs in chains.items():
        found = [c for c in cs if c.kind == "idea"]
        if not found:
            continue
        best = max(found, key=lambda c: (c.program.fitness is not None, c.program.fitness or 0.0))
        p, s = best.program, best.start
        delta = p.fitness - s.fitness if p.fitness is not None and s.fitness is not None else None
        val, sval = p.features.get("val_fitness"), s.features.get("val_fitness")
        ideas.append({
            "id": p.id, "chain": root, "start": s.id, "operator": best.root.operator, "status": p.status,
            "direction": best.root.features.get(DIRECTION_FEATURE), "fitness": p.fitness, "start_fitness": s.fitness,
            "delta": delta, "relative": delta / s.fitness if delta is not None and s.fitness else None,
            "improved": delta is not None and delta > 0,
            "val_delta": val - sval if isinstance(val, (int, float)) and isinstance(sval, (int, float)) else None,
        })
    directions: dict[str, dict[str, int]] = {}
    for root, cs in chains.items():
        d = directions.setdefault(cs[0].root.features.get(DIRECTION_FEATURE) or "(none)", {"chains": 0, "ideas": 0})
        d["chains"] += 1
        d["ideas"] += outcome[root] == "idea"
    requests = [c.program for c in classified]
    secs = [p.created_at - p.started_at for p in requests if p.created_at and p.started_at]
    n = len(chains)
    count = {k: sum(o == k for o in outcome.values()) for k in KINDS}
    return {
        "chains": n, "clean": sum(any(_ran(c.program) for c in cs) for cs in chains.values()),
        "ideas": count["idea"], "no_ops": count["no_op"], "copies": count["copy"], "failed": count["failed"],
        "improved": sum(i["improved"] for i in ideas), "idea_share": round(count["idea"] / n, 3) if n else None,
        "programs": {k: sum(c.kind == k for c in classified) for k in KINDS},
        "idea_list": sorted(ideas, key=lambda i: i["id"]), "by_direction": dict(sorted(directions.items())),
        "requests": len(requests),
        "cut_off": sum(bool(max_tokens) and p.completion_tokens >= max_tokens for p in requests),
        "prompt_tokens_per_request": round(sum(p.prompt_tokens for p in requests) / len(requests))
        if requests else None,
        "seconds_per_request": round(sum(secs) / len(secs), 1) if secs else None,
    }
