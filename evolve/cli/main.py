"""The ``evorank`` command line: every subcommand's parser and the dispatch to its command function.

The commands live with what they need and are imported only when they run: :mod:`.run` (run),
:mod:`.evaluate` (eval, datasets), ``inspection.terminal`` (status, top, show, diff, lineage), ``inspection.report``
and ``inspection.export``. This module depends on them, never the other way round, and imports nothing heavy at
start-up.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys

from evorank.evaluators.errors import EvorankError
from evorank.evolve.inspection.console import print_error
from evorank.evolve.inspection.format import (EXPLAIN, EXPORT_DESCRIPTION, ID_FORMS, RUN_COLLECTIONS, UNVERIFIED_HELP,
                                               VALIDATION_ROLE)

from .llm_server import add_llm_server_command

EPILOG_MAIN = """\
examples:
  evorank datasets                                   what collections and suites exist, what is offline
  evorank eval bm25 --suite quick                    score the BM25 seed on SciFact + NFCorpus
  evorank eval my_scorer.py --datasets local:cisi    score your own program on one collection
  evorank eval bm25 --suite dev --json               machine-readable output

environment:
  EVORANK_DATA       folder holding local BEIR-layout collections (addressed as local:<name>)
  EVORANK_CACHE      where indexes and collections' queries/judgements are cached (default: user cache dir)
  IR_DATASETS_HOME   ir_datasets' download cache
"""


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


def _add_cluster_args(p) -> None:
    p.add_argument("--cluster", metavar="tcp://HOST:PORT",
                   help="evaluate in the sandbox on the workers of this Dask scheduler (needs "
                   "pip install 'evorank[dask]'; see docs/cluster.md)")
    p.add_argument("--shard-queries", dest="shard_queries", type=_count, metavar="N",
                   help="split collections into evaluation tasks of at most N queries (default: one per collection)")


def _add_limit_args(p, run: bool) -> None:
    """--timeout and --memory-mb: the sandbox limits of one program on one collection."""
    dest = ("eval_timeout_s", "eval_memory_mb") if run else ("timeout_s", "memory_mb")
    p.add_argument("--timeout", dest=dest[0], type=float, metavar="SECONDS",
                   help="sandbox: wall-clock limit of one program on one collection (default 60)")
    p.add_argument("--memory-mb", dest=dest[1], type=_count, metavar="MB",
                   help="sandbox: memory a program may allocate beyond the shared index (default: 1 GB plus room "
                   "for six float64 arrays of the collection's postings, so it grows with the collection)")


def _add_significance_arg(p, what: str) -> None:
    p.add_argument("--significance", nargs="?", const=RUN_COLLECTIONS, metavar="SUITE",
                   help=f"test {what} against the run's BM25 seed per query (evaluated now, in the sandbox) on the "
                   "run's collections or on SUITE (a suite or collections, e.g. heldout): pooled Δ nDCG@10 with its "
                   "randomization test, and the collections significantly better/worse after Holm correction")


def _id_help(default: str | None = None) -> str:
    return f"program: {ID_FORMS}" + (f" (default {default})" if default else "")


def _lazy(module: str, name: str):
    """A command function that imports its module only when the command runs, so that `evorank --help`
    and each command load no more than they use."""
    def run(args) -> int:
        return getattr(importlib.import_module(module), name)(args)

    run.__qualname__ = run.__name__ = f"{module}.{name}"
    return run


def add_inspection_commands(sub) -> None:
    """Register status, top, show, diff, lineage, explain, report and export on the ``evorank`` subparsers."""
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("status", help="progress of a run: iterations, outcomes, best per island, tokens, cost, alive?",
                       description="Summarise a run (safe while it runs): proposals done of the total, elapsed time, "
                       "accepted/failed programs by reason, the best fitness per island, LLM tokens and cost, and "
                       "whether a process is writing to it now (its archive.lock is held).",
                       epilog="examples:\n  evorank status runs/20261122-101500\n  evorank status runs/x "
                       "--significance heldout   # is the best significantly better than BM25?\n", formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("--json", action="store_true", help="print as JSON")
    _add_significance_arg(p, "the best program")
    p.set_defaults(func=_lazy("evorank.evolve.inspection.terminal", "cmd_status"))

    p = sub.add_parser("top", help="the best programs of a run, with per-collection metrics and latency",
                       description="List a run's accepted programs (each seed once, no migration copies), best first.",
                       epilog="examples:\n  evorank top runs/x -n 20\n  evorank top runs/x --by latency\n"
                       "  evorank top runs/x --by ndcg@10 --metric ndcg@10\n  evorank top runs/x -n 5 --significance\n",
                       formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("-n", type=int, default=10, help="how many (default 10; 0 = all)")
    p.add_argument("--by", default="fitness",
                   help="sort key: fitness (default), latency (fastest first), or a metric such as ndcg@10, "
                   "recall@100 (macro mean over the run's collections)")
    p.add_argument("--metric", help="the one metric to show per collection (default nDCG@10/R@100)")
    p.add_argument("--island", type=int, help="only this island")
    p.add_argument("--json", action="store_true", help="print as JSON (all metrics)")
    _add_significance_arg(p, "each listed program")
    p.set_defaults(func=_lazy("evorank.evolve.inspection.terminal", "cmd_top"))

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
    p.set_defaults(func=_lazy("evorank.evolve.inspection.terminal", "cmd_show"))

    p = sub.add_parser("diff", help="unified diff of a program against its parent (or another program)",
                       description=f"Unified diff from the parent (or OTHER) to ID. IDs: {ID_FORMS}.",
                       epilog="examples:\n  evorank diff runs/x best\n  evorank diff runs/x best seed:bm25\n",
                       formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("id", help=_id_help())
    p.add_argument("other", nargs="?", help="compare against this program instead of the parent")
    p.add_argument("-U", "--context", type=int, default=3, help="lines of context (default 3)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_lazy("evorank.evolve.inspection.terminal", "cmd_diff"))

    p = sub.add_parser("lineage", help="ancestry of a program back to its seed, with the fitness change per step",
                       description=f"Follow first parents back to a seed. ID: {ID_FORMS}.",
                       epilog="example:\n  evorank lineage runs/x best\n", formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("id", nargs="?", default="best", help=_id_help("best"))
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_lazy("evorank.evolve.inspection.terminal", "cmd_lineage"))

    p = sub.add_parser("explain", formatter_class=raw, **EXPLAIN["parser"])
    for flags, settings in EXPLAIN["arguments"]:
        p.add_argument(*flags, **settings)
    _add_limit_args(p, run=False)
    p.set_defaults(func=_lazy("evorank.evolve.inspection.explain", "cmd_explain"))

    p = sub.add_parser("report", help="write a self-contained HTML report of a run (plots, grids, lineage, transfer)",
                       description="One HTML file with everything inline (no network): fitness over iterations, the "
                       "best program vs the seeds per collection and vs BM25 per query (significance, seen and held-out "
                       "collections, evaluated in the sandbox), each island's MAP-Elites grid, the best program's "
                       "lineage with diffs, what it adds over its seed, seen vs held-out metrics, failures, cost.",
                       epilog="examples:\n  evorank report runs/x -o report.html\n"
                       "  evorank report runs/x --heldout local:npl,local:adi\n  evorank report runs/x --no-transfer\n",
                       formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("-o", "--out", help="HTML file to write (default RUN/report.html)")
    p.add_argument("--heldout", default="heldout",
                   help="suite name or comma-separated collections for the transfer table (default: heldout)")
    p.add_argument("--no-transfer", dest="no_transfer", action="store_true",
                   help="evaluate nothing at report time: no held-out table, no significance test, no explain")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_lazy("evorank.evolve.inspection.report", "cmd_report"))

    p = sub.add_parser("export", help="write a program as a standalone scorer module (numpy, scipy, PyStemmer only)",
                       description=EXPORT_DESCRIPTION,
                       epilog="examples:\n  evorank export runs/x -o my_scorer.py\n  evorank export runs/x 42 -o s.py\n"
                       "  python -c \"from my_scorer import Retriever; "
                       "print(Retriever({'a': 'solar power', 'b': 'bread'}).search('solar'))\"\n",
                       formatter_class=raw)
    p.add_argument("run", help="run folder")
    p.add_argument("id", nargs="?", default="best", help=_id_help("best"))
    p.add_argument("-o", "--out", help="file to write (default scorer_<id>.py in the current folder)")
    p.add_argument("--unverified", action="store_true", help=UNVERIFIED_HELP)
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_lazy("evorank.evolve.inspection.export", "cmd_export"))


def add_dashboard_command(sub) -> None:
    p = sub.add_parser("dashboard", help="a local web page that follows runs live: progress, grids, lineage, code",
                       description="Serve a page on this machine that follows one or more runs while they run and "
                       "after (it reads their archives read-only and updates without a reload): progress and time "
                       "left, outcomes, train/validation/held-out fitness over iterations, each island's MAP-Elites "
                       "grid (click a cell to open its program), any program's lineage as a tree with its code, "
                       "diff, metrics and explanation, the top programs, and several runs side by side.",
                       epilog="examples:\n  evorank dashboard runs/x                    then open the URL it prints\n"
                       "  evorank dashboard runs/a runs/b --port 8765   two runs side by side\n"
                       "  evorank dashboard runs/x --port 0 --open      any free port, and open a browser\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s)")
    p.add_argument("--port", type=int, default=8765, help="port to serve on (default 8765; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: only this machine; another address lets anyone who "
                   "reaches it read the runs)")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often the page asks for news (default 2)")
    p.add_argument("--open", action="store_true", help="also open the page in the default browser")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    p.set_defaults(func=_lazy("evorank.evolve.dashboard.server", "cmd_dashboard"))


def build_parser() -> argparse.ArgumentParser:
    from evorank.evolve.config import BATCH_HELP, FITNESS_HELP, FITNESS_NAMES, REPAIR_STYLES, RunConfig  # light
    from evorank.evolve.llm.directions import shipped_directions  # light: one template file read

    parser = argparse.ArgumentParser(
        prog="evorank",
        description="Discover lexical ranking functions by evolving executable ranking programs.",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "eval",
        help="evaluate one ranking program on a suite or list of collections",
        description="Score a ranking program (a file, a seed name: bm25, ql_dirichlet, or RUN:ID) on test collections: "
        "nDCG@10, Recall@100, Recall@1000 and MAP@1000 per collection, their macro mean, the fitness; with --compare, "
        "the significance of its difference from another. It runs in the sandbox unless --in-process says it is yours.",
        epilog="examples:\n  evorank eval bm25 --suite quick\n"
        "  evorank eval examples/rm3.py --suite dev --compare            # significance vs BM25\n"
        "  evorank eval runs/x:best --suite heldout --compare bm25 --json\n"
        "  evorank eval runs/x:best --datasets local:cisi --runs-out trec/  # TREC run files, from the sandbox\n"
        "  evorank eval my_scorer.py --datasets local:cisi --in-process   # your own file, outside the sandbox\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("program", help="program file, a seed name (bm25, ql_dirichlet), a shipped example program "
                   "(examples/bm25f.py, proximity, variants, rm3, dfr; found from any folder), or a program in a "
                   "run: RUN:best, RUN:42, RUN:best@island:1")
    p.add_argument("--suite", help="named suite (see `evorank datasets`): demo, quick, dev, heldout, ...")
    p.add_argument("--datasets", help="comma-separated collection addresses: ir_datasets ids, local:<name>, folders")
    p.add_argument("--compare", metavar="PROGRAM", nargs="?", const="bm25",
                   help="also evaluate this program (a seed, a file or RUN:ID; bm25 if none is named) on the same "
                   "queries and test the difference of nDCG@10 and R@100 per collection and pooled: mean per-query Δ, "
                   "95%% bootstrap CI, paired randomization test (Holm over the collections), paired t-test, W/T/L "
                   "(default: bm25 for a run's program, none for a file; 'none': off)")
    p.add_argument("--fitness", default="rankevolve", choices=FITNESS_NAMES, help="default rankevolve; " + FITNESS_HELP)
    p.add_argument("--k", type=int, default=1000, help="documents kept per query (default 1000)")
    p.add_argument("--runs-out", metavar="DIR", help="also write one TREC run file per collection into DIR (from the "
                   "rankings the sandbox returned, or this process's with --in-process)")
    p.add_argument("--in-process", dest="in_process", action="store_true",
                   help="YOUR OWN CODE ONLY: run the file in this process, outside the sandbox (faster to debug, "
                   "tracebacks in full). Refused for a run's programs (RUN:ID, files in a run folder) and for files "
                   "`evorank export` wrote: those always run in the sandbox, as does everything by default")
    p.add_argument("--checked", action="store_true",
                   help="also put the program through the static checks that `run` applies before the jail (always "
                   "done for a run's programs)")
    p.add_argument("--sandbox", dest="checked", action="store_true", help=argparse.SUPPRESS)  # its former name
    p.add_argument("--json", action="store_true", help="print results as JSON")
    _add_cluster_args(p)
    _add_limit_args(p, run=False)
    p.set_defaults(func=_lazy("evorank.evolve.cli.evaluate", "cmd_eval"))

    p = sub.add_parser(
        "run",
        help="run (or resume) an evolution job: the main command",
        description="Evolve ranking programs. An LLM (any OpenAI-compatible endpoint) or the offline mutator proposes "
        "changes to the seeds' EVOLVE-BLOCKs; every candidate is evaluated in a sandbox on the suite's collections; "
        "the archive (a SQLite file in the run folder) keeps every program and the MAP-Elites elites. "
        "--iterations is the total for the whole run: --resume DIR continues to the "
        "saved total, --resume DIR --iterations N raises it to N. Ctrl-C or SIGTERM stops cleanly after the step "
        "under way (a second Ctrl-C stops at once); the run can be resumed, and the exit status says it did not "
        "finish: 130 after Ctrl-C, 143 after SIGTERM (0 when it reached its total, budget or --max-hours; 1 when "
        "it stopped on an error; 2 for a refused command).",
        epilog="examples:\n"
        "  evorank run                                              offline on whatever data is here (demo otherwise)\n"
        "  evorank run --suite dev --llm offline --iterations 300 --seed 0\n"
        "  OPENAI_API_KEY=... evorank run --suite quick --llm gpt-4o-mini,gpt-4o:0.2 --budget-usd 5\n"
        "  evorank run --llm local --base-url http://127.0.0.1:8089/v1 --suite quick   # a local llama.cpp server\n"
        "  evorank run --llm 'cmd:aider --yes-always --no-git --message-file {prompt_file} {file}'   # a coding agent\n"
        "  evorank run --llm 'gpt-4o-mini:0.7,cmd:aider --yes-always --no-git --message-file {prompt_file} {file}:0.3'   # a mix of both\n"
        "  evorank run --resume runs/20261122-101500                   continue to the saved total\n"
        "  evorank run --resume runs/20261122-101500 --iterations 600  raise the total to 600 and continue\n"
        "\n"
        "LLM members (--llm or --proposer, comma-separated, optional :WEIGHT after each; docs/proposers.md):\n"
        "  MODEL              a chat model of the OpenAI-compatible endpoint (--base-url, key from --api-key-env)\n"
        "  cmd:COMMAND        a program of yours (e.g. a coding agent) run through /bin/sh in a temporary folder:\n"
        "                     {file} = a copy of the parent program (program.py) to edit in place, {prompt_file} =\n"
        "                     the prompt, also on stdin; if the file is left unchanged, printed SEARCH/REPLACE or\n"
        "                     code blocks are used. It runs with YOUR rights and environment (not sandboxed); only\n"
        "                     the program it writes goes through the static checks and the sandbox. Commands with\n"
        "                     commas: define them in --config as [commands] NAME = \"...\" and write cmd:NAME.\n"
        "\n"
        "Before the run starts, each chat model gets one 1-token request and each command's program is looked\n"
        "up; if one cannot be used, one line says why and nothing is written (--no-preflight skips this).\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="RUN.TOML", help="settings file (any RunConfig field); flags override it")
    p.add_argument("--start", "--seeds", dest="seeds", metavar="PROGRAMS",
                   help="comma-separated starting programs: shipped seed names or program files, e.g. "
                   "bm25,examples/bm25f.py (default bm25,ql_dirichlet; the shipped examples/<name>.py are found "
                   "from any folder); BM25 is always measured as the latency reference")
    p.add_argument("--suite", help="collections to evolve on (default: dev if available, else demo)")
    p.add_argument("--datasets", help="extra comma-separated collection addresses")
    p.add_argument("--iterations", type=int, metavar="N",
                   help="total proposals for the whole run (default 100); with --resume, the run's new total")
    p.add_argument("--llm", "--proposer", dest="llm", metavar="MEMBERS",
                   help="'offline', or comma-separated members MODEL[:WEIGHT] and cmd:COMMAND[:WEIGHT] (see below; "
                   "default: gpt-4o-mini if OPENAI_* is set, else offline); --proposer is the same option")
    p.add_argument("--base-url", dest="base_url", help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", dest="api_key_env", metavar="VAR",
                   help="environment variable holding the API key (default OPENAI_API_KEY; local servers need none)")
    p.add_argument("--request-timeout", dest="request_timeout_s", type=float, metavar="SECONDS",
                   help="give up on one LLM request after this long (default 120; raise it for slow local models)")
    p.add_argument("--validation", dest="validation_fraction", type=float, metavar="FRACTION",
                   help="share of each collection's judged queries kept apart as validation queries (default 0.3; "
                   "0 = none): they " + VALIDATION_ROLE.format(best_of=RunConfig.best_of)
                   + ", and show the train/validation gap")
    p.add_argument("--prune-best", dest="prune_best", action=argparse.BooleanOptionalAction, default=None,
                   help="at the end of the run, take out each part of its best (a channel, a formula or a constant "
                   "changed from the seed) that does not make it significantly better on the validation queries, "
                   "one at a time; the pruned program is then the run's best (operator 'prune'; default: off)")
    p.add_argument("--fuse-best", dest="fuse_best", action=argparse.BooleanOptionalAction, default=None,
                   help="at the end of the run, fuse its best with the best of each other island (the sum of their "
                   "per-query z-scores, as one program, operator 'fusion'); the fusion is then the run's best if "
                   "its validation fitness is higher (default: off)")
    p.add_argument("--heldout", metavar="SUITE",
                   help="also measure each new best program on these collections (a suite such as heldout, or "
                   "comma-separated addresses) in the background; logged and reported, never used for selection")
    p.add_argument("--repair-rounds", dest="repair_rounds", type=_count, metavar="N",
                   help="when a proposal does not parse or apply, fails the static checks or fails when run, ask for a "
                   "fix up to N times in a row (see --repair-style; a cut-off reply is asked again as a short diff); "
                   "each fix is a proposal of its own, operator 'repair', parent the failed one (default 1; 0 = off)")
    p.add_argument("--repair-style", dest="repair_style", choices=REPAIR_STYLES,
                   help="how a chat model repairs a program that failed the static checks or raised when run: "
                   "'rewrite' asks for the same idea again, written afresh on the program the proposal started "
                   "from, with the failure and the failing line shown (small models mostly repeat code they are "
                   "asked to correct); 'fix' shows the failing statement marked and asks for it corrected (cheaper "
                   "requests, for strong models). Default rewrite")
    p.add_argument("--directions", metavar="all|none|NAME,...",
                   help="give each diff or full LLM proposal ONE way to improve its parent, with helper code that "
                   "works against the program contract: 'all' (default; one drawn per proposal from the run's seed), "
                   "'none' (the model picks from the system prompt's list), or some of: "
                   f"{', '.join(shipped_directions())} (evolve/llm/prompts/directions.txt; a directions.txt in "
                   "--prompts-dir replaces it). "
                   "Recorded as the 'direction' feature")
    p.add_argument("--max-llm-failures", dest="max_consecutive_llm_failures", type=int, metavar="N",
                   help="stop the run (resumable, non-zero exit) after N attempts in a row reach no model (no "
                   "connection, time-out, key refused, unknown model, command not found); such attempts are not "
                   "counted as proposals (default 5)")
    p.add_argument("--command-timeout", dest="command_timeout_s", type=float, metavar="SECONDS",
                   help="time limit of one run of a cmd: member; its process group is killed then (default 600)")
    p.add_argument("--preflight", action=argparse.BooleanOptionalAction, default=None,
                   help="check every model and command before the run starts (default: on)")
    p.add_argument("--workers", type=int, help="evaluation processes (default: all cores)")
    p.add_argument("--batch", type=_count, metavar="N", help=BATCH_HELP)
    p.add_argument("--in-flight", dest="in_flight", type=int, help="concurrent LLM requests (default 4)")
    p.add_argument("--islands", type=int, help="number of islands (default 2)")
    p.add_argument("--fitness", choices=FITNESS_NAMES, help="default consistent; " + FITNESS_HELP)
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="completion token cap per LLM request (default 2048)")
    p.add_argument("--inspirations", type=int, help="other archive programs shown in each prompt (default 3)")
    p.add_argument("--prompts-dir", dest="prompts_dir", help="folder with prompt templates overriding the shipped ones")
    p.add_argument("--out", help="run folder (default runs/<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR up to its saved total (add --iterations N to raise it to N)")
    p.add_argument("--budget-usd", dest="budget_usd", type=float, help="stop cleanly once LLM spend reaches this")
    p.add_argument("--max-hours", dest="max_hours", type=float, help="stop cleanly after this many hours")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log every iteration to stderr too")
    _add_cluster_args(p)
    _add_limit_args(p, run=True)
    p.set_defaults(func=_lazy("evorank.evolve.cli.run", "cmd_run"))

    add_inspection_commands(sub)
    add_dashboard_command(sub)
    add_llm_server_command(sub)

    p = sub.add_parser("datasets", help="list suites and which of their collections are available offline",
                       description="List the named suites, their collections, and whether each is available "
                       "on this machine right now (with document and judged-query counts).")
    p.add_argument("--suite", help="show only this suite")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("evorank.evolve.cli.evaluate", "cmd_datasets"))
    return parser


def quit_at_next_interrupt(code: int = 130) -> None:
    """From now on Ctrl-C ends the process at once, with ``code``, after flushing its output: for a process whose
    command is done (a run that stopped and saved everything) but that the interpreter keeps waiting, for model
    requests still in flight or at its exit, where a KeyboardInterrupt is only printed or kills it by the signal."""
    def handler(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    """The ``evorank`` command; ``argv`` None: this process's own arguments, and the process ends with the command
    (a Ctrl-C after it exits with 130 at once)."""
    code = _main(argv)
    if argv is None:
        quit_at_next_interrupt()
    return code


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except EvorankError as e:
        print_error(str(e))
        return 2
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except BrokenPipeError:  # `evorank top RUN | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        where = e.filename or "the output location"
        print_error(f"cannot write {where}: {e.strerror}. Choose a location you can write to (`run --out DIR`, "
             "`report -o FILE`, `export -o FILE`) or make this one writable")
        return 2


if __name__ == "__main__":
    sys.exit(main())
