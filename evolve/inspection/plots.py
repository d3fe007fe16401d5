"""The plots of ``evorank report``, each returned as inline SVG markup (matplotlib, Agg backend, text drawn as
paths: no font and no network needed): fitness over iterations; train, validation and held-out fitness of the
run's best over iterations; the best program vs the seeds per collection; each island's MAP-Elites grid (a
two-dimensional view, coloured by the gain over the best seed on a diverging scale); outcomes and failure
reasons over time; tokens and cost over time; per-query differences between two programs, per collection.
"""
from __future__ import annotations

import io
import math
import re
import statistics
from collections import Counter

from evorank.archive import Islands, ProgramRecord
from .format import METRIC_LABELS, axis_title, bin_labels, short_names

BEST_COLOR = "#d62728"
SEED_COLORS = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]  # never the best's red


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


def plot_grids(P: Plots, islands: Islands, spec, seed_best: float | None) -> str:
    """Each island's grid seen along its first two dimensions (the best over the others), every occupied cell
    coloured by its elite's gain over the best seed on a diverging scale centred on 0 (red: better, blue: worse),
    so a +0.01% cell and a -0.01% cell do not look alike by accident, and labelled with the elite's fitness."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    dims = spec.dimensions
    n = islands.n_islands
    fig, axes = P.figure(min(5.0 * n, 15), 4.4, ncols=n)
    base = seed_best or 1.0
    gains = [(r.fitness / base - 1) * 100 for i in range(n) for r in islands.elites(i) if r.fitness is not None]
    span = max([abs(g) for g in gains] + [0.5])  # at least +-0.5%: tiny differences stay pale
    cmap = P.plt.get_cmap("RdBu_r")
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
                grid[y, x] = rec.fitness  # further dimensions: the best over them
        gain = (grid / base - 1) * 100
        im = ax.imshow(gain, origin="lower", cmap=cmap, vmin=-span, vmax=span, aspect="auto")
        for (y, x), v in np.ndenumerate(grid):
            if not math.isnan(v):
                r, g, b, _ = cmap((gain[y, x] + span) / (2 * span))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(x, y, f"{v:.4f}", ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
        ax.set_yticks(range(ydim.n_bins))
        ax.set_yticklabels(bin_labels(ydim), fontsize=7)
        ax.set_ylabel(axis_title(ydim), fontsize=8)
        if xdim:
            ax.set_xticks(range(xdim.n_bins))
            ax.set_xticklabels(bin_labels(xdim), fontsize=7, rotation=30, ha="right")
            ax.set_xlabel(axis_title(xdim), fontsize=8)
        else:
            ax.set_xticks([])
        ax.set_title(f"island {i}: {len(islands.elites(i))} elites in {len(islands.cells(i))} cells", fontsize=10)
    if im is not None:
        bar = fig.colorbar(im, ax=[a for a in axes[0]], shrink=0.85,
                           format=FuncFormatter(lambda v, _: f"{v:+.1f}%"))
        bar.set_label("gain vs best seed")
    return P.svg(fig)


def plot_validation(P: Plots, programs, heldout: list[dict]) -> str:
    """The run's best so far (by train fitness) over iterations: its train and validation fitness, and the
    held-out fitness of each best that was measured there (relative to BM25 measured there too)."""
    props = [p for p in sorted(programs, key=lambda p: (p.iteration, p.id))
             if p.status == "accepted" and p.fitness is not None and p.operator != "migration"]
    xs, train, val, best = [], [], [], None
    for p in props:
        if best is None or p.fitness > best.fitness:
            best = p
        xs.append(p.iteration)
        train.append(best.fitness)
        v = best.features.get("val_fitness")
        val.append(v if isinstance(v, (int, float)) else math.nan)
    fig, axes = P.figure(9.0, 3.4)
    ax = axes[0][0]
    ax.step(xs, train, where="post", color=BEST_COLOR, lw=1.8, label="train (selects)")
    if any(not math.isnan(v) for v in val):
        ax.step(xs, val, where="post", color="#1f77b4", lw=1.5, label="validation (chooses the reported best)")
    if heldout:
        hx = [h["iteration"] for h in heldout]
        hy = [h["fitness"] * (train[0] / h["reference_fitness"]) if h.get("reference_fitness") and train else
              math.nan for h in heldout]
        ax.plot(hx, hy, "o-", color="#2ca02c", ms=4, lw=1,
                label="held-out, scaled to the seeds' train fitness (never used)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("fitness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
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
    # a curve that stays at 0 says nothing: the axes say so in words instead (never both over each other)
    if tp or tc:
        tok_ax.stackplot(xs, p_tok, c_tok, labels=["prompt", "completion"], colors=["#1f77b4", "#ff7f0e"], alpha=0.8)
        tok_ax.legend(fontsize=8, loc="upper left")
    else:
        tok_ax.text(0.5, 0.5, "no LLM tokens (offline proposer)", transform=tok_ax.transAxes, ha="center",
                    va="center", color="#666")
        tok_ax.set_yticks([])
    if usd:
        cost_ax.plot(xs, cost, color="#2ca02c", lw=2)
    else:
        cost_ax.text(0.5, 0.5, "no LLM cost recorded", transform=cost_ax.transAxes, ha="center", va="center",
                     color="#666")
        cost_ax.set_yticks([])
    tok_ax.set_title("cumulative tokens", fontsize=10)
    cost_ax.set_title("cumulative cost (USD)", fontsize=10)
    for ax in (tok_ax, cost_ax):
        if xs:  # the run's iterations, drawn or not
            ax.set_xlim(0, max(xs))
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    return P.svg(fig)


def plot_per_query(P: Plots, ours: dict[str, dict], baseline: dict[str, dict], metric: str = "ndcg@10",
                   label: str = "best", baseline_label: str = "BM25") -> str:
    """Per collection, every query's ``metric`` difference (ours - baseline), sorted: green bars where the program
    wins, red where it loses; a gain carried by a few queries shows as a few tall bars, a broad one as a wide band."""
    import numpy as np

    colls = [c for c in ours if c in baseline]
    names = short_names(colls)
    ncols = min(4, max(1, len(colls)))
    nrows = max(1, math.ceil(len(colls) / ncols))
    fig, axes = P.figure(2.6 * ncols + 0.6, 2.3 * nrows, ncols=ncols, nrows=nrows, sharey=True)
    for i in range(nrows * ncols):
        ax = axes[i // ncols][i % ncols]
        if i >= len(colls):
            ax.set_axis_off()
            continue
        c = colls[i]
        d = np.sort(np.asarray(ours[c][metric], dtype=float) - np.asarray(baseline[c][metric], dtype=float))[::-1]
        x = np.arange(len(d))
        ax.fill_between(x, 0, np.where(d > 0, d, 0), step="mid", color="#2c7a3f", lw=0)
        ax.fill_between(x, 0, np.where(d < 0, d, 0), step="mid", color="#b3261e", lw=0)
        ax.axhline(0, color="#444", lw=0.6)
        wins, losses = int((d > 1e-9).sum()), int((d < -1e-9).sum())
        ax.set_title(f"{names[c]}: {wins} up, {losses} down of {len(d)}\nmean {d.mean():+.4f}", fontsize=8.5)
        ax.set_xlim(-0.5, max(len(d) - 0.5, 0.5))
        ax.set_xticks([])
        ax.grid(axis="y", alpha=0.3)
        if i % ncols == 0:
            ax.set_ylabel(f"Δ {METRIC_LABELS.get(metric, metric)} per query\n{label} - {baseline_label}", fontsize=8)
    fig.tight_layout()
    return P.svg(fig)
