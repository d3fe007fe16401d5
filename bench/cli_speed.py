"""What a fresh `evorank` process costs, side by side with bm25s doing the same job as a whole process.

Run by hand (not a test); every figure is the best of --repeats fresh processes:

1. `evorank --help`;
2. `evorank status RUN` on a small run made here with the offline mutator (`--iterations 4` on
   `local:adi`);
3. `evorank eval bm25 --datasets beir/scifact/test --in-process` from a warm cache (the index and the collection's
   queries/judgements cached by a first run), against a bm25s script that, as one fresh process,
   reads SciFact from the same ir_datasets files, tokenizes and stems it, indexes (Lucene BM25,
   k1=0.9, b=0.4), retrieves the top 1,000 for the 300 test queries and computes nDCG@10 and R@100.
   Target: ratio evorank / bm25s <= 1.
4. `evorank eval bm25 --suite quick` as it runs by default, in the sandbox, against the same with `--in-process`,
   from a warm cache, the two commands alternated --repeats times: median and best wall time and median CPU time
   (the command and its workers and jails) of each, and the differences of the medians. Target: the sandbox costs
   <= 0.3 s more wall time.

Needs IR_DATASETS_HOME (a writable copy of ../shared/ir_datasets) and EVORANK_DATA (../shared/datasets);
the evorank cache goes to a temporary folder.
Usage: python bench/cli_speed.py [--repeats 5] [--only-sandbox] [--baseline PYTHONPATH]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BM25S_SCRIPT = r'''
import io, json, sys, zipfile
import numpy as np
import Stemmer
import bm25s

with zipfile.ZipFile(sys.argv[1]) as z:
    corpus = [json.loads(line) for line in z.read("scifact/corpus.jsonl").decode().splitlines() if line.strip()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, z.read("scifact/queries.jsonl").decode().splitlines())}
    qrels = {}
    for line in z.read("scifact/qrels/test.tsv").decode().splitlines()[1:]:
        q, d, g = line.split("\t")
        if int(g) > 0:
            qrels.setdefault(q, {})[d] = int(g)
ids = [d["_id"] for d in corpus]
stemmer = Stemmer.Stemmer("english")
tokens = bm25s.tokenize([(d.get("title", "") + " " + d["text"]) for d in corpus], stopwords="en", stemmer=stemmer,
                        show_progress=False)
retriever = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
retriever.index(tokens, show_progress=False)
qids = [q for q in qrels if q in queries]
qtok = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
docs, scores = retriever.retrieve(qtok, k=1000, show_progress=False, n_threads=1)
ndcg, recall = [], []
for q, row in zip(qids, docs):
    ranked = [ids[i] for i in row]
    rel = qrels[q]
    gains = np.array([rel.get(d, 0) for d in ranked[:10]], dtype=float)
    ideal = np.sort(np.array(list(rel.values()), dtype=float))[::-1][:10]
    disc = 1 / np.log2(np.arange(2, 12))
    ndcg.append((gains * disc[:len(gains)]).sum() / (ideal * disc[:len(ideal)]).sum())
    recall.append(len(set(ranked[:100]) & set(rel)) / len(rel))
print(json.dumps({"ndcg@10": float(np.mean(ndcg)), "recall@100": float(np.mean(recall))}))
'''


def best_of(cmd: list[str], repeats: int, env: dict) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
    return min(times)


def alternated(cmds: dict[str, list[str]], repeats: int, env: dict) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each command, the commands run in turn ``repeats`` times (so that load drifts hit all
    alike); CPU is user + system time of the command and every process it waited for (workers, jails)."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
    for _ in range(repeats):
        for k, cmd in cmds.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[k].append((wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    return times


def sandbox_cost(evorank: list[str], repeats: int, env: dict, baseline: str | None = None) -> None:
    cmds = {"sandboxed (default)": evorank + ["eval", "bm25", "--suite", "quick"],
            "--in-process": evorank + ["eval", "bm25", "--suite", "quick", "--in-process"]}
    if baseline:  # the code before eval ran everything in the sandbox, where --sandbox asked for it
        cmds["baseline --sandbox"] = ["env", f"PYTHONPATH={baseline}", *evorank, "eval", "bm25", "--suite", "quick",
                                      "--sandbox"]
    subprocess.run(cmds["--in-process"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    times = alternated(cmds, repeats, env)
    med = {}
    for k, ts in times.items():
        med[k] = (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
        print(f"evorank eval bm25 --suite quick, {k:20s} wall median {med[k][0]:6.2f} s (best "
              f"{min(t[0] for t in ts):.2f} s), CPU median {med[k][1]:5.2f} s")
    diff = [a - b for a, b in zip(med["sandboxed (default)"], med["--in-process"])]
    print(f"sandbox cost of eval on quick: wall {diff[0]:+.2f} s (difference of medians; target <= 0.3 s), "
          f"CPU {diff[1]:+.2f} s   load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only-sandbox", action="store_true", help="measure only item 4")
    ap.add_argument("--baseline", metavar="PYTHONPATH", help="item 4 also times `eval --sandbox` with the evorank "
                    "found on this PYTHONPATH (the code before this change)")
    args = ap.parse_args()
    home = os.environ.get("IR_DATASETS_HOME")
    if not home or not (Path(home) / "beir" / "scifact" / "source.zip").is_file():
        sys.exit("set IR_DATASETS_HOME to a writable copy of ../shared/ir_datasets (with beir/scifact)")
    work = Path(tempfile.mkdtemp(prefix="evorank-cli-bench-"))
    env = dict(os.environ, EVORANK_CACHE=str(work / "cache"), COLUMNS="160")
    evorank = [sys.executable, "-m", "evorank"]
    try:
        sandbox_cost(evorank, args.repeats, env, args.baseline)
        if args.only_sandbox:
            return
        run_dir = work / "run"
        subprocess.run(evorank + ["run", "--llm", "offline", "--datasets", "local:adi", "--iterations", "4",
                                  "--workers", "1", "--out", str(run_dir), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        eval_cmd = evorank + ["eval", "bm25", "--datasets", "beir/scifact/test", "--in-process"]
        subprocess.run(eval_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # warm
        script = work / "bm25s_scifact.py"
        script.write_text(BM25S_SCRIPT)
        bm25s_cmd = [sys.executable, str(script), str(Path(home) / "beir" / "scifact" / "source.zip")]
        out = subprocess.run(bm25s_cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()
        rows = [
            ("evorank --help", best_of(evorank + ["--help"], args.repeats, env)),
            ("evorank status RUN", best_of(evorank + ["status", str(run_dir)], args.repeats, env)),
            ("evorank eval bm25 --datasets beir/scifact/test --in-process (warm)", best_of(eval_cmd, args.repeats, env)),
            ("bm25s whole process (read, tokenize, index, retrieve, score)", best_of(bm25s_cmd, args.repeats, env)),
        ]
        for label, seconds in rows:
            print(f"{label:64s} {seconds:6.2f} s")
        print(f"eval ratio evorank / bm25s: {rows[2][1] / rows[3][1]:.2f} (target <= 1)   bm25s metrics: {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
