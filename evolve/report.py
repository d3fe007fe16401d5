"""``evorank report``: one self-contained HTML file describing a run.

Everything is inline: plots are SVG made with matplotlib (Agg backend, text drawn as paths so no
font or network is needed), styles are in a <style> block, and there is no JavaScript. Sections:
summary, fitness over iterations, the best program vs the seeds per collection, each island's
MAP-Elites grid, the best program's lineage with each step's diff, seen vs held-out (transfer)
metrics, outcomes and failure reasons over time, tokens and cost over time, and the top programs.

Held-out numbers are computed at report time with the same code paths as ``evorank eval``
(``evolve.transfer``) for the best program and the seeds: the seeds in this process, evolved code
through the static checks and the sandbox, as in the run.
"""
from __future__ import annotations

import html
import io
import json
import math
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from evorank.archive import Islands, ProgramRecord
from evorank.evolve.inspect_format import METRIC_LABELS, fmt, fmt_duration, program_diff, short_names
from evorank.evolve.inspect_queries import lineage, open_run, run_status, seed_records, top_programs
from evorank.evolve.transfer import transfer_data

BEST_COLOR = "#d62728"
SEED_COLORS = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]  # never the best's red


def esc(x) -> str:
    return html.escape(str(x), quote=True)


# -- plotting ----------------------------------------------------------------------------------------

class Plots:
    """Makes matplotlib figures and returns them as inline <svg> markup."""

    def __init__(self):
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        self.plt = plt
        self.n = 0

    def svg(self, fig) -> str:
        import matplotlib

        self.n += 1
        buf = io.StringIO()
        # A distinct salt per figure keeps the generated element ids unique within the page.
        with matplotlib.rc_context({"svg.hashsalt": f"evorank-fig-{self.n}", "svg.fonttype": "path"}):
            fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        self.plt.close(fig)
        text = buf.getvalue()
        text = text[text.index("<svg"):]
        # matplotlib numbers its element ids per figure (figure_1, patch_1, glyph ids, ...): prefix them
        # so that several inline SVGs never share an id in one document.
        pre = f"f{self.n}-"
        text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{pre}{m.group(1)}"', text)
        text = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{pre}{m.group(1)})", text)
        return re.sub(r'(xlink:href|href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{pre}{m.group(2)}"', text)

    def figure(self, w=9.0, h=3.6, ncols=1, nrows=1, **kw):
        fig, axes = self.plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False, **kw)
        return fig, axes


def _proposals(programs: list[ProgramRecord]) -> list[ProgramRecord]:
    return sorted((p for p in programs if p.iteration > 0 and p.operator not in ("seed", "migration")),
                  key=lambda p: (p.iteration, p.id))


def plot_fitness(P: Plots, programs, seeds: dict[str, ProgramRecord]) -> str:
    props = _proposals(programs)
    fig, ax = P.figure(9, 3.8)
    ax = ax[0][0]
    acc = [p for p in props if p.status == "accepted" and p.fitness is not None]
    xs = [p.iteration for p in acc]
    ys = [p.fitness for p in acc]
    if acc:
        ax.scatter(xs, ys, s=10, color="#9aa5b1", alpha=0.7, label="accepted program", zorder=2)
    seed_best = max((s.fitness for s in seeds.values() if s.fitness is not None), default=None)
    # best so far (seeds count from iteration 0) and the running median of the accepted programs
    best, best_x, best_y = seed_best, [0], [seed_best] if seed_best is not None else [None]
    window = max(5, len(acc) // 10)
    med_x, med_y = [], []
    for i, p in enumerate(acc):
        if best is None or p.fitness > best:
            best = p.fitness
        best_x.append(p.iteration)
        best_y.append(best)
        med_x.append(p.iteration)
        med_y.append(statistics.median(ys[max(0, i - window + 1): i + 1]))
    last_it = max([p.iteration for p in props], default=0)
    if best is not None:
        best_x.append(last_it)
        best_y.append(best)
        ax.step(best_x, best_y, where="post", color=BEST_COLOR, lw=2, label="best so far", zorder=3)
    if med_x:
        ax.plot(med_x, med_y, color="#1f77b4", lw=1.5, label=f"median of last {window} accepted", zorder=3)
    for i, (name, s) in enumerate(seeds.items()):
        if s.fitness is not None:
            ax.axhline(s.fitness, color=SEED_COLORS[i % len(SEED_COLORS)], ls="--", lw=1, label=f"seed {name}")
    failed = [p.iteration for p in props if p.status != "accepted"]
    if failed and acc:
        lo = min(ys + [s.fitness for s in seeds.values() if s.fitness is not None])
        ax.scatter(failed, [lo] * len(failed), marker="|", color="#d62728", alpha=0.35, s=30,
                   label="not accepted (rug)", zorder=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("fitness")
    ax.grid(alpha=0.3)
    if not props:
        ax.text(0.5, 0.5, "no proposals yet", transform=ax.transAxes, ha="center", va="center", color="#666")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return P.svg(fig)


def plot_collections(P: Plots, best: ProgramRecord, seeds: dict[str, ProgramRecord]) -> str:
    colls = list(best.metrics)
    labels = short_names(colls)
    metrics = ["ndcg@10", "recall@100"]
    fig, axes = P.figure(max(6.0, 1.1 * len(colls) + 3), 3.6, ncols=2)
    entries = [(f"best #{best.id}", best, BEST_COLOR)] + [
        (f"seed {n}", s, SEED_COLORS[i % len(SEED_COLORS)]) for i, (n, s) in enumerate(seeds.items())
        if s.code_hash != best.code_hash
    ]
    width = 0.8 / len(entries)
    for ax, metric in zip(axes[0], metrics):
        for j, (label, rec, color) in enumerate(entries):
            vals = [rec.metrics.get(c, {}).get(metric) or 0.0 for c in colls]
            ax.bar([i + (j - (len(entries) - 1) / 2) * width for i in range(len(colls))], vals, width,
                   label=label, color=color)
        ax.set_xticks(range(len(colls)))
        ax.set_xticklabels([labels[c] for c in colls], rotation=30, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return P.svg(fig)


def _bin_labels(dim) -> list[str]:
    e = dim.edges

    def f(x):
        return f"{x:g}"

    return [f"<{f(e[0])}"] + [f"{f(a)}–{f(b)}" for a, b in zip(e, e[1:])] + [f"≥{f(e[-1])}"]


def plot_grids(P: Plots, islands: Islands, spec) -> str:
    import numpy as np

    dims = spec.dimensions
    n = islands.n_islands
    fig, axes = P.figure(min(5.0 * n, 15), 4.2, ncols=n)
    fits = [r.fitness for i in range(n) for r in islands.elites(i) if r.fitness is not None]
    vmin, vmax = (min(fits), max(fits)) if fits else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 1e-3, vmax + 1e-3
    im = None
    xdim = dims[1] if len(dims) > 1 else None
    ydim = dims[0]
    for i in range(n):
        ax = axes[0][i]
        shape = (ydim.n_bins, xdim.n_bins if xdim else 1)
        grid = np.full(shape, np.nan)
        for cell, rec in islands.cells(i).items():
            y, x = cell[0], (cell[1] if xdim else 0)
            if rec.fitness is not None and (math.isnan(grid[y, x]) or rec.fitness > grid[y, x]):
                grid[y, x] = rec.fitness  # extra dimensions: the best over them
        im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for (y, x), v in np.ndenumerate(grid):
            if not math.isnan(v):
                ax.text(x, y, f"{v:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if v < (vmin + vmax) / 2 else "black")
        ax.set_yticks(range(ydim.n_bins))
        ax.set_yticklabels(_bin_labels(ydim), fontsize=7)
        ax.set_ylabel(ydim.name)
        if xdim:
            ax.set_xticks(range(xdim.n_bins))
            ax.set_xticklabels(_bin_labels(xdim), fontsize=7, rotation=30, ha="right")
            ax.set_xlabel(xdim.name)
        else:
            ax.set_xticks([])
        ax.set_title(f"island {i}: {len(islands.elites(i))} elites", fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=[a for a in axes[0]], label="fitness", shrink=0.85)
    return P.svg(fig)


def outcome_of(p: ProgramRecord) -> str:
    if p.status == "accepted":
        return "accepted"
    if p.status == "duplicate":
        return "duplicate"
    if p.status == "rejected_cascade":
        return "cut by cascade"
    return "failed: " + (p.failure_reason or "unknown").split(":")[0]


def plot_outcomes(P: Plots, programs) -> str:
    props = _proposals(programs)
    fig, ax = P.figure(9, 3.4)
    ax = ax[0][0]
    if not props:
        ax.text(0.5, 0.5, "no proposals yet", transform=ax.transAxes, ha="center", va="center", color="#666")
        ax.set_axis_off()
        return P.svg(fig)
    last = max(p.iteration for p in props)
    n_buckets = min(25, last)
    size = math.ceil(last / n_buckets)
    kinds = Counter(outcome_of(p) for p in props)
    order = ["accepted"] + [k for k, _ in kinds.most_common() if k != "accepted"]
    if len(order) > 9:
        order = order[:8] + ["other"]
    counts = {k: [0] * n_buckets for k in order}
    for p in props:
        k = outcome_of(p)
        k = k if k in counts else "other"
        counts[k][min((p.iteration - 1) // size, n_buckets - 1)] += 1
    xs = [b * size + 1 for b in range(n_buckets)]
    bottom = [0] * n_buckets
    colors = {"accepted": "#2ca02c", "duplicate": "#9aa5b1", "cut by cascade": "#bcbd22"}
    others = iter(["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#1f77b4"])
    for k in order:
        ax.bar(xs, counts[k], width=size * 0.9, align="edge", bottom=bottom, label=k,
               color=colors.get(k) or next(others))
        bottom = [a + b for a, b in zip(bottom, counts[k])]
    ax.set_xlabel(f"iteration (bins of {size})")
    ax.set_ylabel("proposals")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return P.svg(fig)


def plot_cost(P: Plots, programs) -> str:
    props = _proposals(programs)
    fig, axes = P.figure(9, 3.2, ncols=2)
    tok_ax, cost_ax = axes[0]
    xs, p_tok, c_tok, cost = [], [], [], []
    tp = tc = usd = 0.0
    for p in props:
        tp += p.prompt_tokens or 0
        tc += p.completion_tokens or 0
        usd += p.cost_usd or 0.0
        xs.append(p.iteration)
        p_tok.append(tp)
        c_tok.append(tc)
        cost.append(usd)
    if xs:
        tok_ax.stackplot(xs, p_tok, c_tok, labels=["prompt", "completion"], colors=["#1f77b4", "#ff7f0e"], alpha=0.8)
        tok_ax.legend(fontsize=8, loc="upper left")
        cost_ax.plot(xs, cost, color="#2ca02c", lw=2)
    if not (tp or tc):
        tok_ax.text(0.5, 0.5, "no LLM tokens (offline proposer)", transform=tok_ax.transAxes, ha="center",
                    va="center", color="#666")
    if not usd:
        cost_ax.text(0.5, 0.5, "no LLM cost recorded", transform=cost_ax.transAxes, ha="center", va="center",
                     color="#666")
    tok_ax.set_title("cumulative tokens", fontsize=10)
    cost_ax.set_title("cumulative cost (USD)", fontsize=10)
    for ax in (tok_ax, cost_ax):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    return P.svg(fig)


# -- transfer ------------------------------------------------------------------------------------------

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
                gain = f" <span class=gain>({(v / ref - 1) * 100:+.1f}%)</span>" if v is not None and ref else ""
                cells.append(f"<td class=num>{fmt(v)}{gain}</td>")
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
.gain { color: #2c7a3f; font-size: 0.85em; }
.up { color: #2c7a3f; } .down { color: #b3261e; }
.note { color: #5b6673; font-size: 0.9em; } .warn { color: #8a5a00; background: #fff7e0; padding: 6px 10px; border-radius: 4px; }
figure { margin: 8px 0 16px; } figure svg { max-width: 100%; height: auto; }
.wide { overflow-x: auto; max-width: 100%; }
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
    head = ("<tr><th>#</th><th>id</th><th>operator</th><th>island</th><th>iteration</th><th>fitness</th><th>latency</th>"
            + "".join(f"<th title='{esc(c)}'>{esc(labels[c])}<br>nDCG@10 / R@100</th>" for c in colls) + "</tr>")
    rows = []
    for i, r in enumerate(recs, 1):
        op = r.operator + (f" ({r.features.get('seed_name')})" if r.operator == "seed" else "")
        gain = (f" <span class=gain>({(r.fitness / bm25.fitness - 1) * 100:+.2f}%)</span>"
                if bm25 and bm25.fitness and r.fitness is not None and r.id != bm25.id else "")
        cells = "".join(f"<td class=num>{fmt(r.metrics.get(c, {}).get('ndcg@10'))} / "
                        f"{fmt(r.metrics.get(c, {}).get('recall@100'))}</td>" for c in colls)
        lat = f"{r.latency_ratio:.2f}×" if r.latency_ratio is not None else "-"
        rows.append(f"<tr><td class=num>{i}</td><td class=num>#{r.id}</td><td>{esc(op)}</td><td class=num>{r.island}</td>"
                    f"<td class=num>{r.iteration}</td><td class=num>{fmt(r.fitness)}{gain}</td>"
                    f"<td class=num>{lat}</td>{cells}</tr>")
    return f"<div class=wide><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"


def build_report(run_dir, out_path, heldout: str | None = "heldout", log=None) -> dict:
    """Write the report; returns a summary (path, best id, sections, transfer note)."""
    run_dir = Path(run_dir)
    with open_run(run_dir) as store:
        with store.read_snapshot():
            st = run_status(store)
            programs = store.programs()
            seeds = seed_records(store)
            islands = Islands.from_store(store)
            spec = store.grid_spec()
            best = islands.best()
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
    if best:
        sections.append(("collections", "Best program vs the seeds, per collection",
                         f"<figure>{plot_collections(P, best, seeds)}</figure>"))
    sections.append(("grids", "MAP-Elites grids",
                     f"<figure>{plot_grids(P, islands, spec)}</figure><p class=note>Each cell shows the fitness "
                     f"of its elite; axes: {', '.join(esc(d.name) for d in spec.dimensions)}"
                     + (" (further dimensions collapsed to their best)" if len(spec.dimensions) > 2 else "")
                     + ".</p>"))
    if best:
        sections.append(("lineage", f"Lineage of the best program (#{best.id})", lineage_part))
    transfer = None
    if best:
        transfer = transfer_data(best, seeds, heldout, log=log)
        sections.append(("transfer", "Seen vs held-out collections (transfer)", transfer_html(transfer)))
    reasons = "".join(f"<tr><td>{esc(k)}</td><td class=num>{v}</td></tr>" for k, v in st["failure_reasons"].items())
    sections.append(("outcomes", "Outcomes and failure reasons over time",
                     f"<figure>{plot_outcomes(P, programs)}</figure>"
                     + (f"<table><thead><tr><th>reason</th><th>proposals</th></tr></thead><tbody>{reasons}</tbody></table>"
                        if reasons else "<p class=note>Every proposal was accepted.</p>")))
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
    gain = (f" <span class=gain>({(best.fitness / seed_best - 1) * 100:+.2f}% vs best seed)</span>"
            if best and seed_best else "")
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
