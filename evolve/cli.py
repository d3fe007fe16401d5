"""The ``evorank`` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from evaluators.errors import EvorankError

EPILOG_MAIN = """\
examples:
  evorank datasets                                   what collections and suites exist, what is offline
  evorank eval bm25 --suite quick                    score the BM25 seed on SciFact + NFCorpus
  evorank eval my_scorer.py --datasets local:cisi    score your own program on one collection
  evorank eval bm25 --suite dev --json               machine-readable output

environment:
  EVORANK_DATA       folder holding local BEIR-layout collections (addressed as local:<name>)
  EVORANK_CACHE      where indexes and numba's compiled metrics are cached (default: user cache dir)
  IR_DATASETS_HOME   ir_datasets' download cache
"""


def _console():
    from rich.console import Console

    # Piped output gets a wide fixed width: tables are for reading in logs too, not wrapping at 80.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160))
    return Console(stderr=False, highlight=False, width=width)


def _err(msg: str) -> None:
    print(f"evorank: error: {msg}", file=sys.stderr)


# -- evorank datasets ----------------------------------------------------------------------------

def _availability(address: str) -> tuple[str, int | None, int | None]:
    """(status, docs, judged queries) without downloading anything."""
    from evaluators.collections import load_collection, resolve
    from evaluators.index import cache_root, index_key, _safe

    kind, where = resolve(address)
    if kind == "ir_datasets":
        import ir_datasets

        try:
            ds = ir_datasets.load(address)
        except KeyError:
            return "unknown id", None, None
        home = Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))
        parts = address.split("/")
        local_dir = home.joinpath(*parts[:2]) if len(parts) > 1 else home / parts[0]
        if not (local_dir.is_dir() and any(p.is_file() and p.stat().st_size > 0 for p in local_dir.rglob("*"))):
            try:  # counts from ir_datasets' bundled metadata: no download
                n_docs = ds.docs_metadata().get("count")
            except Exception:
                n_docs = None
            return "needs download", n_docs, None
    elif kind == "local" and not (Path(where) / "corpus.jsonl").is_file():
        return "missing", None, None
    try:
        coll = load_collection(address)
    except EvorankError as e:
        return f"error: {str(e)[:60]}", None, None
    n_docs = coll.n_docs_hint
    idx = cache_root() / "indexes" / f"{_safe(coll.name)}-{index_key(coll.fingerprint)}" / "manifest.json"
    if idx.exists():
        n_docs = json.loads(idx.read_text())["n_docs"]
        status = "indexed"
    else:
        status = "available"
    if n_docs is None and kind != "ir_datasets":
        with open(Path(where) / "corpus.jsonl", "rb") if kind == "local" else open(os.devnull, "rb") as f:
            n_docs = sum(1 for line in f if line.strip()) or None
    return status, n_docs, len(coll.queries)


def cmd_datasets(args) -> int:
    from evaluators.suites import suites

    chosen = suites()
    if args.suite:
        from evaluators.suites import get_suite

        chosen = {args.suite: get_suite(args.suite)}
    out = {}
    console = _console()
    for name, suite in chosen.items():
        rows = [(addr, *_availability(addr)) for addr in suite.collections]
        out[name] = {
            "description": suite.description,
            "collections": [
                {"address": a, "status": s, "docs": d, "judged_queries": q} for a, s, d, q in rows
            ],
        }
        if args.json:
            continue
        from rich.table import Table

        offline = sum(1 for r in rows if r[1] in ("available", "indexed"))
        table = Table(title=f"[bold]{name}[/] — {suite.description} ({offline}/{len(rows)} offline)", title_justify="left")
        table.add_column("collection")
        table.add_column("status")
        table.add_column("docs", justify="right")
        table.add_column("judged queries", justify="right")
        for addr, status, docs, nq in rows:
            style = "green" if status in ("available", "indexed") else "yellow"
            table.add_row(addr, f"[{style}]{status}[/]", f"{docs:,}" if docs else "-", f"{nq:,}" if nq else "-")
        console.print(table)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        from evaluators.collections import data_root

        console.print(
            f"data root (local:<name>): {data_root()}   ir_datasets home: "
            f"{os.environ.get('IR_DATASETS_HOME', '~/.ir_datasets')}"
        )
    return 0


# -- evorank eval ----------------------------------------------------------------------------------

def cmd_eval(args) -> int:
    from evaluators.evaluate import evaluate_on, latency_ratio, load_topics, summarize, write_trec_run
    from evaluators.index import _safe
    from evaluators.program import load_program
    from evaluators.suites import resolve_collections

    addresses = resolve_collections(args.suite, args.datasets)
    program = load_program(args.program)
    reference = load_program("bm25") if args.fitness == "latency-aware" else None
    log = (lambda m: print(m, file=sys.stderr)) if not args.json else None
    results, ref_results = [], []
    progress = sys.stderr.isatty() and not args.json
    for address in addresses:
        topics = load_topics(address, progress=progress, log=log)
        res, ranking = evaluate_on(program, topics, k=args.k)
        results.append(res)
        if reference is not None:
            ref_results.append(evaluate_on(reference, topics, k=args.k)[0])
        if args.runs_out and ranking is not None:
            write_trec_run(Path(args.runs_out) / f"{_safe(address)}.run", ranking, topics, tag=Path(args.program).stem)
    ratio = latency_ratio(results, ref_results) if reference is not None else None
    suite = summarize(str(args.program), results, args.fitness, ratio)
    if args.json:
        print(json.dumps(suite.to_json(), indent=2))
    else:
        print_suite(suite)
    return 0 if suite.ok else 1


def print_suite(suite) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"[bold]{suite.program}[/]", title_justify="left")
    for col, just in (("collection", "left"), ("docs", "right"), ("queries", "right"), ("nDCG@10", "right"),
                      ("R@100", "right"), ("R@1000", "right"), ("MAP@1000", "right"), ("ms/query p50", "right"),
                      ("p95", "right")):
        table.add_column(col, justify=just)
    for c in suite.collections:
        if c.ok:
            m = c.metrics
            table.add_row(c.name, f"{c.n_docs:,}", f"{c.n_queries:,}", f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}",
                          f"{m['recall@1000']:.4f}", f"{m['map@1000']:.4f}", f"{c.latency_median_ms:.3f}",
                          f"{c.latency_p95_ms:.3f}")
        else:
            table.add_row(c.name, f"{c.n_docs:,}", f"{c.n_queries:,}", f"[red]FAILED: {c.error_reason}[/]", "", "", "", "", "")
    if len(suite.collections) > 1 and suite.ok:
        m = suite.means()
        table.add_row("[bold]macro mean[/]", "", "", f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}",
                      f"{m['recall@1000']:.4f}", f"{m['map@1000']:.4f}", "", "", end_section=True)
    console.print(table)
    for c in suite.collections:
        for w in c.warnings:
            console.print(f"[yellow]warning[/] {c.name}: {w}")
        if not c.ok:
            console.print(f"[red]error[/] {c.name}: {c.error}")
    extra = f"  (latency {suite.latency_ratio:.2f}x BM25)" if suite.latency_ratio else ""
    console.print(f"fitness ({suite.fitness_name}): [bold]{suite.fitness:.4f}[/]{extra}")


# -- entry point -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
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
        description="Score a ranking program (a file, or a seed name: bm25, ql_dirichlet) on test collections. "
        "Prints nDCG@10, Recall@100, Recall@1000 and MAP@1000 per collection, their macro mean, and the fitness.",
        epilog="examples:\n  evorank eval bm25 --suite quick\n  evorank eval seeds/ql_dirichlet.py --datasets "
        "beir/scifact/test,local:cisi --runs-out runs/\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("program", help="program file, or a seed name (bm25, ql_dirichlet)")
    p.add_argument("--suite", help="named suite (see `evorank datasets`): demo, quick, dev, heldout, ...")
    p.add_argument("--datasets", help="comma-separated collection addresses: ir_datasets ids, local:<name>, folders")
    p.add_argument("--fitness", default="rankevolve", choices=["rankevolve", "latency-aware"],
                   help="rankevolve = 0.8 x mean R@100 + 0.2 x mean nDCG@10; latency-aware also discounts programs "
                   "slower than BM25 (measured in the same run)")
    p.add_argument("--k", type=int, default=1000, help="documents kept per query (default 1000)")
    p.add_argument("--runs-out", metavar="DIR", help="also write one TREC run file per collection into DIR")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("datasets", help="list suites and which of their collections are available offline",
                       description="List the named suites, their collections, and whether each is available "
                       "on this machine right now (with document and judged-query counts).")
    p.add_argument("--suite", help="show only this suite")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except EvorankError as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
