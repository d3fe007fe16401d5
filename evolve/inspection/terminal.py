"""``evorank status|top|show|diff|lineage``: a run's data (``queries``) rendered on the terminal
with rich, or printed as JSON with ``--json``. The CLI (``evolve.cli.main``) registers the parsers and calls
the ``cmd_*`` functions here. Text from the run (code, diffs, replies, prompts, failure reasons and details,
model names) goes through ``console.shown`` / ``escape_hidden``: a program's ANSI escapes or bidi controls are
printed as escapes, never acted on."""
from __future__ import annotations

import sys

from evorank.archive import FUSE
from evorank.evaluators.program.output import escape_hidden

from .console import console, print_json, shown
from .format import (METRIC_LABELS, RUN_COLLECTIONS, VALIDATION_ROLE, fmt, fmt_duration, pct, program_diff, record_json,
                     short_names)
from .queries import (
    InspectError,
    lineage_steps,
    metric_comparison,
    open_run,
    resolve_id,
    run_status,
    seed_ancestor,
    seed_records,
    top_programs,
    validation_fitness,
)


# -- status ---------------------------------------------------------------------------------------

def print_status(st: dict) -> None:
    c = console()
    style = "green" if st["alive"] else ("yellow" if st["state"].startswith("killed") else "")
    pid = f", pid {st['writer_pid']}" if st["alive"] else ""
    c.print(f"[bold]{shown(st['run'])}[/]  [{style or 'default'}]{shown(st['state'])}{pid}[/]")
    total = st["iterations_total"]
    c.print(f"iterations: {st['proposals_done']}/{total if total is not None else '?'} proposals   "
            f"elapsed: {fmt_duration(st['elapsed_s'])} over {len(st['sessions'])} session(s)")
    p = st["proposals"]
    c.print(f"programs:   {p['accepted']} accepted, {p['failed']} failed, {p['duplicate']} duplicate, "
            f"{p['rejected_cascade']} cut by the cascade  (+ {st['seed_programs']} seed, "
            f"{st['migration_copies']} migration copies"
            + (f", {st['pruned_programs']} pruned best" if st.get("pruned_programs") else "")
            + (f", {st['fusions']} fusion" if st.get("fusions") else "") + ")")
    if st["operators"]:
        c.print("by operator: " + ", ".join(
            f"{shown(o['operator'])} {o['proposals']} ({o['accepted']} accepted"
            + (f", {o['prompt_tokens'] + o['completion_tokens']:,} tokens, ${o['cost_usd']:.4f}"
               if o["prompt_tokens"] + o["completion_tokens"] else "") + ")" for o in st["operators"]))
    f = st.get("funnel")
    if f and f["chains"]:
        c.print(f"model proposals: {f['chains']} chains, {f['ideas']} ended in an idea ({f['improved']} improved "
                f"their start), {f['no_ops']} in a no-op, {f['copies']} in a copy, {f['failed']} failed; "
                f"{f['cut_off']} of {f['requests']} replies cut off")
    if st["failure_reasons"]:
        items = list(st["failure_reasons"].items())
        reasons = ", ".join(f"{shown(k)} {v}" for k, v in items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
        c.print(f"not accepted, by reason: {reasons}")
    seeds = ", ".join(f"{shown(n)} {fmt(s['fitness'])} (#{s['id']})" for n, s in st["seeds"].items())
    c.print(f"seeds:      {seeds or '-'}")
    for isl in st["islands"]:
        gain = f"  {isl['gain_vs_best_seed'] * 100:+.2f}% vs best seed" if isl["gain_vs_best_seed"] is not None else ""
        best = f"#{isl['best_id']} {fmt(isl['best_fitness'])}" if isl["best_id"] else "-"
        if isl["best_migrated_from"]:
            best += f" (migrant copy of #{isl['best_migrated_from']})"
        c.print(f"island {isl['island']}:   best {best}{gain}  ({isl['elites']} elites)")
    if st["best"]:
        b = st["best"]
        gain = f" ({b['gain_vs_best_seed'] * 100:+.2f}% vs best seed)" if b["gain_vs_best_seed"] is not None else ""
        c.print(f"best:       [bold]#{b['id']} fitness {fmt(b['fitness'])}[/]{gain} on island {b['island']}")
        if b.get("pruned_from") is not None:
            c.print(f"            pruned from #{b['pruned_from']} (--prune-best): took out "
                    f"{shown(', '.join(b['pruned'] or []))}, which the validation queries did not show to help")
        if b.get("fused_from"):
            c.print("            the fusion of the island bests " + ", ".join(f"#{i}" for i in b["fused_from"])
                    + " (--fuse-best): the sum of their per-query z-scores, better on the validation queries")
        if b["validation_fitness"] is not None:
            role = VALIDATION_ROLE.format(best_of=st["config"].get("best_of", 10))
            c.print(f"            train {fmt(b['fitness'])}, validation {fmt(b['validation_fitness'])} "
                    f"(gap {b['gap']:+.4f}); the validation queries {role}")
    if st.get("heldout"):
        h = st["heldout"]
        c.print(f"held-out:   #{h['id']} fitness {fmt(h.get('fitness'))} vs BM25 {fmt(h.get('reference_fitness'))} "
                f"on {shown(', '.join(h.get('collections', [])))} (iteration {h.get('iteration')}; never used for selection)")
    if st.get("not_reproducible"):
        c.print("[yellow]not reproducible[/] under its seed: " + "; ".join(st["not_reproducible"]))
    elif st.get("not_reproducible") is not None:
        cfg = st["config"]
        c.print(f"reproducible: a run of the same configuration with --seed {cfg.get('seed', 0)} --batch "
                f"{cfg.get('batch') or '(its --workers)'} gives the same archive")
    reuse = st.get("prepare_reuse") or {}
    if reuse.get("runs"):
        c.print(f"prepare():  reused in {reuse['reused']} of {reuse['runs']} sandboxed runs "
                f"({reuse['reused'] / reuse['runs']:.0%}; candidates with the same prepare code share its state)")
    tokens = st["prompt_tokens"] + st["completion_tokens"]
    c.print(f"LLM:        {st['prompt_tokens']:,} prompt + {st['completion_tokens']:,} completion tokens "
            f"= {tokens:,}; cost ${st['cost_usd']:.4f}"
            + (f" of ${st['config']['budget_usd']:.2f} budget" if st["config"].get("budget_usd") else ""))
    for m in st["models"]:
        c.print(f"  {shown(m['model'] or '(none)')}: {m['proposals']} proposals, "
                f"{m['prompt_tokens'] + m['completion_tokens']:,} tokens, ${m['cost_usd']:.4f}")


def cmd_status(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            st = run_status(store)
            best = resolve_id(store, "best") if st["best"] and args.significance else None
            seeds = seed_records(store) if best else {}
    tests = significance_tests(args, [best], seeds) if best else None
    if tests is not None:
        st["significance"] = tests[0][best.id].to_json()
        st["significance"]["collections_not_available"] = tests[1]
    if args.json:
        print_json(st)
    else:
        print_status(st)
        if tests is not None:
            print_significance_line(tests[0][best.id])
    return 0


# -- significance marks ------------------------------------------------------------------------------

def significance_tests(args, recs, seeds):
    """``--significance [SUITE]``: each of ``recs`` tested against the run's BM25 seed, evaluated now in the sandbox on
    the run's own collections (no SUITE) or on SUITE; (tests by program id, unavailable collections). None when
    the option was not given."""
    spec = getattr(args, "significance", None)
    if spec is None:
        return None
    from .transfer import compare_with_bm25, heldout_addresses

    bm25 = seeds.get("bm25")
    if bm25 is None:
        raise InspectError("this run has no BM25 seed to test its programs against")
    addresses = (list(dict.fromkeys(c for r in recs for c in r.metrics)) if spec == RUN_COLLECTIONS
                 else heldout_addresses(spec))
    log = None if args.json else (lambda m: print(m, file=sys.stderr))
    if log:
        log(f"testing {len(recs)} program(s) against BM25 on {len(addresses)} collection(s), all their queries, "
            "in the sandbox ...")
    return compare_with_bm25(recs, bm25, addresses, log=log)


def significance_mark(comparison, metric: str = "ndcg@10") -> str:
    """``+0.0123▲ 2▲0▼``: the pooled mean per-query difference from BM25 (▲/▼: significant at 0.05, randomization
    test) and how many collections are significantly better / worse after Holm correction."""
    pooled = comparison.pooled.get(metric)
    if pooled is None:
        return "-"
    arrow = {"better": "[green]▲[/]", "worse": "[red]▼[/]"}.get(pooled.verdict, "")
    verdicts = [per[metric].verdict for per in comparison.collections.values() if metric in per]
    return f"{pooled.delta:+.4f}{arrow} {verdicts.count('better')}▲{verdicts.count('worse')}▼"


def print_significance_line(comparison) -> None:
    from evorank.evaluators.significance import CONFIDENCE

    c = console()
    n_coll = len(comparison.collections)
    for m, t in comparison.pooled.items():
        verdicts = [per[m].verdict for per in comparison.collections.values() if m in per]
        style = {"better": "green", "worse": "red"}.get(t.verdict, "default")
        c.print(f"vs BM25:    {METRIC_LABELS.get(m, m)} [{style}]{t.delta:+.4f}[/] ({CONFIDENCE:.0%} CI "
                f"{t.ci_low:+.4f} to {t.ci_high:+.4f}), randomization p {t.p_randomization:.4f}, t-test p "
                f"{fmt(t.p_ttest)}, {t.wins}/{t.ties}/{t.losses} queries won/tied/lost (pooled over {t.n:,} "
                f"queries); collections better {verdicts.count('better')}, worse {verdicts.count('worse')} of "
                f"{n_coll} (Holm)")


# -- top ------------------------------------------------------------------------------------------

# Layouts of the `top` table, widest first: (digits, leading zero, columns left out).
_TOP_LAYOUTS = ((4, True, ()), (3, True, ()), (3, True, ("hash",)), (3, False, ("hash",)),
                (3, False, ("hash", "isl", "iter")), (3, False, ("hash", "isl", "iter", "operator")))


def top_table(c, recs, seeds, colls, metrics, title, marks=None):
    """The `top` table in the widest layout that fits the console ``c`` (values are cut only below ~110 columns
    with six collections), and the columns it left out; ``marks``: program id -> significance mark vs BM25."""
    for layout in _TOP_LAYOUTS:
        table = _top_table(recs, seeds, colls, metrics, title, *layout, marks=marks)
        if _table_width(c, table) <= c.width:
            break
    return table, layout[2]


def _table_width(c, table) -> int:
    from rich.measure import Measurement

    return Measurement.get(c, c.options.update(max_width=100_000), table).maximum


def _top_table(recs, seeds, colls, metrics, title, digits, leading_zero, left_out, marks=None):
    from rich import box
    from rich.table import Table

    def num(x):
        text = fmt(x, digits)
        return text if leading_zero else text.replace("0.", ".", 1) if text.startswith("0.") else text

    labels = short_names(colls)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    columns = [col for col in ("#", "id", "hash", "isl", "iter", "operator", "fitness", "val", "latency",
                               *(("vs BM25",) if marks else ())) if col not in left_out]
    for col in columns:
        table.add_column(col, justify="left" if col in ("hash", "operator") else "right", no_wrap=True)
    for c in colls:
        table.add_column(shown(labels[c]), justify="right", no_wrap=True)
    bm25 = seeds.get("bm25")
    for i, r in enumerate(recs, 1):
        cells = {
            "#": str(i), "id": str(r.id), "hash": (r.code_hash or "")[:8], "isl": str(r.island),
            "iter": str(r.iteration),
            "operator": shown(r.operator + (f" ({r.features.get('seed_name')})" if r.operator == "seed" else "")),
            "fitness": fmt(r.fitness) + (f" ({pct(r.fitness, bm25.fitness)})" if bm25 and r.id != bm25.id else ""),
            "val": fmt(validation_fitness(r)),
            "latency": f"{r.latency_ratio:.2f}x" if r.latency_ratio is not None else "-",
            "vs BM25": (marks or {}).get(r.id, "-"),
        }
        table.add_row(*(cells[col] for col in columns),
                      *("/".join(num(r.metrics.get(c, {}).get(m)) for m in metrics) for c in colls))
    return table


def cmd_top(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            recs = top_programs(store, args.n, args.by, args.island)
            seeds = seed_records(store)
            best_of = store.config().get("best_of", 10)
    tests = significance_tests(args, recs, seeds) if recs else None
    if args.json:
        print_json([{"rank": i, **record_json(r, code=False), "seed_name": r.features.get("seed_name"),
                     **({"significance": tests[0][r.id].to_json()} if tests else {})}
                    for i, r in enumerate(recs, 1)])
        return 0
    c = console()
    colls = list(dict.fromkeys(name for r in recs for name in r.metrics))
    metrics = [args.metric] if args.metric else ["ndcg@10", "recall@100"]
    bm25_hash = seeds["bm25"].code_hash if tests else None
    marks = {r.id: "baseline" if r.code_hash == bm25_hash else significance_mark(tests[0][r.id]) for r in recs} \
        if tests else None
    table, left_out = top_table(c, recs, seeds, colls, metrics, f"top {len(recs)} by {args.by} — {shown(args.run)}",
                                marks)
    c.print(table)
    if tests:
        tested_on = ", ".join(short_names(next(iter(tests[0].values())).collections).values())
        c.print(f"vs BM25: pooled mean per-query Δ nDCG@10 over every query of {tested_on} (▲/▼: p < 0.05, paired "
                "randomization test), then how many collections are significantly better▲ / worse▼ after Holm "
                "correction; `evorank eval RUN:ID --compare` gives the full table"
                + (f"; not available here: {', '.join(tests[1])}" if tests[1] else ""))
    c.print(f"collection cells: {'/'.join(METRIC_LABELS.get(m, m) for m in metrics)}; "
            f"val = fitness on the validation queries, which {VALIDATION_ROLE.format(best_of=best_of)}; "
            "latency = median scoring time per query relative to the BM25 seed; "
            "fitness gain in brackets is vs the BM25 seed"
            + (f"; left out to fit {c.width} columns: {', '.join(left_out)} (`--json` has everything)"
               if left_out else ""))
    return 0


# -- show -----------------------------------------------------------------------------------------

def _delta(a, b, digits: int = 4) -> str:
    if a is None or b is None:
        return ""
    return f"{a - b:+.{digits}f}"


def cmd_show(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            rec = resolve_id(store, args.id)
            parent = store.get(rec.parent_ids[0]) if rec.parent_ids else None
            seed = seed_ancestor(store, rec)
    seed_name = seed.features.get("seed_name") if seed else None
    comparison = metric_comparison(rec, parent, seed)
    if args.json:
        out = record_json(rec, prompt=args.prompt, response=args.response)
        out["parent"] = {"id": parent.id, "fitness": parent.fitness} if parent else None
        out["seed"] = {"id": seed.id, "name": seed_name, "fitness": seed.fitness} if seed else None
        out["comparison"] = comparison
        print_json(out)
        return 0
    from rich.syntax import Syntax
    from rich.table import Table

    c = console()
    head = f"[bold]program #{rec.id}[/] {rec.code_hash[:12] if rec.code_hash else ''}  {rec.status}"
    if rec.failure_reason:
        head += f" ([red]{shown(rec.failure_reason)}[/])"
    c.print(head)
    origin = f"operator {shown(rec.operator)}"
    if rec.operator == "seed":
        origin += f" ({shown(seed_name)})"
    elif rec.operator == "migration" and parent:
        origin += f" (copy of #{parent.id} from island {parent.island})"
    parents = ", ".join(f"#{p}" for p in rec.parent_ids) or "-"
    c.print(f"{origin}, island {rec.island}, generation {rec.generation}, iteration {rec.iteration}, parents {parents}, "
            f"descends from seed {shown(seed_name or '?')}")
    if rec.model or rec.prompt_tokens or rec.completion_tokens:
        c.print(f"model {shown(rec.model or '-')}: {rec.prompt_tokens:,} prompt + {rec.completion_tokens:,} completion tokens, "
                f"${rec.cost_usd:.4f}")
    if rec.failure_detail:
        c.print(f"[red]{shown(rec.failure_detail)}[/]")  # holds the program's own (fenced) text
    table = Table(title_justify="left")
    table.add_column("collection")
    table.add_column("metric")
    table.add_column(f"#{rec.id}", justify="right")
    table.add_column(f"parent #{parent.id}" if parent else "parent", justify="right")
    table.add_column("Δ", justify="right")
    table.add_column(f"seed {shown(seed_name)}" if seed else "seed", justify="right")
    table.add_column("Δ", justify="right")
    labels = short_names([r["collection"] for r in comparison if r["collection"]])
    for r in comparison:
        coll = shown(labels.get(r["collection"], "")) if r["collection"] else "[bold]all[/]"
        digits = 2 if r["metric"] == "latency_ratio" else 4
        label = "latency (x BM25)" if r["metric"] == "latency_ratio" else METRIC_LABELS.get(r["metric"], r["metric"])
        table.add_row(coll, label, fmt(r["value"], digits), fmt(r["parent"], digits),
                      _delta(r["value"], r["parent"], digits), fmt(r["seed"], digits),
                      _delta(r["value"], r["seed"], digits))
    c.print(table)
    code = escape_hidden(rec.code)
    if sys.stdout.isatty() and not args.plain:
        c.print(Syntax(code, "python", line_numbers=True, word_wrap=False))
    else:
        print(code, end="" if code.endswith("\n") else "\n")
    for flag, text, title in ((args.prompt, rec.prompt, "prompt"), (args.response, rec.response, "response")):
        if flag:
            c.rule(title)
            print(escape_hidden(text) if text is not None else f"(no {title} recorded for this program)")
    return 0


# -- diff -----------------------------------------------------------------------------------------

def cmd_diff(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            rec = resolve_id(store, args.id)
            if args.other:
                base = resolve_id(store, args.other)
            elif rec.parent_ids:
                base = store.get(rec.parent_ids[0])
            else:
                raise InspectError(f"program #{rec.id} is a seed and has no parent; "
                                   "name a second program to compare with (evorank diff RUN ID OTHER)")
    text = program_diff(base, rec, args.context)
    if args.json:  # JSON escapes control characters itself
        print_json({"from": base.id, "to": rec.id, "identical": not text, "diff": text})
        return 0
    text = escape_hidden(text)
    if not text:
        print(f"#{base.id} and #{rec.id} have identical code")
    elif sys.stdout.isatty():
        from rich.syntax import Syntax

        console().print(Syntax(text, "diff"))
    else:
        print(text, end="")
    return 0


# -- lineage --------------------------------------------------------------------------------------

def cmd_lineage(args) -> int:
    with open_run(args.run) as store:
        with store.read_snapshot():
            rec = resolve_id(store, args.id)
            steps = lineage_steps(store, rec)
    if args.json:
        print_json(steps)
        return 0
    from rich.table import Table

    first = steps[0]
    origin = f"seed {shown(first['seed_name'])}" if first["operator"] == "seed" else f"#{first['id']} (no further parents)"
    table = Table(title=f"lineage of #{rec.id}: {len(steps) - 1} step(s) from {origin}", title_justify="left")
    for col, just in (("step", "right"), ("id", "right"), ("operator", "left"), ("island", "right"),
                      ("iteration", "right"), ("fitness", "right"), ("Δ step", "right"), ("Δ total", "right"),
                      ("note", "left")):
        table.add_column(col, justify=just)
    for s in steps:
        joined = "fused with" if s["operator"] == FUSE else "crossed with"
        note = ", ".join(f"{joined} #{p}" for p in s["other_parents"])
        if s["operator"] == "seed":
            note = shown(s["seed_name"] or "")
        delta = f"{s['delta']:+.4f}" if s["delta"] is not None else ""
        style = "green" if (s["delta"] or 0) > 0 else ("red" if (s["delta"] or 0) < 0 else "")
        table.add_row(str(s["step"]), str(s["id"]), shown(s["operator"]), str(s["island"]), str(s["iteration"]),
                      fmt(s["fitness"]), f"[{style}]{delta}[/]" if style else delta,
                      f"{s['delta_from_start']:+.4f}" if s["delta_from_start"] is not None else "", note)
    console().print(table)
    return 0
