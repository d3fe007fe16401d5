"""Repair styles compared on the same failures (run by hand, against a chat model being served): for each failed
fresh proposal of finished LLM runs, the repair request each ``--styles`` would send (``rewrite``: the idea again on
the program the proposal started from; ``fix``: the failing statement, or the block, corrected), sent once per
style, the reply applied and mended exactly as in a run, and the candidate evaluated with ``evorank eval``.

A run measures repairs only on the failures its own draws produce (a handful per hour with a small local model),
and each style on different ones; here every style answers the same failures, in turns (the first failure's
styles, then the second's), so a run cut short stays balanced. Counted per style: candidates that ran cleanly, that
ran and rank as the program the proposal started from (same fitness to 1e-6: the idea did not survive), copies of
that program or of the failed one, and the failure reasons.

Only fresh proposals that failed the static checks or when run are taken (the failures the two styles handle
differently); replies that did not parse, were cut off or changed nothing get the same request in both styles.
The system message is today's template (archives keep the user message only). One request per style and failure:
a run has up to ``--repair-rounds`` of them.

Usage (the local model, see README):

    python bench/repair_ab.py RUN [RUN ...] --base-url http://127.0.0.1:8089/v1 \\
        [--model local] [--styles rewrite,fix] [--limit 12] [--max-tokens 800] [--suite quick] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from evorank.archive import RunStore
from evorank.archive.programs import normalized_code_hash
from evorank.evaluators.evaluate import load_topics
from evorank.evaluators.data.suites import resolve_collections
from evorank.evolve.llm.client import LLMClient, LLMSettings, ModelSpec
from evorank.evolve.llm.replies import reply_prose
from evorank.evolve.llm.prompts import IDEA_CHARS, PromptTemplates
from evorank.evolve.proposal import Proposal
from evorank.evolve.llm.proposer import LLMProposer, candidate_failed

from llm_replay import evaluate, prompt_donors

FRESH = ("diff", "full", "crossover")


def failures(run: str):
    """(run name, failed fresh record, the record it started from, donors, archived code hashes) for each fresh
    proposal of ``run`` that failed the static checks or when run."""
    with RunStore.open(run, readonly=True) as store:
        programs = {p.id: p for p in store.programs()}
    hashes = {normalized_code_hash(p.code) for p in programs.values()}
    for p in sorted(programs.values(), key=lambda p: p.id):
        if p.operator not in FRESH or p.status != "failed" or not candidate_failed(p.failure_reason) \
                or p.response is None or p.prompt is None:
            continue
        yield os.path.basename(run.rstrip("/")), p, programs[p.parent_ids[0]], prompt_donors(p, programs), hashes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default="local")
    ap.add_argument("--styles", default="rewrite,fix")
    ap.add_argument("--limit", type=int, default=12, help="failures to repair (in run order)")
    ap.add_argument("--max-tokens", type=int, default=800)
    ap.add_argument("--request-timeout", type=float, default=900.0)
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--timeout", type=int, default=30, help="seconds per collection for a candidate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    styles = args.styles.split(",")
    settings = LLMSettings(models=(ModelSpec(args.model),), base_url=args.base_url,
                           api_key=os.environ.get("OPENAI_API_KEY", "local"), max_tokens=args.max_tokens,
                           timeout_s=args.request_timeout, max_retries=1)
    client, templates = LLMClient(settings), PromptTemplates.load()
    sizes = {t.name: t.array_sizes for t in map(load_topics, resolve_collections(args.suite, None))}
    proposers = {s: LLMProposer(client, templates, "", {"diff": 1.0}, 1, s) for s in styles}
    for proposer in proposers.values():
        proposer.set_collection_sizes(sizes)
    rng = np.random.default_rng(args.seed)
    system = {"role": "system", "content": templates.render("system")}
    tally = {s: Counter() for s in styles}
    start_fitness: dict[str, str] = {}
    todo = [f for run in args.runs for f in failures(run)][:args.limit]
    with tempfile.TemporaryDirectory(prefix="evorank-repair-ab-") as tmp:
        for run, failed, start, donors, hashes in todo:
            opening = [system, {"role": "user", "content": failed.prompt}]
            for style in styles:
                prop = Proposal(iteration=failed.iteration, island=failed.island, generation=failed.generation,
                                operator=failed.operator, parent=start, messages=opening, response=failed.response,
                                opening=opening, idea=reply_prose(failed.response, IDEA_CHARS), model=args.model,
                                donors=donors)
                repair = proposers[style].follow_up(prop, failed)
                proposers[style].fill(repair, rng)
                if repair.source is None:
                    outcome = f"fail {repair.failure_reason}"
                elif normalized_code_hash(repair.source) in hashes:
                    outcome = "copy of an archived program"
                else:
                    outcome = evaluate(repair.source, args.suite, args.timeout, Path(tmp))
                    if outcome.startswith("ok"):
                        if start.code not in start_fitness:
                            start_fitness[start.code] = evaluate(start.code, args.suite, args.timeout, Path(tmp))
                        if abs(float(outcome.split()[1]) - float(start_fitness[start.code].split()[1])) < 1e-6:
                            outcome += " (ranks as the program it started from)"
                t = tally[style]
                t["requests"] += 1
                t["ran cleanly"] += outcome.startswith("ok")
                t["ranks as its start"] += outcome.endswith("started from)")
                t["copies"] += outcome.startswith("copy")
                t["mended"] += repair.trusted_edits is not None
                t["tokens"] += repair.prompt_tokens + repair.completion_tokens
                if outcome.startswith("fail"):
                    raised = re.search(r"raised (\w+)", outcome)
                    t["failed: " + (raised.group(1) if raised else outcome[5:].split(":")[0][:40])] += 1
                print(f"{run} #{failed.id} {failed.failure_reason} -> {style} ({repair.repair_kind}): {outcome}",
                      flush=True)
    for style in styles:
        print(f"{style}: " + ", ".join(f"{k} {v}" for k, v in tally[style].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
