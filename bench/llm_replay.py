"""Replay a finished LLM run's fresh replies through today's reply parsing and trusted edits, without the model
(run by hand): how many of the replies would now give a program that runs cleanly?

A measured LLM run takes over an hour with the local model (bench/llm_funnel.py); a change to the reply parser
(evolve/llm/replies.py) or to the edits trusted code makes before evaluation (evolve/llm/mend/attributes.py,
mend/names.py, mend/array_kinds.py) can be judged in minutes on the replies runs already archived. Each fresh reply
is applied to its parent again, mended with the donors its prompt showed (the helpers of the proposal's
direction first, then parent, crossover partner, the inspirations named in the prompt, the seeds); a candidate
that differs from the archived one is evaluated with `evorank eval --suite SUITE` (static checks and sandbox,
as in a run), the others keep their archived outcome.
Repairs are not replayed (their requests depended on the failures of the time).

Caveats: the finish reason of a reply is not archived, so a reply cut at max_tokens is judged by its unclosed
fence only; duplicates of other programs are not looked for. Replies that shaped a mend are in-sample for it:
judge a mend on runs it was not written from.

Usage:

    python bench/llm_replay.py RUN [RUN ...] [--suite quick] [--timeout 30]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from evorank.archive import RunStore
from evorank.archive.programs import RAN_STATUSES
from evorank.evolve.llm.replies import ReplyError, apply_reply, check_changes_what_runs, check_prepare_reads_no_query
from evorank.evolve.proposal import DIRECTION_FEATURE
from evorank.evolve.llm.prompts import PromptTemplates
from evorank.evolve.llm.mend import fix_candidate
from evorank.evolve.llm.proposer import direction_donor, donor_label

_INSPIRATION = re.compile(r"^## Program (\d+) \(fitness", re.MULTILINE)
DIRECTIONS = PromptTemplates.load().directions()  # the shipped ones (a run with --prompts may have had others)


def prompt_donors(p, programs: dict) -> tuple[tuple[str, str], ...]:
    """(label, code) of the helpers of proposal ``p``'s direction (as shipped today), of the programs its prompt
    showed (parent, crossover partner, the inspirations it names) and of the run's seeds: what a run lends names
    from when it mends ``p``'s candidate."""
    shown = [programs[i] for i in p.parent_ids] + \
        [programs[int(i)] for i in _INSPIRATION.findall(p.prompt or "") if int(i) in programs]
    seeds = [r for r in programs.values() if r.operator == "seed"]
    direction = DIRECTIONS.get(p.features.get(DIRECTION_FEATURE) or "")
    first = (direction_donor(direction),) if direction is not None and direction.code else ()
    return tuple(dict.fromkeys(first + tuple((donor_label(r), r.code) for r in shown + seeds)))


def evaluate(source: str, suite: str, timeout_s: int, workdir: Path) -> str:
    """``ok FITNESS`` or ``fail REASON`` for a candidate, through ``evorank eval`` in a child process."""
    path = workdir / "candidate.py"
    path.write_text(source, encoding="utf-8")
    cmd = [sys.executable, "-m", "evorank", "eval", str(path), "--suite", suite, "--json", "--timeout", str(timeout_s)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * 4 + 60)
    except subprocess.TimeoutExpired:
        return "fail too slow"
    try:
        result = json.loads(out.stdout)
    except json.JSONDecodeError:
        return "fail " + ((out.stderr.strip().splitlines() or ["?"])[-1])[:160]
    errors = [c["error"] for c in result.get("collections", []) if c.get("error")]
    return f"fail {errors[0][:160]}" if errors else f"ok {result['fitness']:.4f}"


def replay(run: str, suite: str, timeout_s: int, workdir: Path):
    """Yields (proposal id, archived outcome, outcome now, what trusted code changed) per fresh reply."""
    with RunStore.open(run, readonly=True) as store:
        programs = {p.id: p for p in store.programs()}
    for p in sorted(programs.values(), key=lambda p: p.id):
        if p.operator in ("seed", "repair", "migration") or p.iteration <= 0 or p.response is None \
                or p.model is None or p.model.startswith(("cmd:", "offline")):
            continue
        donors = list(prompt_donors(p, programs))
        before = "ok" if p.status in RAN_STATUSES else f"fail {p.failure_reason}"
        try:
            source, _ = apply_reply(programs[p.parent_ids[0]].code, p.response,
                                    "diff" if p.operator == "diff" else "full")
        except ReplyError as e:
            yield p.id, before, f"fail {e.reason}", None
            continue
        parent_code = programs[p.parent_ids[0]].code
        source, note = fix_candidate(source, donors)
        try:  # the refusals before evaluation, as in a run
            check_changes_what_runs(parent_code, source)
            check_prepare_reads_no_query(source)
        except ReplyError as e:
            yield p.id, before, f"fail {e.reason}", note
            continue
        now = before if source == p.code else evaluate(source, suite, timeout_s, workdir)
        yield p.id, before, now, note


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--timeout", type=int, default=30, help="seconds per collection for a replayed candidate")
    args = ap.parse_args(argv)
    totals = {"replies": 0, "ran_then": 0, "ran_now": 0, "mended": 0}
    with tempfile.TemporaryDirectory(prefix="evorank-replay-") as tmp:
        for run in args.runs:
            for pid, before, now, note in replay(run, args.suite, args.timeout, Path(tmp)):
                totals["replies"] += 1
                totals["ran_then"] += before.startswith("ok")
                totals["ran_now"] += now.startswith("ok")
                totals["mended"] += note is not None
                print(f"{os.path.basename(run.rstrip('/'))} #{pid}: then {before} | now {now}"
                      + (f" [{note}]" if note else ""), flush=True)
    print(f"{totals['replies']} fresh replies: ran cleanly then {totals['ran_then']}, now {totals['ran_now']} "
          f"({totals['mended']} mended by trusted code)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
