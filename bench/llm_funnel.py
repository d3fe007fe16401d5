"""What an LLM run's proposals came to (run by hand on a run folder): ideas, copies, no-ops and failures per chain,
and where proposals end up, stage by stage.

A chain is a fresh proposal (diff, full, crossover, command) with its repairs. Each program a model wrote is a
*copy* (a program its prompt showed, up to layout, comments and unused code, or refused as such), a *no-op* (it
ran, but ranks as the program it started from: top 100 documents of every sampled query, or metrics equal within a
small tolerance), an *idea* (it ran, changes the ranking, is not a copy) or a failure
(``evolve/inspection/funnel.py`` says exactly how); a chain ends in the best of its programs' classes. For each
idea chain: did its best idea improve its start on the train queries, and by how much. Per request: prompt tokens,
seconds, replies cut off at ``max_tokens``; per proposal, the wall time from its iteration's start to its archiving
(with ``--in-flight 1``, proposals do not overlap).

Below that, for fresh proposals and repairs separately: how many replies parsed into a candidate, reached
evaluation, ran cleanly and were ideas, were mended by trusted code, and the failure reasons; repairs by how they were
asked.

Usage:

    python bench/llm_funnel.py RUN [--json] [--since-iteration N]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from evorank.archive import RunStore
from evorank.archive.programs import RAN_STATUSES
from evorank.evolve.inspection.funnel import classify_run, funnel_summary
from evorank.evolve.llm.failing_statement import MARKER
from evorank.evolve.llm.replies import REPLY_FAILURES
from evorank.evolve.proposal import NO_OP, REPAIR_KIND_FEATURE, TRUSTED_EDITS_FEATURE

NO_CANDIDATE = REPLY_FAILURES + ("llm:", "proposer:", "command:")
#: How repairs were asked for (the repair_kind feature; runs from before it had statement and block repairs only)
REPAIR_KINDS = {"rewrite": "the idea again", "statement": "statement", "block": "block", "shorter": "shorter"}


def parsed(p) -> bool:
    return not (p.status == "failed" and (p.failure_reason or "").startswith(NO_CANDIDATE))


def evaluated(p) -> bool:
    return p.status in RAN_STATUSES or p.failure_reason == NO_OP or (p.status == "failed" and p.stage >= 1)


def ran(p) -> bool:
    return p.status in RAN_STATUSES or p.failure_reason == NO_OP


def stages(rows, ideas: set[int]) -> dict:
    """Counts of ``rows`` (proposals made one way) at each stage; ``ideas``: the ids of the run's ideas."""
    secs = [p.created_at - p.started_at for p in rows if p.created_at and p.started_at]
    return {"requests": len(rows), "parsed": sum(map(parsed, rows)), "evaluated": sum(map(evaluated, rows)),
            "ran_cleanly": sum(map(ran, rows)), "ideas": sum(p.id in ideas for p in rows),
            # candidates that trusted code mended before evaluation, and how many of them ran
            "trusted_edits": sum(TRUSTED_EDITS_FEATURE in p.features for p in rows),
            "trusted_edits_ran": sum(TRUSTED_EDITS_FEATURE in p.features and ran(p) for p in rows),
            "seconds_per_request": round(sum(secs) / len(secs), 1) if secs else None,
            "failure_reasons": dict(Counter(p.failure_reason for p in rows if p.status != "accepted"
                                            and p.failure_reason).most_common())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--since-iteration", dest="since", type=int, default=0, metavar="N",
                    help="only the chains whose fresh proposal was made at iteration N or later")
    args = ap.parse_args(argv)
    with RunStore.open(args.run, readonly=True) as store:
        programs = store.programs()
        stops = store.events("stop")
        max_tokens = store.config().get("max_tokens")
    progs = [p for p in programs if p.iteration > max(0, args.since - 1) and p.operator not in ("seed", "migration")]
    fresh = [p for p in progs if p.operator != "repair"]
    repairs = [p for p in progs if p.operator == "repair"]

    ideas = {c.program.id for c in classify_run(programs) if c.kind == "idea"}

    def repair_kind(r):
        return r.features.get(REPAIR_KIND_FEATURE) or ("statement" if MARKER in (r.prompt or "") else "block")

    # each proposal's own time, from its iteration's start to its archiving (the request or requests, the reply's
    # mending, the evaluation); the sessions' elapsed time misses a session that was killed (it logs no stop)
    took = [p.created_at - p.started_at for p in progs if p.started_at and p.created_at]
    elapsed = sum(e["data"].get("elapsed_s", 0) for e in stops)
    out = {"run": args.run, "proposals": len(progs),
           "wall_seconds_per_proposal": round(sum(took) / len(took), 1) if took else
           (round(elapsed / len(progs), 1) if progs and elapsed else None),
           **funnel_summary(programs, max_tokens, args.since),
           "fresh": stages(fresh, ideas), "repairs": stages(repairs, ideas),
           **{f"{kind}_repairs": stages([r for r in repairs if repair_kind(r) == kind], ideas)
              for kind in REPAIR_KINDS}}
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    n = out["chains"]
    print(f"{args.run}: {out['proposals']} proposals, {out['wall_seconds_per_proposal']} s per proposal (wall); "
          f"{out['requests']} requests, {out['prompt_tokens_per_request']} prompt tokens and "
          f"{out['seconds_per_request']} s each, {out['cut_off']} cut off at {max_tokens} tokens")
    print(f"  chains   {n}: {out['ideas']} ended in an idea ({(out['idea_share'] or 0) * 100:.0f}%), "
          f"{out['no_ops']} in a no-op, {out['copies']} in a copy, {out['failed']} failed; {out['clean']} ran cleanly "
          f"at some point; {out['improved']} idea(s) improved their start on train")
    p = out["programs"]
    print(f"  programs {p['idea']} ideas, {p['no_op']} no-ops, {p['copy']} copies, {p['failed']} failed")
    for i in out["idea_list"]:
        gain = (f"{i['delta']:+.4f} ({i['relative'] * 100:+.2f}%)" if i["delta"] is not None
                else f"not fully evaluated ({i['status']})")
        val = f", validation {i['val_delta']:+.4f}" if i["val_delta"] is not None else ""
        print(f"    idea #{i['id']} (chain #{i['chain']}, {i['operator']}, {i['direction'] or 'no direction'}): "
              f"train {gain} vs #{i['start']}{val}")
    if set(out["by_direction"]) != {"(none)"}:
        print("  ideas by direction: " + ", ".join(f"{k} {v['ideas']}/{v['chains']}"
                                                   for k, v in out["by_direction"].items()))
    for stage in ("fresh", "repairs", *(f"{kind}_repairs" for kind in REPAIR_KINDS)):
        f = out[stage]
        if stage != "fresh" and not f["requests"]:
            continue
        label = f"  of which {REPAIR_KINDS[stage[:-8]]}" if stage.endswith("_repairs") else stage
        print(f"  {label:8s} {f['requests']:3d} requests  parsed {f['parsed']}  evaluated {f['evaluated']}  "
              f"ran cleanly {f['ran_cleanly']}  ideas {f['ideas']}  ({f['seconds_per_request']} s/request)")
        if f["trusted_edits"]:
            print(f"           mended by trusted code {f['trusted_edits']} (ran cleanly {f['trusted_edits_ran']})")
        if f["failure_reasons"]:
            print("           not accepted: " + ", ".join(f"{k} {v}" for k, v in f["failure_reasons"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
