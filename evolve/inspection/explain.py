"""``evorank explain PROGRAM``: what a program adds over its seed, measured.

The program's parts (``evaluators.program.parts``: terms added to the score, changed formulas, changed constants) are
each taken out (a formula or constant restored to the seed's), and the program, its seed and every ablated
program are evaluated on the same queries: a part's contribution on a collection is the program's metric
minus the metric without that part (positive: the part helps there). For a program of a run, each step of
its lineage is measured too: the step's change of each metric, from its parent to it.

Everything is evaluated as ``evorank run`` evaluates candidates: the static checks, then the sandbox, on
parallel workers (``evaluators.parallel.Evaluator``), with metrics computed in this process from the
rebuilt rankings. The program, its ablations and its ancestors are run archive code or your file, and are
treated alike. Each part's contribution, and the program's gain over its seed, come with paired tests on the
same queries (``evaluators.significance``: randomization test, Holm-corrected over the collections, t-test,
bootstrap interval; per collection and pooled); the per-query values stay in the data (``per_query``).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from evorank.evaluators.errors import EvorankError
from evorank.evaluators.program.parts import parts

#: the metrics explain reports per collection (the two that make up the default fitness)
EXPLAINED = ("ndcg@10", "recall@100")


@dataclass(frozen=True)
class Subject:
    """What to explain: the program, its seed, and (for a program of a run) its lineage, oldest first."""

    label: str
    source: str
    seed_label: str
    seed_source: str
    lineage: tuple = ()  # ProgramRecords from the seed to the program (empty for a file)


def subject_of(text: str, base: str | None = None) -> tuple[Subject, str | None]:
    """The program ``text`` names (a file, a shipped seed or example, ``RUN:best``, ``RUN:ID``), its seed, and
    the run's suite for a program of a run (None otherwise). ``base`` names the seed to compare with (default:
    the lineage's seed for a program of a run, else the shipped seed closest to the program)."""
    from evorank.evaluators.program.source import program_path
    from .queries import lineage, open_run, resolve_id, split_run_address

    found = split_run_address(str(text))
    base_source = program_path(base).read_text(encoding="utf-8") if base else None
    if found is None:
        source = program_path(text).read_text(encoding="utf-8")
        if base_source is not None:
            return Subject(str(text), source, base, base_source), None
        name, seed_source = closest_seed(source)
        return Subject(str(text), source, name, seed_source), None
    run_dir, ident = found
    with open_run(run_dir) as store:
        rec = resolve_id(store, ident)
        chain = tuple(lineage(store, rec))
        cfg = store.config()
    suite = cfg.get("suite") or ",".join(cfg.get("datasets") or []) or None
    label = f"{run_dir}:{ident} (#{rec.id})"
    if base_source is not None:
        return Subject(label, rec.code, base, base_source, chain), suite
    root = chain[0]
    if root.operator != "seed":
        raise EvorankError(f"the lineage of {label} does not reach a seed (#{root.id} is a {root.operator}); "
                           "name one with --base")
    return Subject(label, rec.code, f"seed {root.features.get('seed_name', root.id)}", root.code, chain), suite


def closest_seed(source: str) -> tuple[str, str]:
    """(name, source) of the shipped seed the program differs least from (fewest parts)."""
    from evorank.evaluators.program.source import program_path

    best = None
    for name in ("bm25", "ql_dirichlet"):
        seed = program_path(name).read_text(encoding="utf-8")
        try:
            n = len(parts(source, seed))
        except (SyntaxError, ValueError) as e:
            raise EvorankError(f"cannot read the program's EVOLVE-BLOCK: {e}") from None
        if best is None or n < best[0]:
            best = (n, name, seed)
    return best[1], best[2]


def explain(subject: Subject, addresses: list[str], *, lineage_steps: bool = True, n_workers: int | None = None,
            limits=None, log=None) -> dict:
    """Evaluate the program, its seed, each ablation and (``lineage_steps``) each ancestor on ``addresses``;
    the data ``evorank explain`` prints (see ``explain_json``)."""
    from evorank.evaluators.metrics import collection_fitness, fitness_spec
    from evorank.evaluators.parallel import Evaluator, Limits

    try:
        found = parts(subject.source, subject.seed_source)
    except (SyntaxError, ValueError) as e:
        raise EvorankError(f"cannot compare {subject.label} with {subject.seed_label}: {e}") from None
    jobs: dict[str, str] = {"program": subject.source, "seed": subject.seed_source}
    for p in found:
        jobs[f"part:{p.name}"] = p.ablated
    steps = list(subject.lineage) if lineage_steps else []
    for rec in steps:
        jobs.setdefault(f"#{rec.id}", rec.code)
    t0 = time.monotonic()
    if log:
        log(f"evaluating {len(jobs)} programs (the program, its seed, {len(found)} without one part each"
            + (f", {len(steps)} lineage steps" if steps else "") + f") on {len(addresses)} collections, sandboxed")
    workers = max(1, min(n_workers or 2, len(jobs) * len(addresses)))
    spec = fitness_spec("rankevolve")
    with Evaluator(addresses, n_workers=workers, limits=limits or Limits(), cascade=None) as ev:
        # each distinct program once; the static checks compare its head and tail with the code it came from
        origin = {"seed": subject.seed_source, **{x: jobs[x] for x in jobs if x.startswith("#")}}
        first = {}
        for label, src in jobs.items():
            first.setdefault(src, label)
        unique = list(first.values())
        done = dict(zip(unique, ev.evaluate([jobs[x] for x in unique], [origin.get(x, subject.source) for x in unique],
                                            None, unique)))
        results = {label: done[first[src]] for label, src in jobs.items()}
        sizes = ev.collection_sizes()
    collections = list(addresses)

    def measured(label: str) -> dict:
        res = results[label]
        if not res.ok or res.suite is None:
            return {"failure": res.failure_reason, "metrics": {}, "fitness": {}, "per_query": {}}
        cols = {c.name: c for c in res.suite.collections}
        return {"failure": None,
                "metrics": {c: {m: cols[c].metrics[m] for m in EXPLAINED} for c in collections},
                "fitness": {c: collection_fitness(cols[c].metrics, spec, sizes.get(c)) for c in collections},
                "per_query": {c: {m: cols[c].per_query[m].tolist() for m in EXPLAINED} for c in collections}}

    program, seed = measured("program"), measured("seed")
    if program["failure"]:
        raise EvorankError(f"{subject.label} failed to evaluate ({program['failure']}); `evorank eval` it for "
                           "the details")
    out = {"program": subject.label, "seed": subject.seed_label, "collections": collections,
           "metrics": list(EXPLAINED), "full": program, "seed_result": seed,
           "gain_over_seed": _difference(program, seed, collections),
           "tests_over_seed": _tests(program, seed, subject.label, subject.seed_label),
           "parts": [], "lineage": []}
    for p in found:
        m = measured(f"part:{p.name}")
        out["parts"].append({"name": p.name, "kind": p.kind, "detail": p.detail, "failure": m["failure"],
                             "without": m, "contribution": _difference(program, m, collections),
                             "tests": _tests(program, m, "the program", f"without {p.name}")})
    previous = None
    for rec in steps:
        m = measured(f"#{rec.id}")
        out["lineage"].append({"id": rec.id, "operator": rec.operator, "iteration": rec.iteration,
                               "failure": m["failure"], "result": m,
                               "change": _difference(m, previous, collections) if previous else None})
        previous = m if not m["failure"] else previous
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    return out


def _tests(a: dict, b: dict, name_a: str, name_b: str) -> dict | None:
    """Paired significance of a against b on the same queries, per collection (Holm over the collections) and
    pooled (``evaluators.significance``); None when either failed."""
    if a["failure"] or b["failure"]:
        return None
    from evorank.evaluators.significance import compare

    return compare(a["per_query"], b["per_query"], program=name_a, baseline_name=name_b, metrics=EXPLAINED).to_json()


def _difference(a: dict, b: dict, collections: list[str]) -> dict | None:
    """a - b per collection and metric (and fitness), with the macro means; None when either failed."""
    if a["failure"] or b["failure"]:
        return None
    out = {c: {m: a["metrics"][c][m] - b["metrics"][c][m] for m in EXPLAINED} for c in collections}
    for c in collections:
        out[c]["fitness"] = a["fitness"][c] - b["fitness"][c]
    out["mean"] = {m: sum(out[c][m] for c in collections) / len(collections) for m in (*EXPLAINED, "fitness")}
    return out


def explain_json(data: dict, per_query: bool = False) -> dict:
    """The data without the per-query values (unless asked for)."""
    if per_query:
        return data

    def strip(m: dict | None) -> dict | None:
        return None if m is None else {k: v for k, v in m.items() if k != "per_query"}

    out = dict(data, full=strip(data["full"]), seed_result=strip(data["seed_result"]))
    out["parts"] = [dict(p, without=strip(p["without"])) for p in data["parts"]]
    out["lineage"] = [dict(s, result=strip(s["result"])) for s in data["lineage"]]
    return out


# -- the command ---------------------------------------------------------------------------------

def cmd_explain(args) -> int:
    from evorank.evaluators.data.suites import resolve_collections
    from evorank.evaluators.parallel import Limits
    from .console import print_json

    subject, run_suite = subject_of(args.program, args.base)
    if args.suite or args.datasets:
        addresses = resolve_collections(args.suite, args.datasets)
    elif run_suite:
        addresses = resolve_collections(run_suite, None) if "," not in run_suite and ":" not in run_suite \
            and "/" not in run_suite else resolve_collections(None, run_suite)
    else:
        addresses = resolve_collections("dev", None)
    log = None if args.json else (lambda m: print(m, file=sys.stderr))
    data = explain(subject, addresses, lineage_steps=not args.no_lineage, n_workers=args.workers,
                   limits=Limits(timeout_s=args.timeout_s or Limits.timeout_s, memory_mb=args.memory_mb or None),
                   log=log)
    if args.json:
        print_json(explain_json(data, per_query=args.per_query))
    else:
        print_explain(data)
    return 0


def _signed(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    text = f"{x:+.{digits}f}"
    return f"[green]{text}[/]" if x > 5e-5 else f"[red]{text}[/]" if x < -5e-5 else text


def _mark(tests: dict | None, collection: str, metric: str) -> str:
    """'*' where the difference is significant (Holm per collection; pooled for the mean column)."""
    if not tests:
        return ""
    t = tests["pooled"].get(metric) if collection == "mean" else tests["collections"].get(collection, {}).get(metric)
    if not t:
        return ""
    p = t["p_randomization"] if t.get("p_holm") is None else t["p_holm"]
    return "*" if p < tests["alpha"] else ""


def print_explain(data: dict) -> None:
    """The tables of ``evorank explain``: the gain over the seed, each part's contribution, each lineage step."""
    from rich.table import Table

    from evorank.evaluators.program.output import clean
    from .console import console, shown
    from .format import METRIC_LABELS, short_names

    c = console()
    cols = data["collections"]
    names = short_names(cols)
    labels = " / ".join(METRIC_LABELS.get(m, m) for m in data["metrics"])

    def cells(diff: dict | None, tests: dict | None = None) -> list[str]:
        if diff is None:
            return ["[red]failed[/]"] + [""] * len(cols)
        return [" ".join(_signed(diff[k][m]) + _mark(tests, k, m) for m in data["metrics"]) for k in (*cols, "mean")]

    table = Table(title=f"[bold]{shown(data['program'])}[/] over {shown(data['seed'])}: change of {labels} "
                        "per collection", title_justify="left")
    table.add_column("part")
    table.add_column("kind")
    for col in (*cols, "mean"):
        table.add_column(shown(names.get(col, col)), justify="right")
    table.add_row("[bold]the program vs its seed[/]", "all", *cells(data["gain_over_seed"], data.get("tests_over_seed")),
                  end_section=True)
    for p in data["parts"]:
        table.add_row(shown(clean(p["name"], 60)), p["kind"], *cells(p["contribution"], p.get("tests")))
    c.print(table)
    c.print("each part's row: the program's metric minus the metric without that part (a formula or constant "
            "restored to the seed's); positive: the part helps there. * p < 0.05 in a paired randomization test "
            "on the same queries (per collection Holm-corrected over the collections; the mean column: all queries "
            "pooled)")
    for p in data["parts"]:
        c.print(f"  {shown(clean(p['name'], 60))}: {shown(clean(p['detail'], 160))}"
                + (f"  [red](without it the program failed: {shown(p['failure'])})[/]" if p["failure"] else ""))
    if data["lineage"]:
        steps = Table(title=f"lineage: what each step changed ({labels})", title_justify="left")
        steps.add_column("step", justify="right")
        steps.add_column("program")
        steps.add_column("operator")
        for col in (*cols, "mean"):
            steps.add_column(shown(names.get(col, col)), justify="right")
        for i, s in enumerate(data["lineage"]):
            row = cells(s["change"]) if s["change"] is not None or s["failure"] else ["(start)"] + [""] * len(cols)
            steps.add_row(str(i), f"#{s['id']}", s["operator"], *row)
        c.print(steps)
    c.print(f"measured in {data.get('elapsed_s', 0):.0f} s, every program sandboxed; --json for the numbers "
            "(--per-query adds each query's values)")


def explain_html(data: dict) -> str:
    """``explain``'s data as the report's section: each part's contribution per collection (nDCG@10 / R@100)."""
    import html

    from evorank.evaluators.program.output import clean
    from .format import METRIC_LABELS, short_names

    def esc(x) -> str:
        return html.escape(str(x), quote=True)

    cols = data["collections"]
    names = short_names(cols)

    def cells(diff: dict | None, tests: dict | None = None) -> str:
        if diff is None:
            return f"<td colspan={len(cols) + 1}>failed</td>"
        out = []
        for k in (*cols, "mean"):
            shown = []
            for m in data["metrics"]:
                v = diff[k][m]
                text = f"{v:+.4f}{_mark(tests, k, m)}"
                shown.append(f"<span class={'up' if v > 0 else 'down'}>{text}</span>" if abs(v) > 5e-5 else text)
            out.append("<td class=num>" + " / ".join(shown) + "</td>")
        return "".join(out)

    head = "<tr><th>part</th><th>kind</th><th>code</th>" + "".join(
        f"<th title='{esc(c)}'>{esc(names.get(c, c))}</th>" for c in cols) + "<th>mean</th></tr>"
    rows = [f"<tr><th class=row>the program vs {esc(data['seed'])}</th><td>all</td><td></td>"
            f"{cells(data['gain_over_seed'], data.get('tests_over_seed'))}</tr>"]
    for p in data["parts"]:
        rows.append(f"<tr><th class=row>{esc(clean(p['name'], 60))}</th><td>{esc(p['kind'])}</td>"
                    f"<td><code>{esc(clean(p['detail'], 160))}</code></td>{cells(p['contribution'], p.get('tests'))}</tr>")
    labels = " / ".join(METRIC_LABELS.get(m, m) for m in data["metrics"])
    return (f"<div class=wide><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            f"<p class=note>Change of {labels} per collection: the first row is the program minus its seed; each "
            "part's row is the program minus the program without that part (a formula or constant restored to the "
            "seed's), so positive means the part helps there; * marks p < 0.05 in a paired randomization test on the "
            "same queries (Holm-corrected over the collections; pooled over all queries for the mean). Measured for this report on the run's collections "
            f"(all judged queries), every program sandboxed, in {data.get('elapsed_s', 0):.0f} s; "
            "<code>evorank explain RUN:best</code> prints the same with each lineage step.</p>")
