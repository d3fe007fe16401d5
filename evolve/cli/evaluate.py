"""``evorank eval`` and ``evorank datasets``: score a ranking program on collections, and list which
collections of each suite are on this machine. The CLI (``evolve.cli.main``) registers the parsers."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from evorank.evaluators.errors import EvorankError
from evorank.evolve.inspection.console import console as make_console
from evorank.evolve.inspection.format import METRIC_LABELS


# -- evorank datasets ----------------------------------------------------------------------------

def cmd_datasets(args) -> int:
    from evorank.evaluators.data.suites import suites

    chosen = suites()
    if args.suite:
        from evorank.evaluators.data.suites import get_suite

        chosen = {args.suite: get_suite(args.suite)}
    from evorank.evaluators.availability import collection_availability

    out = {}
    console = make_console()
    for name, suite in chosen.items():
        found = [collection_availability(addr) for addr in suite.collections]
        out[name] = {
            "description": suite.description,
            "collections": [
                {"address": c.address, "status": c.status, "reason": c.reason, "docs": c.docs,
                 "judged_queries": c.judged_queries, "index_bytes": c.index_bytes,
                 "estimated_eval_seconds": c.eval_seconds, "estimated_query_ms": c.query_ms} for c in found
            ],
        }
        if args.json:
            continue
        from rich.table import Table

        offline = sum(1 for c in found if c.offline)
        table = Table(title=f"[bold]{name}[/] — {suite.description} ({offline}/{len(found)} offline)", title_justify="left")
        table.add_column("collection")
        table.add_column("status")
        table.add_column("docs", justify="right")
        table.add_column("judged queries", justify="right")
        table.add_column("index", justify="right")
        table.add_column("est. eval", justify="right")
        for c in found:
            style = "green" if c.offline else "yellow"
            table.add_row(c.address, f"[{style}]{c.label}[/]", f"{c.docs:,}" if c.docs else "-",
                          f"{c.judged_queries:,}" if c.judged_queries else "-", _size(c.index_bytes),
                          f"{_seconds(c.eval_seconds)} ({c.query_ms:.1f} ms/q)" if c.eval_seconds is not None else "-")
        console.print(table)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        from evorank.evaluators.data.collections import data_root

        console.print(
            f"data root (local:<name>): {data_root()}   ir_datasets home: "
            f"{os.environ.get('IR_DATASETS_HOME', '~/.ir_datasets')}"
        )
        console.print("index: size of the cached index; est. eval: one full evaluation of the BM25 seed, estimated "
                      "from the index and the judged queries (indexed collections only)")
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _seconds(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


# -- evorank eval ----------------------------------------------------------------------------------

def cmd_eval(args) -> int:
    from evorank.evaluators.evaluate import evaluate_on, latency_ratio, load_topics, summarize, write_trec_run
    from evorank.evaluators.index.index import safe_name
    from evorank.evaluators.metrics import fitness_spec
    from evorank.evaluators.program.source import compile_program, load_program, program_path
    from evorank.evaluators.data.suites import resolve_collections
    from evorank.evolve.inspection.queries import resolve_program_arg

    addresses = resolve_collections(args.suite, args.datasets)
    from_run = resolve_program_arg(args.program)  # RUN:ID (runs/x:best): LLM-written code, or None
    if from_run is not None:
        label, source = from_run
        code_name = label
    else:  # read, not run: with --sandbox the file's code must not execute here
        path = program_path(args.program)
        label, code_name, source = str(args.program), str(path), path.read_text(encoding="utf-8")
    sandbox = args.sandbox if args.sandbox is not None else (from_run is not None or bool(args.cluster))
    if args.shard_queries and not args.cluster:
        raise EvorankError("--shard-queries splits the sandboxed evaluation tasks of --cluster; use it with --cluster")
    if args.cluster and not sandbox:
        raise EvorankError("--cluster always evaluates in the sandbox on the workers; drop --no-sandbox")
    if args.runs_out and sandbox:
        raise EvorankError("--runs-out needs the rankings in this process, and this evaluation runs in the sandbox "
                           "(a program from a run archive, --sandbox or --cluster); if you have read the code and "
                           "trust it, add --no-sandbox (or `evorank export` it and evaluate the file)")
    compare = args.compare if args.compare is not None else ("bm25" if from_run is not None else "none")
    compare = None if compare.lower() == "none" else compare
    compared = load_program(compare) if compare else None  # a seed name or your own file: runs here, trusted
    log = (lambda m: print(m, file=sys.stderr)) if not args.json else None
    progress = sys.stderr.isatty() and not args.json
    topics = [load_topics(a, progress=progress, log=log) for a in addresses]
    if sandbox:
        suite = _eval_sandboxed(args, addresses, label, source, topics, checked=from_run is not None or bool(args.sandbox))
    else:
        program = compile_program(source, name=code_name)
        spec = fitness_spec(args.fitness)
        bm25 = load_program("bm25") if (spec.latency_exponent or spec.robust) else None
        results, bm25_results = [], []
        for address, t in zip(addresses, topics):
            res, ranking = evaluate_on(program, t, k=args.k)
            results.append(res)
            if bm25 is not None:
                bm25_results.append(evaluate_on(bm25, t, k=args.k)[0])
            if args.runs_out and ranking is not None:
                write_trec_run(Path(args.runs_out) / f"{safe_name(address)}.run", ranking, t,
                               tag=Path(args.program).stem)
        ratio = latency_ratio(results, bm25_results) if spec.latency_exponent else None
        suite = summarize(str(args.program), results, spec, ratio, reference=bm25_results or None)
    reference = None
    if compared is not None:
        reference = summarize(compare, [evaluate_on(compared, t, k=args.k)[0] for t in topics], "rankevolve")
    if args.json:
        out = suite.to_json()
        if reference is not None:
            out["compare"] = comparison_json(suite, reference)
        print(json.dumps(out, indent=2))
    else:
        print_suite(suite)
        if reference is not None:
            print_comparison(suite, reference)
    return 0 if suite.ok else 1


def _eval_sandboxed(args, addresses, name: str, source: str, topics, checked: bool):
    """``eval`` of code that is not yours (a program from a run archive, ``--sandbox``) or on ``--cluster``: the
    path ``run`` uses, one sandboxed task per collection on local workers or on the cluster. ``checked`` puts
    the code through the static checks first, as in ``run``."""
    from evorank.evaluators.parallel import Limits, evaluate_program_sandboxed

    return evaluate_program_sandboxed(source, addresses, name=name, fitness=args.fitness, k=args.k,
                                      trusted=not checked, topics=topics, cluster=args.cluster,
                                      shard_queries=args.shard_queries or None,
                                      limits=Limits(timeout_s=args.timeout_s or Limits.timeout_s,
                                                    memory_mb=args.memory_mb or None))


COMPARED = ("ndcg@10", "recall@100")


def comparison_json(suite, reference) -> dict:
    """Per-collection differences from a reference program (same queries, same collection-size rule)."""
    from evorank.evaluators.metrics import collection_fitness, fitness_spec

    spec = fitness_spec("rankevolve")
    refs = {c.name: c for c in reference.collections}
    rows = {}
    for c in suite.collections:
        r = refs.get(c.name)
        if not (c.ok and r is not None and r.ok):
            continue
        ours, theirs = collection_fitness(c.metrics, spec, c.n_docs), collection_fitness(r.metrics, spec, r.n_docs)
        rows[c.name] = {"fitness": ours, "reference_fitness": theirs, "ratio": ours / theirs if theirs else None,
                        **{f"{m}_delta": c.metrics[m] - r.metrics[m] for m in COMPARED}}
    return {"program": reference.program, "reference_fitness": reference.fitness, "collections": rows}


def print_comparison(suite, reference) -> None:
    from rich.table import Table

    data = comparison_json(suite, reference)
    console = make_console()
    table = Table(title=f"vs [bold]{reference.program}[/] on the same queries (rankevolve fitness per collection)",
                  title_justify="left")
    for col in ("collection", "fitness", reference.program, "ratio",
                *(f"Δ {METRIC_LABELS.get(m, m)}" for m in COMPARED)):
        table.add_column(col, justify="left" if col == "collection" else "right")
    for name, row in data["collections"].items():
        ratio = row["ratio"]
        style = "green" if ratio and ratio > 1 else ("red" if ratio and ratio < 1 else "")
        cells = [f"{row['fitness']:.4f}", f"{row['reference_fitness']:.4f}",
                 f"[{style}]{ratio:.3f}x[/]" if ratio and style else (f"{ratio:.3f}x" if ratio else "-"),
                 *(f"{row[f'{m}_delta']:+.4f}" for m in COMPARED)]
        table.add_row(name, *cells)
    console.print(table)


def print_suite(suite) -> None:
    from rich.markup import escape
    from rich.table import Table

    from evorank.evaluators.metrics import METRICS

    console = make_console()
    table = Table(title=f"[bold]{suite.program}[/]", title_justify="left")
    for col, just in (("collection", "left"), ("docs", "right"), ("queries", "right"),
                      *((METRIC_LABELS.get(m, m), "right") for m in METRICS), ("ms/query p50", "right"), ("p95", "right")):
        table.add_column(col, justify=just)
    for c in suite.collections:
        if c.ok:
            table.add_row(c.name, f"{c.n_docs:,}", f"{c.n_queries:,}", *(f"{c.metrics[m]:.4f}" for m in METRICS),
                          f"{c.latency_median_ms:.3f}", f"{c.latency_p95_ms:.3f}")
        else:
            table.add_row(c.name, f"{c.n_docs:,}", f"{c.n_queries:,}", f"[red]FAILED: {c.error_reason}[/]",
                          *[""] * (len(METRICS) + 1))
    if len(suite.collections) > 1 and suite.ok:
        m = suite.means()
        table.add_row("[bold]macro mean[/]", "", "", *(f"{m[k]:.4f}" for k in METRICS), "", "", end_section=True)
    console.print(table)
    for c in suite.collections:
        for w in c.warnings:
            console.print(f"[yellow]warning[/] {c.name}: {w}")
        if not c.ok:
            console.print(f"[red]error[/] {c.name}: {escape(c.error)}")  # holds the program's own (fenced) text
    from evorank.evaluators.metrics import MIN_DOCS_PER_CUTOFF

    small = [c.name for c in suite.collections if c.n_docs < MIN_DOCS_PER_CUTOFF * 100]
    if small:
        console.print(f"note: R@100 does not count toward fitness on collections under {MIN_DOCS_PER_CUTOFF * 100:,} "
                      f"documents ({', '.join(small)}): retrieving everything would earn it there; nDCG@10 does")
    extra = f"  (latency {suite.latency_ratio:.2f}x BM25)" if suite.latency_ratio else ""
    console.print(f"fitness ({suite.fitness_name}): [bold]{suite.fitness:.4f}[/]{extra}")
