"""``evorank report``: one self-contained HTML file describing a run.

Everything is inline: plots are SVG made with matplotlib (Agg backend, text drawn as paths so no
font or network is needed), styles are in a <style> block, and there is no JavaScript. Sections:
summary, fitness over iterations, the best program vs the seeds per collection, the best program vs BM25
per query (paired significance and the sorted per-query differences, on the run's collections and the
held-out ones), each island's MAP-Elites grid, the best program's lineage with each step's diff, what the best
program adds over its seed (``explain``: each part taken out and measured), seen vs held-out (transfer)
metrics, outcomes and failure reasons over time, tokens and cost over time, and the top programs.

Held-out numbers and per-query values are computed at report time with the same code paths as ``evorank eval``
(``evolve.inspection.transfer``) for the best program and the seeds, every one in the sandbox (the seeds' code
comes from the archive too); evolved code through the static checks first, as in the run.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from evorank.archive import Islands, ProgramRecord
from evorank.evaluators.errors import check_output_path
from evorank.evaluators.program.output import escape_hidden
from .format import (METRIC_LABELS, VALIDATION_ROLE, axis_meaning, axis_title, fmt, fmt_duration, program_diff,
                     short_names)
from .queries import (lineage, open_run, run_status, seed_records, top_programs,
                                            validation_fitness)
from .plots import (Plots, plot_collections, plot_cost, plot_fitness, plot_grids, plot_outcomes, plot_per_query,
                    plot_validation)
from .transfer import transfer_data

def esc(x) -> str:
    """Text from the run as HTML: markup escaped, and control or invisible formatting characters (a program's ANSI
    escapes, bidi overrides) shown as escapes."""
    return html.escape(escape_hidden(str(x)), quote=True)


def change_html(new, ref, digits: int = 1, suffix: str = "") -> str:
    """`` (+1.2%)``: the relative change from ``ref`` to ``new`` in a span coloured by its sign as shown (``gain``
    green, ``loss`` red, ``same`` grey when it rounds to zero); '' when either is missing or ``ref`` is 0."""
    if new is None or not ref:
        return ""
    change = (new / ref - 1) * 100
    shown = round(change, digits)
    cls = "gain" if shown > 0 else "loss" if shown < 0 else "same"
    return f" <span class={cls}>({change:+.{digits}f}%{suffix})</span>"


def _mean(per_coll: dict, colls, metric) -> float | None:
    vals = [per_coll.get(c, {}) or {} for c in colls]
    vals = [v.get(metric) for v in vals]
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)


def transfer_html(t: dict) -> str:
    parts = []
    seen_c, held_c = t["seen_collections"], t["heldout_collections"]
    metrics = ["ndcg@10", "recall@100"]
    base = next((p for p in t["programs"] if p == "seed bm25"), None)
    head = "<tr><th rowspan=2>program</th>"
    head += f"<th colspan=2>seen ({len(seen_c)} collection{'s' * (len(seen_c) != 1)}, evolution set)</th>"
    if held_c:
        head += f"<th colspan=2>held-out ({len(held_c)} collection{'s' * (len(held_c) != 1)}, never used for selection)</th>"
    head += "</tr><tr>" + "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in metrics) * (2 if held_c else 1) + "</tr>"
    rows = []
    for label in t["programs"]:
        cells = []
        for data, colls in ((t["seen"], seen_c), (t["heldout"], held_c)):
            if data is t["heldout"] and not held_c:
                continue
            for m in metrics:
                v = _mean(data.get(label, {}), colls, m)
                ref = _mean(data.get(base, {}), colls, m) if base and label != base else None
                cells.append(f"<td class=num>{fmt(v)}{change_html(v, ref)}</td>")
        rows.append(f"<tr><th class=row>{esc(label)}</th>{''.join(cells)}</tr>")
    parts.append(f"<table class=transfer><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")
    if base:
        parts.append("<p class=note>Macro means over collections; percentages are relative to the BM25 seed.</p>")
    # per-collection detail
    allc = [(c, "seen") for c in seen_c] + [(c, "held-out") for c in held_c]
    labels = short_names([c for c, _ in allc])
    head = "<tr><th>collection</th><th>set</th>" + "".join(f"<th>{esc(p)}<br>nDCG@10 / R@100</th>" for p in t["programs"])
    body = []
    for c, kind in allc:
        data = t["seen"] if kind == "seen" else t["heldout"]
        cells = []
        for p in t["programs"]:
            m = (data.get(p) or {}).get(c) or {}
            cells.append(f"<td class=num>{fmt(m.get('ndcg@10'))} / {fmt(m.get('recall@100'))}</td>")
        body.append(f"<tr><td title='{esc(c)}'>{esc(labels[c])}</td><td>{kind}</td>{''.join(cells)}</tr>")
    parts.append(f"<details><summary>per collection</summary><table><thead>{head}</tr></thead>"
                 f"<tbody>{''.join(body)}</tbody></table></details>")
    if t["note"]:
        parts.append(f"<p class=warn>{esc(t['note'])}</p>")
    elif held_c:
        parts.append(f"<p class=note>Seen numbers are the run's own measurements; held-out numbers were computed "
                     f"for this report on <code>{esc(t['heldout_spec'])}</code> in {t.get('elapsed_s', 0):.1f} s "
                     f"(same code path as <code>evorank eval RUN:best {esc(t['heldout_flag'])}</code>).</p>")
    for c, why in t["missing"].items():
        if held_c:
            parts.append(f"<p class=warn>held-out collection {esc(c)} not available: {esc(why)}</p>")
    for label, why in t["errors"].items():
        parts.append(f"<p class=warn>{esc(label)}: {esc(why)}</p>")
    return "\n".join(parts)


def significance_html(P: Plots, t: dict, best: ProgramRecord) -> str:
    """The best program against the BM25 seed, paired per query, on the seen and on the held-out collections: the
    significance table (per collection, Holm-corrected over each set's collections, and pooled) and the sorted
    per-query differences of nDCG@10."""
    from evorank.evaluators.significance import ALPHA, CONFIDENCE, N_RESAMPLES, compare

    ours, base = t["per_query"].get(f"best #{best.id}", {}), t["per_query"].get("seed bm25", {})
    if not t["per_query"]:
        return f"<p class=note>{esc(t['note'] or 'Nothing was evaluated at report time.')}</p>"
    if not base:
        return "<p class=note>Nothing to compare: the best program is the BM25 seed, or the run has none.</p>"
    parts = []
    for kind, colls, why in (
            ("seen", t["measured_seen"], "The run's own collections, all their queries: train queries selected the "
             "program and validation queries chose it among the best, so these p-values overstate the evidence"),
            ("held-out", t["heldout_collections"], "Collections never used for selection")):
        both = [c for c in colls if c in ours and c in base]
        if not both:
            continue
        cmp = compare({c: ours[c] for c in both}, {c: base[c] for c in both}, program=f"best #{best.id}",
                      baseline_name="BM25")
        labels = short_names(both)
        rows = []
        for name, per in [*((labels[c], cmp.collections[c]) for c in both),
                          *([("<b>all queries (pooled)</b>", cmp.pooled)] if len(both) > 1 else [])]:
            for m in cmp.metrics:
                r = per[m]
                cls = {"better": " class=up", "worse": " class=down"}.get(r.verdict, "")
                rows.append(f"<tr><td>{name if name.startswith('<b>') else esc(name)}</td><td>{METRIC_LABELS[m]}</td>"
                            f"<td class=num>{r.n:,}</td><td class=num>{fmt(r.baseline_mean)}</td>"
                            f"<td class=num>{fmt(r.mean)}</td><td class=num><span{cls}>{r.delta:+.4f}</span></td>"
                            f"<td class=num>[{r.ci_low:+.4f}, {r.ci_high:+.4f}]</td><td class=num>{_p(r.p_randomization)}"
                            f"</td><td class=num>{_p(r.p_holm)}</td><td class=num>{_p(r.p_ttest)}</td>"
                            f"<td class=num>{r.wins}/{r.ties}/{r.losses}</td><td{cls}>{r.verdict}</td></tr>")
        parts.append(
            f"<h3>{kind.capitalize()} collections</h3><p class=note>{esc(why)}.</p><div class=wide><table class=sig>"
            "<thead><tr><th>collection</th><th>metric</th><th>queries</th><th>BM25</th><th>best</th><th>Δ mean</th>"
            f"<th>{CONFIDENCE:.0%} CI</th><th>p rand</th><th>p Holm</th><th>p t-test</th><th>W/T/L</th><th></th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
            f"<figure>{plot_per_query(P, {c: ours[c] for c in both}, {c: base[c] for c in both}, 'ndcg@10', f'best #{best.id}')}"
            "</figure>")
    if not parts:
        return "<p class=note>None of the collections could be evaluated here.</p>"
    parts.append(f"<p class=note>Paired over the same queries: Δ mean is the mean per-query difference (best - BM25) "
                 f"with its {CONFIDENCE:.0%} paired bootstrap interval (BCa); p rand: two-sided paired randomization "
                 f"test ({N_RESAMPLES:,} sign flips); p Holm: that p Holm-Bonferroni corrected over the set's "
                 f"collections; p t-test: paired t-test; W/T/L: queries won, tied, lost; better/worse at p &lt; {ALPHA}. "
                 "The plots sort each collection's per-query nDCG@10 differences: a gain carried by a few queries "
                 "shows as a few tall bars, a broad one as a wide band.</p>")
    return "\n".join(parts)


def _p(p) -> str:
    return "-" if p is None else ("&lt;0.0001" if p < 1e-4 else f"{p:.4f}")


# -- HTML ---------------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 0; color: #1d232a;
       background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.1em; } h2 { margin-top: 2em; border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; }
.sub { color: #5b6673; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #e3e6ea; border-radius: 8px; padding: 10px 14px; min-width: 140px; background: #fbfcfd; }
.card .k { font-size: 0.8em; color: #5b6673; text-transform: uppercase; letter-spacing: 0.04em; }
.card .v { font-size: 1.35em; font-weight: 600; margin-top: 2px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #e3e6ea; padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #f0f2f5; } th.row { background: #fbfcfd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.gain { color: #2c7a3f; font-size: 0.85em; } .loss { color: #b3261e; font-size: 0.85em; }
.same { color: #5b6673; font-size: 0.85em; }
.up { color: #2c7a3f; } .down { color: #b3261e; }
.note { color: #5b6673; font-size: 0.9em; } .warn { color: #8a5a00; background: #fff7e0; padding: 6px 10px; border-radius: 4px; }
figure { margin: 8px 0 16px; } figure svg { max-width: 100%; height: auto; }
.wide { overflow-x: auto; max-width: 100%; }
table.fit { font-size: 0.85em; }
table.fit td.num { white-space: normal; }  /* "0.6399 / 0.9305" breaks at its spaces when the page is narrow */
table.fit th.coll { overflow-wrap: anywhere; }  /* and a long collection name inside itself */
pre { background: #f6f8fa; border: 1px solid #e3e6ea; border-radius: 6px; padding: 10px; overflow-x: auto;
      font-size: 0.82em; line-height: 1.35; }
pre .add { color: #116329; background: #dafbe1; display: block; } pre .del { color: #82071e; background: #ffebe9; display: block; }
pre .hunk { color: #0550ae; display: block; } pre .file { color: #57606a; display: block; font-weight: 600; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f0f2f5; padding: 0 4px; border-radius: 3px; }
"""


def diff_html(text: str) -> str:
    if not text:
        return "<pre>(identical code)</pre>"
    lines = []
    for line in text.splitlines():
        cls = ("file" if line.startswith(("+++", "---")) else "add" if line.startswith("+")
               else "del" if line.startswith("-") else "hunk" if line.startswith("@@") else None)
        lines.append(f"<span class={cls}>{esc(line)}</span>" if cls else esc(line) + "\n")
    return "<pre>" + "".join(lines) + "</pre>"


def explain_section(run_dir: Path, best: ProgramRecord, log=None) -> str:
    """``evorank explain RUN:best`` on the run's collections, without the lineage steps (shown above)."""
    from evorank.evaluators.errors import EvorankError
    from .explain import explain, explain_html, subject_of

    try:
        subject, _ = subject_of(f"{run_dir}:{best.id}")
        return explain_html(explain(subject, list(best.metrics), lineage_steps=False, log=log))
    except EvorankError as e:
        return f"<p class=warn>{esc(e)}</p>"


def funnel_html(f: dict) -> str:
    """The chains of model-written proposals by outcome, and each idea against the program it started from."""
    rows = "".join(f"<tr><td>{label}</td><td class=num>{f[key]}</td></tr>" for key, label in (
        ("chains", "chains (fresh proposals and their repairs)"), ("ideas", "ended in an idea (runs, ranks differently, "
         "not a copy)"), ("improved", "of which improved their start on train"), ("no_ops", "ended in a no-op (ranks "
         "as its start)"), ("copies", "ended in a copy (of a program its prompt showed)"), ("failed", "failed"),
        ("cut_off", f"replies cut off (of {f['requests']})")))
    def gain(i) -> str:
        return "-" if i["relative"] is None else f"{i['relative'] * 100:+.2f}%"

    ideas = "".join(f"<tr><td class=num>#{i['id']}</td><td>{esc(i['direction'] or '-')}</td>"
                    f"<td class=num>#{i['start']}</td><td class=num>{fmt(i['fitness'])}</td>"
                    f"<td class=num>{gain(i)}</td></tr>" for i in f["idea_list"])
    return (f"<table><tbody>{rows}</tbody></table>"
            + (f"<table><thead><tr><th>idea</th><th>direction</th><th>start</th><th>fitness</th><th>vs start</th></tr>"
               f"</thead><tbody>{ideas}</tbody></table>" if ideas else ""))


def _card(k, v) -> str:
    return f"<div class=card><div class=k>{esc(k)}</div><div class=v>{v}</div></div>"


def lineage_html(store, best: ProgramRecord) -> str:
    chain = lineage(store, best)
    out = []
    rows = []
    for i, r in enumerate(chain):
        prev = chain[i - 1] if i else None
        delta = r.fitness - prev.fitness if prev and r.fitness is not None and prev.fitness is not None else None
        cls = "up" if (delta or 0) > 0 else "down" if (delta or 0) < 0 else ""
        what = r.operator + (f" ({r.features.get('seed_name')})" if r.operator == "seed" else "")
        if len(r.parent_ids) > 1:
            what += " with " + ", ".join(f"#{p}" for p in r.parent_ids[1:])
        rows.append(f"<tr><td class=num>{i}</td><td class=num>#{r.id}</td><td>{esc(what)}</td>"
                    f"<td class=num>{r.island}</td><td class=num>{r.iteration}</td><td class=num>{fmt(r.fitness)}</td>"
                    f"<td class='num {cls}'>{f'{delta:+.4f}' if delta is not None else ''}</td>"
                    f"<td>{esc(r.model or '')}</td></tr>")
    out.append("<table><thead><tr><th>step</th><th>id</th><th>operator</th><th>island</th><th>iteration</th>"
               "<th>fitness</th><th>Δ</th><th>model</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    for i, r in enumerate(chain[1:], 1):
        prev = chain[i - 1]
        d = program_diff(prev, r)
        n_changed = sum(1 for ln in d.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---")))
        out.append(f"<details{' open' if i == len(chain) - 1 and len(chain) <= 4 else ''}><summary>step {i}: "
                   f"#{prev.id} → #{r.id} ({esc(r.operator)}, {n_changed} changed line{'s' * (n_changed != 1)}, "
                   f"fitness {fmt(prev.fitness)} → {fmt(r.fitness)})</summary>{diff_html(d)}</details>")
    out.append(f"<details><summary>code of #{best.id}</summary><pre>{esc(best.code)}</pre></details>")
    return "\n".join(out)


def top_html(recs: list[ProgramRecord], bm25: ProgramRecord | None) -> str:
    colls = list(dict.fromkeys(c for r in recs for c in r.metrics))
    labels = short_names(colls)
    head = ("<tr><th>#</th><th>id</th><th>operator</th><th>island</th><th>iteration</th><th>fitness</th>"
            "<th title='fitness on the validation queries'>val</th><th>latency</th>"
            + "".join(f"<th class=coll title='{esc(c)}: nDCG@10 / R@100'>{esc(labels[c])}</th>" for c in colls)
            + "</tr>")
    rows = []
    for i, r in enumerate(recs, 1):
        op = r.operator + (f" ({r.features.get('seed_name')})" if r.operator == "seed" else "")
        gain = change_html(r.fitness, bm25.fitness, 2) if bm25 and r.id != bm25.id else ""
        cells = "".join(f"<td class=num>{fmt(r.metrics.get(c, {}).get('ndcg@10'))} / "
                        f"{fmt(r.metrics.get(c, {}).get('recall@100'))}</td>" for c in colls)
        lat = f"{r.latency_ratio:.2f}×" if r.latency_ratio is not None else "-"
        rows.append(f"<tr><td class=num>{i}</td><td class=num>#{r.id}</td><td>{esc(op)}</td><td class=num>{r.island}</td>"
                    f"<td class=num>{r.iteration}</td><td class=num>{fmt(r.fitness)}{gain}</td>"
                    f"<td class=num>{fmt(validation_fitness(r))}</td>"
                    f"<td class=num>{lat}</td>{cells}</tr>")
    return (f"<div class=wide><table class=fit><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class=note>Each collection's cell: nDCG@10 / R@100 on the run's train queries; fitness change in "
            "brackets vs the BM25 seed; latency: median time per query relative to the BM25 seed.</p>")


def build_report(run_dir, out_path, heldout: str | None = "heldout", log=None) -> dict:
    """Write the report; returns a summary (path, best id, sections, transfer note)."""
    run_dir = Path(run_dir)
    check_output_path(out_path, what="report")  # before any work: held-out evaluation can take minutes
    with open_run(run_dir) as store:
        with store.read_snapshot():
            st = run_status(store)
            programs = store.programs()
            seeds = seed_records(store)
            islands = Islands.from_store(store)
            spec = store.grid_spec()
            best = store.best_on_validation(int(store.config().get("best_of", 10)))
            top = top_programs(store, 10)
            lineage_part = lineage_html(store, best) if best else "<p>No accepted program yet.</p>"
            cfg = store.config()
            versions = store.versions()
    P = Plots()
    sections = []
    fitness_svg = plot_fitness(P, programs, seeds)
    sections.append(("fitness", "Fitness over iterations",
                     f"<figure>{fitness_svg}</figure><p class=note>Best so far (red, seeds included) and the running "
                     "median of accepted programs (blue); dashed lines are the seeds; ticks at the bottom mark "
                     "proposals that were not accepted.</p>"))
    if any(isinstance(p.features.get("val_fitness"), (int, float)) for p in programs) or st.get("heldout_history"):
        sections.append(("validation", "Train, validation and held-out fitness",
                         f"<figure>{plot_validation(P, programs, st.get('heldout_history') or [])}</figure>"
                         "<p class=note>The best program so far by train fitness (the queries selection sees), its "
                         "fitness on the validation queries (which "
                         + esc(VALIDATION_ROLE.format(best_of=cfg.get("best_of", 10))) + "), and, where the run "
                         "tracked held-out collections, the held-out fitness of each best measured there, scaled so that BM25 sits at the seeds' train fitness. A gap "
                         "that opens between the lines is a gain that does not generalise.</p>"))
    if best:
        sections.append(("collections", "Best program vs the seeds, per collection",
                         f"<figure>{plot_collections(P, best, seeds)}</figure>"))
    seed_top = max((s.fitness for s in seeds.values() if s.fitness is not None), default=None)
    sections.append(("grids", "MAP-Elites grids",
                     f"<figure>{plot_grids(P, islands, spec, seed_top)}</figure><p class=note>Each cell shows "
                     "the fitness of its elite, coloured by its gain over the best seed; axes: "
                     + "; ".join(f"{esc(axis_title(d))}" + (f": {esc(axis_meaning(d))}" if axis_meaning(d) else "")
                                 for d in spec.dimensions[:2])
                     + (f" (each cell: the best over {', '.join(esc(axis_title(d)) for d in spec.dimensions[2:])})"
                        if len(spec.dimensions) > 2 else "") + ".</p>"))
    if best:
        sections.append(("lineage", f"Lineage of the best program (#{best.id})", lineage_part))
    if best and heldout is not None:  # programs are run for this report unless told not to
        sections.append(("explain", f"What the best program adds over its seed (#{best.id})",
                         explain_section(run_dir, best, log)))
    transfer = None
    if best:
        transfer = transfer_data(best, seeds, heldout, log=log)
        sections.append(("transfer", "Seen vs held-out collections (transfer)", transfer_html(transfer)))
        sections.insert(next(i for i, s in enumerate(sections) if s[0] == "collections") + 1,
                        ("significance", "Best program vs BM25, per query (significance)",
                         significance_html(P, transfer, best)))
    reasons = "".join(f"<tr><td>{esc(k)}</td><td class=num>{v}</td></tr>" for k, v in st["failure_reasons"].items())
    sections.append(("outcomes", "Outcomes and failure reasons over time",
                     f"<figure>{plot_outcomes(P, programs)}</figure>"
                     + (f"<table><thead><tr><th>reason</th><th>proposals</th></tr></thead><tbody>{reasons}</tbody></table>"
                        if reasons else "<p class=note>Every proposal was accepted.</p>")))
    if st.get("funnel"):
        sections.append(("ideas", "What model proposals came to", funnel_html(st["funnel"])))
    models = "".join(f"<tr><td>{esc(m['model'] or '(none)')}</td><td class=num>{m['proposals']}</td>"
                     f"<td class=num>{m['prompt_tokens']:,}</td><td class=num>{m['completion_tokens']:,}</td>"
                     f"<td class=num>${m['cost_usd']:.4f}</td></tr>" for m in st["models"])
    operators = "".join(f"<tr><td>{esc(o['operator'])}</td><td class=num>{o['proposals']}</td>"
                        f"<td class=num>{o['accepted']}</td><td class=num>{o['prompt_tokens']:,}</td>"
                        f"<td class=num>{o['completion_tokens']:,}</td><td class=num>${o['cost_usd']:.4f}</td></tr>"
                        for o in st["operators"])
    sections.append(("cost", "Tokens and cost over time",
                     f"<figure>{plot_cost(P, programs)}</figure><table><thead><tr><th>model</th><th>proposals</th>"
                     f"<th>prompt tokens</th><th>completion tokens</th><th>cost</th></tr></thead><tbody>{models}"
                     "</tbody></table><table><thead><tr><th>operator</th><th>proposals</th><th>accepted</th>"
                     f"<th>prompt tokens</th><th>completion tokens</th><th>cost</th></tr></thead><tbody>{operators}"
                     "</tbody></table>"))
    if top:
        sections.append(("top", "Top programs", top_html(top, seeds.get("bm25"))))
    cfg_rows = "".join(f"<tr><th class=row>{esc(k)}</th><td><code>{esc(json.dumps(v))}</code></td></tr>"
                       for k, v in sorted(cfg.items()))
    ver = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    sections.append(("config", "Configuration", f"<details><summary>settings of this run</summary><table>{cfg_rows}"
                     f"</table></details><p class=note>versions: {esc(ver)}</p>"))

    seed_best = max((s.fitness for s in seeds.values() if s.fitness is not None), default=None)
    gain = change_html(best.fitness, seed_best, 2, " vs best seed") if best else ""
    p = st["proposals"]
    cards = "".join([
        _card("state", esc(st["state"].split(" (")[0])),
        _card("proposals", f"{st['proposals_done']} / {st['iterations_total'] if st['iterations_total'] is not None else '?'}"),
        _card("best fitness", (fmt(best.fitness) + gain) if best else "-"),
        _card("accepted", str(p["accepted"])),
        _card("failed / duplicate / cut", f"{p['failed']} / {p['duplicate']} / {p['rejected_cascade']}"),
        _card("elapsed", fmt_duration(st["elapsed_s"])),
        _card("tokens", f"{st['prompt_tokens'] + st['completion_tokens']:,}"),
        _card("cost", f"${st['cost_usd']:.4f}"),
    ])
    nav = " · ".join(f"<a href='#{sid}'>{esc(title.split(' (')[0])}</a>" for sid, title, _ in sections)
    body = "\n".join(f"<section id='{sid}'><h2>{esc(title)}</h2>\n{content}\n</section>" for sid, title, content in sections)
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>evorank report: {esc(run_dir.resolve().name)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>evorank run {esc(run_dir.resolve().name)}</h1>
<p class=sub>{esc(run_dir.resolve())} — state: {esc(st['state'])} — suite {esc(cfg.get('suite') or '-')},
proposer {esc(cfg.get('llm', '-'))}, {st['config'].get('islands', '?')} island(s), seed {esc(cfg.get('seed', '-'))};
report generated {generated}</p>
<div class=cards>{cards}</div>
<nav class=note>{nav}</nav>
{body}
</main></body></html>
"""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return {"path": str(out_path), "best_id": best.id if best else None, "sections": [s[0] for s in sections],
            "bytes": len(page.encode()), "transfer_note": transfer["note"] if transfer else None,
            "heldout_collections": transfer["heldout_collections"] if transfer else []}


def cmd_report(args) -> int:
    import sys

    out = Path(args.out) if args.out else Path(args.run) / "report.html"
    log = None if args.json else (lambda m: print(m, file=sys.stderr))
    info = build_report(args.run, out, heldout=None if args.no_transfer else args.heldout, log=log)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"wrote {info['path']} ({info['bytes'] / 1024:.0f} KiB)")
        if info["transfer_note"]:
            print(f"note: {info['transfer_note']}")
    return 0
