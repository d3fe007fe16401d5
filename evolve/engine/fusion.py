"""The run's island bests, fused into one program that competes for the run's best on the validation queries.

Islands evolve apart, and their bests reach a similar fitness by different parts: each is a bet on the
collections selection saw, and the bets differ. Their score fusion (``evaluators.program.fusion``: CombSUM of
per-query z-scores) keeps what they agree on and dilutes what only one of them bets on. A run asked to
(``--fuse-best``) ends, after its last proposal, by fusing the best program of the whole run
(``RunStore.best_on_validation``) with each other island's own best (chosen by the same rule among the programs
the island made, not the copies it received) whose code differs and whose text outside the EVOLVE-BLOCK is the
same (one seed's), for as many members as keep the fused block within the size limits every candidate is held
to. The fusion is evaluated like any candidate (sandboxed, train and validation queries) and archived (operator
``fusion``, parents the members; never placed in a grid). ``best_on_validation`` answers it in place of the best
single program only where its validation fitness is higher: the same rule, on the same queries never selected on
during the run, that chose among the single programs. A ``fusion`` event records the members and both validation
fitnesses, so a resumed run does not fuse the same programs again. Everything is deterministic, so a run still
reproduces under its seed.

A fused program runs all its members: its scoring time is their sum (reported as latency, as for any program).
"""
from __future__ import annotations

import logging

from evorank.archive import FUSE, NOT_IN_GRIDS, ProgramRecord
from evorank.evaluators.errors import ProgramError
from evorank.evaluators.program.checks import check_source
from evorank.evaluators.program.fusion import fuse
from evorank.evaluators.program.source import split_block

log = logging.getLogger(__name__)
#: the static checks' verdicts a fusion is trimmed to avoid (its other checks it meets or fails as any candidate)
BLOCK_LIMITS = ("too_large:block_bytes", "too_large:block_lines")


def fusion_members(store, n_islands: int, top_n: int) -> list[ProgramRecord]:
    """The programs to fuse: the run's best, then each other island's own best (migration copies left out: they
    are another island's programs) whose code differs from those before it and whose head and tail (the text
    outside the block) are the run's best's; fewer than two: nothing to fuse.
    ``top_n``: the run's ``best_of`` (how many of the best by train fitness its validation queries choose from)."""
    best = store.best_on_validation(top_n)
    if best is None or best.operator in NOT_IN_GRIDS or best.operator == "seed":
        return []
    out, hashes, outside = [best], {best.code_hash}, _outside(best.code)
    for island in range(n_islands):
        if island == best.island:
            continue
        rec = store.best_on_validation(top_n, island=island, migrants=False)
        if rec is None or rec.code_hash in hashes or rec.operator == "seed" or _outside(rec.code) != outside:
            continue
        out.append(rec)
        hashes.add(rec.code_hash)
    return out if len(out) > 1 else []


def fitting_fusion(members: list[ProgramRecord]) -> tuple[tuple[str, list[ProgramRecord]] | None, str | None]:
    """((the fusion of the first k members, those members), None) for the largest k >= 2 whose fused block the
    static checks do not find too large (``BLOCK_LIMITS``; a fusion of large programs may be), or (None, why) when
    none fits or fusing fails."""
    for k in range(len(members), 1, -1):
        try:
            source = fuse([m.code for m in members[:k]])
        except ProgramError as e:
            return None, str(e)
        if not any(v.reason in BLOCK_LIMITS for v in check_source(source).violations):
            return (source, members[:k]), None
    return None, "the fused program would exceed the EVOLVE-BLOCK size limits"


def _outside(code: str) -> tuple[str, str] | None:
    try:
        split = split_block(code)
    except ProgramError:
        return None
    return split.head, split.tail


def fuse_best(store, evaluator, cfg, seed_source_of, complete) -> ProgramRecord | None:
    """Fuse a finished run's island bests once, as the module docstring says: archive the fusion and log a
    ``fusion`` event, in one transaction (the event also when there is nothing that can be fused, so a resumed run
    does not try the same programs again). ``cfg``: the run's (islands, best_of); ``seed_source_of(record)``: the
    seed a program descends from; ``complete(record, result)`` fills a record from its evaluation (the engine's).
    Returns the archived fusion (None: nothing fused)."""
    candidates = fusion_members(store, cfg.islands, cfg.best_of)
    data: dict = {"candidates": [m.id for m in candidates]}
    if any(e["data"].get("candidates") == data["candidates"] for e in store.events("fusion")):
        return None  # fused before (a resumed run); a run resumed for more proposals, with new bests, fuses anew
    fitting, data["skipped"] = fitting_fusion(candidates) if candidates else (None, "fewer than two island bests")
    rec = None
    if fitting is not None:
        source, members = fitting
        log.info("fusing the island bests %s", ", ".join(f"#{m.id}" for m in members))
        result = evaluator.evaluate([source], [seed_source_of(members[0])], None, ["fusion"])[0]
        rec = complete(ProgramRecord(code=source, operator=FUSE, island=members[0].island,
                                     generation=max(m.generation for m in members) + 1, iteration=0,
                                     parent_ids=tuple(m.id for m in members)), result)
        data.update(members=[m.id for m in members], val_fitness=rec.features.get("val_fitness"),
                    best_val_fitness=members[0].features.get("val_fitness"), status=rec.status)
    with store.atomic():
        if rec is not None:
            store.add_program(rec)
        store.log_event("fusion", data)
    if rec is not None:
        chosen = store.best_on_validation(cfg.best_of)
        log.info("fusion #%d of %s: validation fitness %s (the best single program's %s); the run's best is #%d",
                 rec.id, ", ".join(f"#{i}" for i in data["members"]), _fmt(data["val_fitness"]),
                 _fmt(data["best_val_fitness"]), chosen.id if chosen is not None else -1)
    return rec


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
