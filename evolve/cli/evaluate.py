"""``evorank eval`` and ``evorank datasets``: score a ranking program on collections (``evorank.evaluate``, printed
here), and list which collections of each suite are on this machine. The CLI (``evolve.cli.main``) registers the
parsers."""
from __future__ import annotations

import json
import os
import sys

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
        console.print("addresses: ID@FIELD takes the queries' text from another field of an ir_datasets id "
                      "(bright/biology@gpt4_reason: GPT-4's reasoning; the other BRIGHT fields: reasoning, gold_answer, "
                      "gemini_1_0_reason, claude_3_opus_reason, grit_reason, llama3_70b_reason); bright/<set>-long: "
                      "BRIGHT's long documents")
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
    """``evorank eval``: prints what ``evorank.evaluate`` returns."""
    forking = not (args.in_process or args.cluster)  # sandbox workers forked from this process
    if forking:
        from evorank.evaluators.workers import one_thread_per_library

        one_thread_per_library()  # before numpy loads, as in loky workers
    from evorank.evolve.api.evaluation import eval_program, evaluate

    program = eval_program(args.program)
    compare = args.compare if args.compare is not None else ("bm25" if program.run_output else "none")
    result = evaluate(program, suite=args.suite, datasets=args.datasets, sandbox=not args.in_process,
                      checked=bool(args.checked), compare=None if compare.lower() == "none" else compare,
                      fitness=args.fitness, k=args.k, timeout_s=args.timeout_s, memory_mb=args.memory_mb,
                      cluster=args.cluster, shard_queries=args.shard_queries, runs_out=args.runs_out,
                      log=(lambda m: print(m, file=sys.stderr)) if not args.json else None,
                      progress=sys.stderr.isatty() and not args.json, fork_workers=forking)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_suite(result.suite)
        if result.reference is not None:
            print_comparison(result.suite, result.reference)
            print_significance(result.significance)
    return 0 if result.ok else 1


def print_comparison(suite, reference) -> None:
    from rich.markup import escape
    from rich.table import Table

    from evorank.evolve.api.evaluation import comparison_json

    from evorank.evaluators.significance import COMPARED_METRICS

    data = comparison_json(suite, reference)
    console = make_console()
    name = escape(reference.program)
    table = Table(title=f"vs [bold]{name}[/] on the same queries (rankevolve fitness per collection)",
                  title_justify="left")
    for col in ("collection", "fitness", name, "ratio", *(f"Δ {METRIC_LABELS.get(m, m)}" for m in COMPARED_METRICS)):
        table.add_column(col, justify="left" if col == "collection" else "right")
    for coll, row in data["collections"].items():
        ratio = row["ratio"]
        style = "green" if ratio and ratio > 1 else ("red" if ratio and ratio < 1 else "")
        cells = [f"{row['fitness']:.4f}", f"{row['reference_fitness']:.4f}",
                 f"[{style}]{ratio:.3f}x[/]" if ratio and style else (f"{ratio:.3f}x" if ratio else "-"),
                 *(f"{row[f'{m}_delta']:+.4f}" for m in COMPARED_METRICS)]
        table.add_row(coll, *cells)
    console.print(table)


def print_significance(comparison) -> None:
    """One table per metric: per collection and pooled, the mean per-query difference with its confidence interval,
    the randomization test (raw and Holm-corrected over the collections), the t-test and wins/ties/losses."""
    from rich.markup import escape
    from rich.table import Table

    from evorank.evaluators.significance import ALPHA, CONFIDENCE, N_RESAMPLES

    console = make_console()
    n_coll = len(comparison.collections)
    base = escape(comparison.baseline)
    for m in comparison.metrics:
        table = Table(title=f"{METRIC_LABELS.get(m, m)}: [bold]{escape(comparison.program)}[/] vs [bold]{base}[/], "
                      "paired over the same queries", title_justify="left")
        for col in ("collection", "queries", base, "program", "Δ mean", f"{CONFIDENCE:.0%} CI", "p rand", "p Holm",
                    "p t-test", "W/T/L", ""):
            table.add_column(col, justify="left" if col in ("collection", "") else "right")
        rows = [(escape(c), per[m]) for c, per in comparison.collections.items() if m in per]
        if m in comparison.pooled and len(rows) > 1:
            rows.append(("[bold]all queries (pooled)[/]", comparison.pooled[m]))
        for i, (name, t) in enumerate(rows):
            verdict = t.verdict
            style = {"better": "green", "worse": "red"}.get(verdict, "")
            mark = f"[{style}]{'▲' if verdict == 'better' else '▼'} {verdict}[/]" if style else ""
            table.add_row(name, f"{t.n:,}", f"{t.baseline_mean:.4f}", f"{t.mean:.4f}",
                          f"[{style}]{t.delta:+.4f}[/]" if style else f"{t.delta:+.4f}",
                          f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]", _p(t.p_randomization), _p(t.p_holm), _p(t.p_ttest),
                          f"{t.wins}/{t.ties}/{t.losses}", mark, end_section=i == len(rows) - 2 and len(rows) > 2)
        console.print(table)
    console.print(f"Δ mean: per-query difference, program - {base}, with its {CONFIDENCE:.0%} paired bootstrap interval "
                  f"(BCa); p rand: two-sided paired randomization test ({N_RESAMPLES:,} sign flips, every flip below 14 "
                  f"queries); p Holm: that p corrected over the {n_coll} collection{'s' * (n_coll != 1)}; p t-test: "
                  f"paired t-test; W/T/L: queries won, tied, lost; ▲/▼: significantly better/worse at p < {ALPHA} "
                  "(Holm-corrected per collection; the pooled row is one test over all their queries)")


def _p(p: float | None) -> str:
    return "-" if p is None else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


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
