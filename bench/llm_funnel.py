"""Where an LLM run's proposals end up, stage by stage (run by hand on a finished run folder).

For fresh proposals (diff, full, crossover, command) and repairs separately, and for chains (a fresh
proposal followed by its repairs, if any): how many replies parsed into a candidate, how many reached
evaluation (passed the static checks and were not duplicates), how many ran cleanly (accepted, or cut by
the cascade after running), how many trusted code mended before evaluation (an attribute the contract lacks
rewritten, a missing name defined, arrays brought to the postings: evolve/llm/mend/attributes.py,
evolve/llm/mend/names.py, evolve/llm/mend/array_kinds.py) and how many of those ran, and how many
improved on the program they started from; plus the seconds per request (from the proposal's start to its
archiving) and the wall time per proposal over the run. Chains that ran are also counted by whether their first
program that ran has exactly the `prepare` and `score` of the complete program shown with their direction (up to
layout, comments and docstrings): the model copied the example rather than adapting it.

Usage:

    python bench/llm_funnel.py runs/<timestamp> [--json]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter

from evorank.archive import RunStore
from evorank.archive.programs import RAN_STATUSES, normalized_code
from evorank.evolve.llm.failing_statement import MARKER
from evorank.evolve.llm.replies import REPLY_FAILURES
from evorank.evolve.llm.prompts import PromptTemplates
from evorank.evolve.proposal import DIRECTION_FEATURE, REPAIR_KIND_FEATURE, TRUSTED_EDITS_FEATURE

NO_CANDIDATE = REPLY_FAILURES + ("llm:", "proposer:", "command:")
#: How repairs were asked for (the repair_kind feature; runs from before it had statement and block repairs only)
REPAIR_KINDS = {"rewrite": "the idea again", "statement": "statement", "block": "block", "shorter": "as a diff"}


def parsed(p) -> bool:
    return not (p.status == "failed" and (p.failure_reason or "").startswith(NO_CANDIDATE))


def evaluated(p) -> bool:
    return p.status in RAN_STATUSES or (p.status == "failed" and p.stage >= 1)


def ran(p) -> bool:
    return p.status in RAN_STATUSES


def ranks_as(p, start) -> bool:
    """Whether ``p`` ran and ranks exactly as ``start`` (the same metrics on every collection)."""
    return p.status == "accepted" and p.metrics == start.metrics


def entry_points(code: str) -> dict[str, str]:
    """``prepare`` and ``score`` of a program or block, each as the archive's normalized code (no docstring,
    comments or layout; {} when the code does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {}
    return {node.name: normalized_code(ast.unparse(node)) for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name in ("prepare", "score")}


def copies_example(p, examples: dict[str, dict[str, str]]) -> bool:
    """Whether ``p`` has exactly the prepare and score of its direction's complete program."""
    example = examples.get(p.features.get(DIRECTION_FEATURE) or "")
    return bool(example) and entry_points(p.code) == example


def funnel(rows, start_of) -> dict:
    n = len(rows)
    improved = [p for p in rows if p.status == "accepted" and (start_of(p).fitness or 0) < (p.fitness or 0)]
    # programs that ran and rank exactly as the program they started from (same metrics on every collection): the
    # idea did not change the ranking (a no-op, or the change was dropped)
    like_start = [p for p in rows if ranks_as(p, start_of(p))]
    secs = [p.created_at - p.started_at for p in rows if p.created_at and p.started_at]
    return {"requests": n, "parsed": sum(map(parsed, rows)), "evaluated": sum(map(evaluated, rows)),
            "ran_cleanly": sum(map(ran, rows)), "improved": len(improved), "ranks_like_start": len(like_start),
            # candidates that trusted code mended before evaluation, and how many of them ran
            "trusted_edits": sum(TRUSTED_EDITS_FEATURE in p.features for p in rows),
            "trusted_edits_ran": sum(TRUSTED_EDITS_FEATURE in p.features and ran(p) for p in rows),
            "seconds_per_request": round(sum(secs) / len(secs), 1) if secs else None,
            "failure_reasons": dict(Counter(p.failure_reason for p in rows if p.status == "failed").most_common()),
            # copies of a program already in the archive (up to layout and comments): parsed, not evaluated
            "duplicates": sum(p.status == "duplicate" for p in rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with RunStore.open(args.run, readonly=True) as store:
        progs = [p for p in store.programs() if p.iteration > 0 and p.operator not in ("seed", "migration")]
        by_id = {p.id: p for p in store.programs()}
        stops = store.events("stop")
    fresh = [p for p in progs if p.operator != "repair"]
    repairs = [p for p in progs if p.operator == "repair"]

    def origin(p):  # the evaluated program a proposal (or its chain of repairs) started from
        while p.operator == "repair":
            p = by_id[p.parent_ids[0]]
        return by_id[p.parent_ids[0]]

    def repair_kind(r):
        return r.features.get(REPAIR_KIND_FEATURE) or ("statement" if MARKER in (r.prompt or "") else "block")

    def chain_root(p):
        while p.operator == "repair":
            p = by_id[p.parent_ids[0]]
        return p

    chains: dict[int, list] = {p.id: [p] for p in fresh}
    for r in repairs:
        chains.setdefault(chain_root(r).id, []).append(r)
    clean_chains = sum(any(map(ran, c)) for c in chains.values())
    examples = {name: entry_points(d.example) for name, d in PromptTemplates.load().directions().items()}
    copied = sum(any(map(ran, c)) and copies_example(next(p for p in c if ran(p)), examples) for c in chains.values())
    # chains whose every program that ran ranks as the program the chain started from
    like_start = sum(any(map(ran, c)) and all(ranks_as(p, origin(p)) for p in c if ran(p)) for c in chains.values())
    # chains by the direction their first request gave (evolve/llm/directions.py; none: the model chose)
    by_direction: dict[str, list[int]] = {}
    for c in chains.values():
        tally = by_direction.setdefault(c[0].features.get(DIRECTION_FEATURE) or "(none)", [0, 0])
        tally[0] += 1
        tally[1] += any(map(ran, c))
    elapsed = sum(e["data"].get("elapsed_s", 0) for e in stops)
    out = {
        "run": args.run, "proposals": len(progs), "wall_seconds_per_proposal": round(elapsed / len(progs), 1) if progs else None,
        "fresh": funnel(fresh, origin), "repairs": funnel(repairs, origin),
        # by how they were asked: the idea again on the program the chain started from, the failing statement
        # marked in its function, the whole block, a cut-off reply asked again as a diff
        **{f"{kind}_repairs": funnel([r for r in repairs if repair_kind(r) == kind], origin) for kind in REPAIR_KINDS},
        "chains": {"n": len(chains), "ended_running_cleanly": clean_chains, "of_which_rank_as_start": like_start,
                   "of_which_copy_the_directions_program": copied,
                   "share": round(clean_chains / len(chains), 3) if chains else None,
                   "by_direction": {k: {"n": n, "ended_running_cleanly": ok}
                                    for k, (n, ok) in sorted(by_direction.items())}},
    }
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.run}: {out['proposals']} proposals, {out['wall_seconds_per_proposal']} s per proposal (wall)")
    for stage in ("fresh", "repairs", *(f"{kind}_repairs" for kind in REPAIR_KINDS)):
        f = out[stage]
        if stage != "fresh" and not f["requests"]:
            continue
        label = f"  of which {REPAIR_KINDS[stage[:-8]]}" if stage.endswith("_repairs") else stage
        print(f"  {label:8s} {f['requests']:3d} requests  parsed {f['parsed']}  evaluated {f['evaluated']}  "
              f"ran cleanly {f['ran_cleanly']}  improved {f['improved']}  ({f['seconds_per_request']} s/request)")
        if f["ranks_like_start"]:
            print(f"           ranked exactly as the program they started from: {f['ranks_like_start']}")
        if f["trusted_edits"]:
            print(f"           mended by trusted code {f['trusted_edits']} (ran cleanly {f['trusted_edits_ran']})")
        if f["failure_reasons"]:
            print("           failed: " + ", ".join(f"{k} {v}" for k, v in f["failure_reasons"].items()))
        if f["duplicates"]:
            print(f"           duplicates of archived programs: {f['duplicates']}")
    c = out["chains"]
    print(f"  chains   {c['n']} fresh proposals, {c['ended_running_cleanly']} ended as a program that runs cleanly "
          f"({(c['share'] or 0) * 100:.0f}%), {c['of_which_rank_as_start']} of them ranking exactly as the program "
          f"the chain started from, {c['of_which_copy_the_directions_program']} copying the prepare and score of "
          "their direction's program")
    if set(c["by_direction"]) != {"(none)"}:
        print("           by direction: " + ", ".join(f"{k} {v['ended_running_cleanly']}/{v['n']}"
                                                     for k, v in c["by_direction"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
