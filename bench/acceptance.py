"""The transfer acceptance benchmark: offline runs on the dev suite, their best programs against BM25 on dev and on
the held-out suite, with paired significance per collection and pooled, and what each best adds (explain).

Protocol, for each search (``--search LABEL=SITE``: an evorank tree to run, by the folder that makes it importable,
default ``new=`` this tree) and each seed S (``--seeds 0,1,2``):

1. ``nice -n 5 python -m evorank run --suite dev --llm offline --iterations N --seed S --out OUT/LABEL-sS --quiet``
   (skipped when OUT/LABEL-sS already holds the N proposals; resumed when it holds fewer). Wall time and the
   machine's load (``/proc/loadavg`` every 30 s, into OUT/LABEL-sS.load) are recorded.
2. ``evorank eval RUN:best --suite dev|heldout --compare bm25 --json`` with THIS tree: the run's best (chosen on
   validation among the best by train) sandboxed, and the BM25 seed, on every judged query; fitness ``rankevolve``
   (0.8 R@100 + 0.2 nDCG@10 per collection, R@100 on collections of 1,000+ documents, averaged). The held-out
   suite is measured here and nowhere else: nothing in a run reads it.
3. From the same command (``evaluators.significance``), per collection and pooled over the suite's queries, for
   nDCG@10 and R@100: the paired two-sided randomization test (sign flips of the per-query differences, 10,000
   resamples, exact for small collections), Holm-corrected over the suite's collections, and the paired t-test.
4. ``evorank explain`` of each best, on dev with its lineage and on the held-out suite.

Targets (printed with the numbers): held-out fitness and nDCG@10 (macro mean) >= 1.04x BM25 on the mean of the
seeds and >= 1.02x for every seed; no held-out collection's nDCG@10 below 0.97x BM25; each best better than BM25
on the pooled held-out queries (randomization p < 0.05) and significantly worse on no held-out collection after
Holm. Usage (the shared data as for ``evorank eval``; hours on 2 cores):

    nice -n 5 python bench/acceptance.py --out /tmp/acceptance --search base=/path/to/main-site --search new=
    python bench/acceptance.py --out /tmp/acceptance --search base=... --search new= --no-runs   # tables only
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

METRICS = ("ndcg@10", "recall@100")
ALPHA = 0.05


# -- the runs ------------------------------------------------------------------------------------------

def proposals_done(run_dir: Path) -> int:
    db = run_dir / "archive.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("SELECT COUNT(*) FROM programs WHERE iteration > 0 AND operator != 'migration'").fetchone()[0]


def sample_load(path: Path, stop: threading.Event, every_s: float = 30.0) -> None:
    with open(path, "a") as f:
        while not stop.is_set():
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {Path('/proc/loadavg').read_text().strip()}\n")
            f.flush()
            stop.wait(every_s)


def run_search(site: str, seed: int, iterations: int, suite: str, run_dir: Path) -> None:
    """One offline run with the tree at ``site`` (resumed when it exists), niced, its load sampled."""
    done = proposals_done(run_dir)
    if done >= iterations:
        return
    env = dict(os.environ, PYTHONPATH=site) if site else dict(os.environ)
    args = ["--resume", str(run_dir)] if done or (run_dir / "archive.sqlite").exists() else [
        "--suite", suite, "--llm", "offline", "--iterations", str(iterations), "--seed", str(seed),
        "--out", str(run_dir)]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_load, args=(run_dir.with_suffix(".load"), stop), daemon=True)
    sampler.start()
    print(f"running {run_dir.name}: evorank run {' '.join(args)}", flush=True)
    try:
        subprocess.run(["nice", "-n", "5", sys.executable, "-m", "evorank", "run", *args, "--quiet"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
    finally:
        stop.set()
        sampler.join()


def run_facts(run_dir: Path) -> dict:
    """Wall time of the run's sessions (from its stop events) and the load sampled while it ran."""
    with sqlite3.connect(f"file:{run_dir / 'archive.sqlite'}?mode=ro", uri=True) as con:
        stops = [json.loads(r[0]) for r in con.execute("SELECT data FROM events WHERE kind = 'stop' ORDER BY id")]
        cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    load = []
    path = run_dir.with_suffix(".load")
    if path.exists():
        load = [float(line.split()[1]) for line in path.read_text().splitlines() if len(line.split()) > 1]
    return {"wall_s": sum(s.get("elapsed_s", 0.0) for s in stops), "sessions": len(stops),
            "proposals": proposals_done(run_dir), "fitness": cfg.get("fitness", "rankevolve"),
            "load_mean": float(np.mean(load)) if load else None, "load_max": max(load) if load else None}


# -- evaluation and statistics ----------------------------------------------------------------------

def eval_compare(run_dir: Path, suite: str) -> dict:
    """``evorank eval RUN:best --suite SUITE --compare bm25 --json`` (sandboxed, every judged query), with THIS
    tree's evaluator: the best's and BM25's metrics and the paired tests per collection and pooled."""
    out = subprocess.run([sys.executable, "-m", "evorank", "eval", f"{run_dir}:best", "--suite", suite,
                          "--compare", "bm25", "--json"], capture_output=True, text=True)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise RuntimeError(f"evorank eval {run_dir}:best --suite {suite} failed: {out.stderr[-2000:]}")
    data = json.loads(out.stdout)
    cmp = data["compare"]
    sig = cmp["significance"]
    rows = {}
    for c, tests in sig["collections"].items():
        rows[c] = {"n": tests["ndcg@10"]["n"], "best": {m: tests[m]["mean"] for m in METRICS},
                   "bm25": {m: tests[m]["baseline_mean"] for m in METRICS},
                   "fitness_ratio": cmp["collections"][c]["ratio"], "tests": {m: tests[m] for m in METRICS}}
    macro = {m: (np.mean([r["best"][m] for r in rows.values()]), np.mean([r["bm25"][m] for r in rows.values()]))
             for m in METRICS}
    return {"collections": rows, "pooled": sig["pooled"], "fitness_best": data["fitness"],
            "fitness_bm25": cmp["reference_fitness"], "fitness_ratio": data["fitness"] / cmp["reference_fitness"],
            "ndcg_ratio": float(macro["ndcg@10"][0] / macro["ndcg@10"][1]),
            "recall_ratio": float(macro["recall@100"][0] / macro["recall@100"][1])}


def explained(run_dir: Path, addresses: list[str], lineage: bool) -> dict:
    from evorank.evolve.inspection.explain import explain, explain_json, subject_of

    subject, _ = subject_of(f"{run_dir}:best")
    return explain_json(explain(subject, addresses, lineage_steps=lineage))


# -- printing -------------------------------------------------------------------------------------------

def short(address: str) -> str:
    from evorank.evolve.inspection.format import short_name

    return short_name(address)


def print_table(title: str, cmp: dict) -> None:
    print(f"\n{title}: fitness {cmp['fitness_best']:.4f} vs BM25 {cmp['fitness_bm25']:.4f} "
          f"({cmp['fitness_ratio']:.4f}x), nDCG@10 macro {cmp['ndcg_ratio']:.4f}x, R@100 macro {cmp['recall_ratio']:.4f}x")
    print(f"  {'collection':<11} {'q':>4} {'nDCG@10':>7} {'BM25':>7} {'ratio':>6} {'p':>7} {'p_holm':>7} "
          f"{'R@100':>7} {'BM25':>7} {'ratio':>6} {'p':>7} {'p_holm':>7} {'fit.ratio':>9}")
    for c, r in cmp["collections"].items():
        cells = []
        for m in METRICS:
            t = r["tests"][m]
            ratio = r["best"][m] / r["bm25"][m] if r["bm25"][m] else float("nan")
            cells.append(f"{r['best'][m]:7.4f} {r['bm25'][m]:7.4f} {ratio:6.3f} {t['p_randomization']:7.4f} "
                         f"{t['p_holm']:7.4f}")
        print(f"  {short(c):<11} {r['n']:>4} {'  '.join(cells)} {r['fitness_ratio']:9.4f}")
    pooled = "  ".join(f"{m} delta {t['delta']:+.4f} p {t['p_randomization']:.4g} (t-test {_p(t['p_ttest'])})"
                       for m, t in cmp["pooled"].items())
    print(f"  pooled over {sum(r['n'] for r in cmp['collections'].values())} queries: {pooled}")


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def print_explain(label: str, data: dict) -> None:
    cols = data["collections"]
    print(f"\n{label}: what the best adds over {data['seed']} (nDCG@10 / R@100 when the part is taken out: "
          f"program minus without it)")
    gain = data["gain_over_seed"]
    print(f"  {'part':<34} " + " ".join(f"{short(c):>15}" for c in cols) + f" {'mean':>15}")
    rows = [("the program vs its seed", gain)] + [(f"{p['name'][:24]} ({p['kind']})", p["contribution"])
                                                  for p in data["parts"]]
    for name, diff in rows:
        if diff is None:
            print(f"  {name:<34} failed")
            continue
        print(f"  {name:<34} " + " ".join(f"{diff[k]['ndcg@10']:+.3f}/{diff[k]['recall@100']:+.3f}".rjust(15)
                                           for k in (*cols, "mean")))
    if data.get("lineage"):
        steps = [s for s in data["lineage"] if s.get("change")]
        top = sorted(steps, key=lambda s: -abs(s["change"]["mean"]["fitness"]))[:5]
        print(f"  lineage: {len(data['lineage'])} programs; largest steps (mean fitness change): "
              + ", ".join(f"#{s['id']} {s['operator']} {s['change']['mean']['fitness']:+.4f}" for s in top))


# -- main -----------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder of the runs and results")
    ap.add_argument("--search", action="append", default=[],
                    help="LABEL=SITE: run the search of the evorank importable from SITE (empty: this tree)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--suite", default="dev")
    ap.add_argument("--heldout", default="heldout")
    ap.add_argument("--no-runs", dest="no_runs", action="store_true", help="only evaluate runs already there")
    ap.add_argument("--no-explain", dest="no_explain", action="store_true")
    args = ap.parse_args()
    from evorank.evaluators.data.suites import resolve_collections

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    searches = dict(s.split("=", 1) for s in (args.search or ["new="]))
    seeds = [int(s) for s in args.seeds.split(",")]
    for label, site in searches.items():
        for s in seeds:
            if not args.no_runs:
                run_search(site, s, args.iterations, args.suite, out / f"{label}-s{s}")
    suites = {"dev": resolve_collections(args.suite, None), "heldout": resolve_collections(args.heldout, None)}
    results = {"date": time.strftime("%Y-%m-%d"), "iterations": args.iterations, "searches": {}}
    for label in searches:
        per_seed = {}
        for s in seeds:
            run_dir = out / f"{label}-s{s}"
            if proposals_done(run_dir) < args.iterations:
                print(f"{run_dir}: not complete ({proposals_done(run_dir)} proposals), skipped")
                continue
            entry = {"run": str(run_dir), "facts": run_facts(run_dir)}
            for name, suite in (("dev", args.suite), ("heldout", args.heldout)):
                entry[name] = eval_compare(run_dir, suite)
            if not args.no_explain:
                entry["explain"] = {"dev": explained(run_dir, suites["dev"], True),
                                    "heldout": explained(run_dir, suites["heldout"], False)}
            per_seed[s] = entry
            f = entry["facts"]
            print(f"\n=== {label} seed {s}: {run_dir} ({f['proposals']} proposals, fitness {f['fitness']}, "
                  f"wall {f['wall_s'] / 60:.1f} min over {f['sessions']} session(s), load mean "
                  f"{f['load_mean'] if f['load_mean'] is None else round(f['load_mean'], 2)} max {f['load_max']})")
            print_table(f"{label} s{s} dev", entry["dev"])
            print_table(f"{label} s{s} held-out", entry["heldout"])
            if "explain" in entry:
                print_explain(f"{label} s{s} dev", entry["explain"]["dev"])
                print_explain(f"{label} s{s} held-out", entry["explain"]["heldout"])
        results["searches"][label] = per_seed
        summarize(label, per_seed)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {out / 'results.json'}")


def summarize(label: str, per_seed: dict) -> None:
    if not per_seed:
        return
    held = {s: e["heldout"] for s, e in per_seed.items()}
    fit = [h["fitness_ratio"] for h in held.values()]
    ndcg = [float(h["ndcg_ratio"]) for h in held.values()]
    worst = {s: min(r["best"]["ndcg@10"] / r["bm25"]["ndcg@10"] for r in h["collections"].values())
             for s, h in held.items()}
    pooled = {s: h["pooled"]["ndcg@10"] for s, h in held.items()}
    worse = {s: [short(c) for c, r in h["collections"].items() for m in METRICS
                 if r["tests"][m]["p_holm"] < ALPHA and r["tests"][m]["delta"] < 0] for s, h in held.items()}
    print(f"\n##### {label}: acceptance on the held-out suite")
    print(f"  fitness ratio per seed {[round(x, 4) for x in fit]}, mean {np.mean(fit):.4f} (target >= 1.04 mean, "
          f">= 1.02 each): {'met' if np.mean(fit) >= 1.04 and min(fit) >= 1.02 else 'NOT met'}")
    print(f"  nDCG@10 ratio per seed {[round(x, 4) for x in ndcg]}, mean {np.mean(ndcg):.4f} (same targets): "
          f"{'met' if np.mean(ndcg) >= 1.04 and min(ndcg) >= 1.02 else 'NOT met'}")
    print(f"  worst collection nDCG@10 ratio per seed {[round(x, 4) for x in worst.values()]} (target >= 0.97): "
          f"{'met' if min(worst.values()) >= 0.97 else 'NOT met'}")
    shown = ", ".join(f"{t['p_randomization']:.4g} ({t['delta']:+.4f})" for t in pooled.values())
    ok = all(t["p_randomization"] < ALPHA and t["delta"] > 0 for t in pooled.values())
    print(f"  pooled nDCG@10 randomization p (delta) per seed {shown} (target < 0.05, better): "
          f"{'met' if ok else 'NOT met'}")
    print(f"  significantly worse after Holm (nDCG@10 or R@100) per seed {worse} (target: none): "
          f"{'met' if not any(worse.values()) else 'NOT met'}")


if __name__ == "__main__":
    main()
