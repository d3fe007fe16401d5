"""Do the trusted edits change programs that run? (run by hand, no model, no evaluation)

Every distinct program that ran cleanly in the given run folders (``status = accepted``), plus the seeds, the
literature examples and each direction's program (its helpers and complete prepare and score in the BM25 seed),
goes through what a chat model's candidate goes through before evaluation: ``proposers.fix_candidate``
(attribute, shadowing-local, dropped-parameter, state, missing-name and array-level mends, with every shipped
direction and the seeds as donors) and the refusals before evaluation
(``operators.check_prepare_reads_no_query``). A mend or refusal that
touches one of them would change (or reject) a program that could run; the count should be 0.

Usage:  python bench/mend_scan.py RUN [RUN ...]      (e.g. /tmp/llm/* and an offline run's folder)
"""
from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from evorank.evaluators.program.source import BLOCK_START, load_program, split_block
from evorank.evolve.llm.replies import ReplyError, check_prepare_reads_no_query
from evorank.evolve.llm.prompts import PromptTemplates
from evorank.evolve.llm.mend import fix_candidate
from evorank.evolve.llm.proposer import direction_donor

REPO = Path(__file__).resolve().parents[1]


def programs_that_ran(runs: list[str]) -> set[str]:
    codes = set()
    for run in runs:
        with sqlite3.connect(f"file:{Path(run) / 'archive.sqlite'}?mode=ro", uri=True) as db:
            codes |= {code for (code,) in db.execute("SELECT code FROM programs WHERE status = 'accepted'")}
    for path in [*(REPO / "seeds").glob("*.py"), *(REPO / "examples").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        if BLOCK_START in text:
            codes.add(text)
    seed = split_block(load_program("bm25").source)
    for d in PromptTemplates.load().directions().values():  # each direction's program, as the prompt shows it
        codes.add(seed.join(d.program_block))
    return codes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*")
    args = ap.parse_args(argv)
    donors = [*(direction_donor(d) for d in PromptTemplates.load().directions().values()),
              *((f"seed {name}", load_program(name).source) for name in ("bm25", "ql_dirichlet"))]
    codes = programs_that_ran(args.runs)
    changed = refused = 0
    for code in sorted(codes):
        mended, note = fix_candidate(code, donors)
        if mended != code:
            changed += 1
            print(f"changed: {note}")
        try:
            check_prepare_reads_no_query(code)
        except ReplyError as e:
            refused += 1
            print(f"refused: {e.reason}: {str(e).partition(chr(10))[0]}")
    print(f"{len(codes)} distinct programs that ran (in {len(args.runs)} run folders, with the seeds and examples): "
          f"{changed} changed by trusted edits, {refused} refused before evaluation")
    return 1 if changed or refused else 0


if __name__ == "__main__":
    raise SystemExit(main())
