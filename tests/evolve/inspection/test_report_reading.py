"""What a reader of `evorank report` sees: losses in red and gains in green, MAP-Elites axes in rounded values with
their units, a top-programs table that fits the page, and no message printed over a plotted line."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evorank.archive import FeatureDim, ProgramRecord
from evorank.evolve.inspection import format, report
from evorank.evolve.inspection.plots import Plots, plot_cost

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)


def test_changes_are_coloured_by_their_sign():
    assert report.change_html(0.93, 1.0) == " <span class=loss>(-7.0%)</span>"
    assert report.change_html(1.07, 1.0) == " <span class=gain>(+7.0%)</span>"
    assert report.change_html(1.0001, 1.0) == " <span class=same>(+0.0%)</span>"
    assert report.change_html(None, 1.0) == report.change_html(1.0, 0) == ""


def test_seen_vs_held_out_colours_a_loss_as_a_loss():
    m = {"c": {"ndcg@10": 0.3, "recall@100": 0.5}}
    t = {"programs": ["best #9", "seed bm25"], "seen_collections": ["c"], "heldout_collections": ["h"],
         "seen": {"best #9": {"c": {"ndcg@10": 0.33, "recall@100": 0.5}}, "seed bm25": m},
         "heldout": {"best #9": {"h": {"ndcg@10": 0.279, "recall@100": 0.5}}, "seed bm25": {"h": m["c"]}},
         "missing": {}, "errors": {}, "note": None, "heldout_spec": "h", "heldout_flag": "--datasets h"}
    page = report.transfer_html(t)
    assert "<span class=gain>(+10.0%)</span>" in page
    assert "<span class=loss>(-7.0%)</span>" in page
    assert not re.search(r"class=gain>\(-", page)


def test_grid_axes_read_in_rounded_values_with_units():
    balance = FeatureDim("balance", (-0.00614527, 0.0, 0.00189297, 0.00793193))
    assert format.bin_labels(balance) == ["< −0.61% precision-leaning", "−0.61% .. 0 precision-leaning",
                                   "0 .. +0.19% recall-leaning", "+0.19% .. +0.79% recall-leaning",
                                   "≥ +0.79% recall-leaning"]
    assert format.bin_labels(FeatureDim("evidence", (1.0, 2.0, 3.0))) == ["0", "1", "2", "3+"]
    assert format.bin_labels(FeatureDim("complexity", (37.23, 112.8, 250.01), log=True)) == [
        "< 37", "37 .. 110", "110 .. 250", "≥ 250"]
    latency = format.bin_labels(FeatureDim("latency_ratio", (0.8123, 2.0), log=True))
    assert latency == ["< 0.81×", "0.81× .. 2.0×", "≥ 2.0×"]
    close = format.bin_labels(FeatureDim("latency_ratio", (1.001, 1.002), log=True))  # more digits only where needed
    assert close == ["< 1.001×", "1.001× .. 1.002×", "≥ 1.002×"]


class FigureKeeper(Plots):
    def svg(self, fig) -> str:
        self.kept = fig
        return ""


def proposal(i: int, tokens: int, cost: float) -> ProgramRecord:
    return ProgramRecord(code="x", operator="offline", island=0, generation=i, iteration=i, status="accepted",
                         prompt_tokens=tokens, completion_tokens=tokens, cost_usd=cost)


@pytest.mark.parametrize("tokens,cost", [(0, 0.0), (100, 0.0), (100, 0.01)])
def test_no_message_over_a_plotted_line(tokens, cost):
    P = FigureKeeper()
    plot_cost(P, [proposal(i, tokens, cost) for i in range(1, 6)])
    for ax in P.kept.axes:
        drawn = ax.lines or ax.collections
        said = [t.get_text() for t in ax.texts]
        assert bool(drawn) != bool(said), (ax.get_title(), said)
    token_ax, cost_ax = P.kept.axes
    assert bool(cost_ax.lines) == bool(cost) and bool(token_ax.collections) == bool(tokens)


def wide_top_page(n_collections: int) -> str:
    colls = [f"beir/collection{i}/test" for i in range(n_collections - 2)] + ["local:cranfield", "local:cisi"]
    recs = []
    for i in range(10):
        r = ProgramRecord(code="x", operator="crossover", island=1, generation=i, iteration=100 + i)
        r.id, r.fitness, r.latency_ratio = 1000 + i, 0.5 + i / 100, 1.23
        r.metrics = {c: {"ndcg@10": 0.41234, "recall@100": 0.75123} for c in colls}
        r.features = {"val_fitness": 0.51}
        recs.append(r)
    bm25 = ProgramRecord(code="y", operator="seed", island=0, generation=0, iteration=0)
    bm25.id, bm25.fitness = 1, 0.52
    measure = ("<script>const t = document.querySelector('table'); const main = document.querySelector('main');"
               "document.body.setAttribute('data-fits', String(t.getBoundingClientRect().width <= "
               "main.clientWidth));</script>")
    return (f"<!DOCTYPE html><html><head><style>{report.CSS}</style></head><body>"
            f"<main>{report.top_html(recs, bm25)}</main>"
            f"{measure}</body></html>")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
def test_the_top_programs_table_fits_the_page(tmp_path):
    """Eight collections (a dev-suite run) in a 1280-pixel window: the table fits the page's width."""
    page = tmp_path / "top.html"
    page.write_text(wide_top_page(8), encoding="utf-8")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-fits="(\w+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    assert found.group(1) == "true"
