"""`evorank report`: one self-contained HTML file, checked as text and in a real headless browser."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evorank.archive import RunStore
from evorank.evolve.cli.main import main

from synthetic_run import make_collections, make_run

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn_report")
    colls = make_collections(root)
    _, recs = make_run(root / "run", colls)
    return {"run": root / "run", "recs": recs, "colls": colls, "root": root}


@pytest.fixture(scope="module")
def report(syn):
    """The report with a 'held-out' set that is the demo collection, which the run also evolved on:
    the transfer numbers computed at report time must then equal the archived ones."""
    out = syn["root"] / "report.html"
    assert main(["report", str(syn["run"]), "-o", str(out), "--heldout", "builtin:demo"]) == 0
    return out


def test_report_is_self_contained_and_complete(syn, report):
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing to fetch: no scripts, stylesheets, images or frames from anywhere
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page, re.I) and "@import" not in page
    assert page.count("<svg") == 7  # fitness, collections, per-query (seen, held-out), grids, outcomes, cost
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "inline SVGs share element ids"
    assert set(re.findall(r'url\(#([^)]+)\)', page)) <= set(ids)
    for sid in ("fitness", "collections", "significance", "grids", "lineage", "transfer", "outcomes", "cost", "top",
                "config"):
        assert f"<section id='{sid}'>" in page, sid
    recs = syn["recs"]
    best = recs["k1"]
    assert f"Lineage of the best program (#{best.id})" in page
    assert "-K1 = 0.9" in page and "+K1 = 1.1" in page  # the lineage step's diff
    # what the best adds over its seed, measured now: its one part, the changed constant
    explained = re.search(r"<section id='explain'>.*?</section>", page, re.S).group(0)
    assert "<th class=row>K1</th><td>constant</td><td><code>1.1 (seed: 0.9)</code>" in explained
    assert "forbidden:import os" in page and "syntax_error" in page
    assert "9,600" in page and "$0.0080" in page
    # transfer table: held-out (= demo) numbers evaluated now equal the archived demo metrics
    m = re.search(r"<table class=transfer>.*?</table>", page, re.S).group(0)
    row = re.search(rf"<th class=row>best #{best.id}</th>(.*?)</tr>", m, re.S).group(1)
    cells = [float(x) for x in re.findall(r"<td class=num>([0-9.]+)", row)]
    demo = best.metrics["builtin:demo"]
    assert cells[2:] == [round(demo["ndcg@10"], 4), round(demo["recall@100"], 4)]
    seen_ndcg = sum(v["ndcg@10"] for v in best.metrics.values()) / 2
    assert cells[0] == round(seen_ndcg, 4)
    assert "seed bm25" in m and "seed ql_dirichlet" in m
    assert "evorank eval RUN:best --datasets builtin:demo" in page


def test_report_tests_the_best_program_against_bm25_per_query(syn, report):
    """The best program's section has the paired significance table against BM25 on the seen and the held-out
    collections (per collection for nDCG@10 and R@100, pooled where there are several) and a per-query plot for each
    set; the means in it are the programs' metrics measured again in the sandbox."""
    page = report.read_text()
    part = re.search(r"<section id='significance'>(.*?)</section>", page, re.S).group(1)
    assert part.count("<table class=sig>") == 2 and part.count("<svg") == 2
    assert "p Holm" in part and "W/T/L" in part and "per-query nDCG@10 differences" in part
    seen = part[part.index("<h3>Seen collections"):part.index("<h3>Held-out collections")]
    best, bm25 = syn["recs"]["k1"], syn["recs"]["bm25"]
    row = re.search(r"<tr><td>demo</td><td>nDCG@10</td>(.*?)</tr>", seen).group(1)
    cells = re.findall(r"<td class=num>(?:<span[^>]*>)?([^<]+)", row)
    assert int(cells[0]) == 42
    assert float(cells[1]) == round(bm25.metrics["builtin:demo"]["ndcg@10"], 4)
    assert float(cells[2]) == round(best.metrics["builtin:demo"]["ndcg@10"], 4)
    assert "<b>all queries (pooled)</b></td><td>R@100</td><td class=num>45<" in seen  # 42 demo + 3 tiny queries


def test_report_without_transfer_data(syn, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(syn["run"]), "-o", str(out), "--no-transfer", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(out) and "skipped" in info["transfer_note"] and info["heldout_collections"] == []
    assert "Held-out evaluation was skipped" in out.read_text()
    assert "<section id='explain'>" not in out.read_text()  # no program is run
    assert main(["report", str(syn["run"]), "-o", str(out), "--heldout", "local:no-such-collection"]) == 0
    assert "Held-out data was not available" in out.read_text()
    assert "note: Held-out data was not available" in capsys.readouterr().out


def test_report_of_a_run_without_programs(tmp_path):
    RunStore.create(tmp_path / "empty", {"iterations": 3}, 0, synchronous="NORMAL").close()
    out = tmp_path / "empty.html"
    assert main(["report", str(tmp_path / "empty"), "-o", str(out)]) == 0
    page = out.read_text()
    for sid in ("fitness", "grids", "outcomes", "cost", "config"):
        assert f"<section id='{sid}'>" in page
    assert "<section id='transfer'>" not in page and "<section id='lineage'>" not in page
    assert "not started" in page and page.count("<svg") == 4


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_a_real_browser(report, tmp_path):
    """Headless Chromium loads the file, logs no console message (the page has no script, so any
    console line is an error: a failed load, a blocked resource), and paints a non-blank page whose
    DOM holds the report's sections; the screenshot is kept in test-artifacts/."""
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    url = report.resolve().as_uri()
    proc = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path)
    log = proc.stdout + proc.stderr
    assert shot.is_file(), log[-3000:]
    console = [ln for ln in log.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    assert not re.search(r"net::ERR_|Failed to load resource", log), log[-3000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2000)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50, "the page rendered blank"
    # the plots are painted: plenty of non-white, non-grey pixels (red best-so-far line, bars, heat map)
    px = np.asarray(img.resize((320, 500)), dtype=np.int16)
    vivid = int(((px.max(axis=2) - px.min(axis=2)) > 60).sum())
    assert vivid > 500, vivid
    dom = _chromium(["--dump-dom", url], tmp_path)
    assert "Fitness over iterations" in dom.stdout and "MAP-Elites grids" in dom.stdout
    assert dom.stdout.count("<svg") == 7
