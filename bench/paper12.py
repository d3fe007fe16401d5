"""RankEvolve's 12-set evolution suite at its real size, as synthetic stand-ins: what a candidate costs here.

    python bench/paper12.py [--work DIR] [--scale 1.0] [--keep] [--json OUT]

Each of the twelve collections of ``rankevolve12`` (6 BEIR, 6 BRIGHT) is replaced by a synthetic BEIR-layout
collection (``bench/synthetic.py``: Zipf vocabulary, queries whose words are woven into their relevant documents)
with that set's number of documents, mean document length, number of queries and mean query length, from the
datasets' published statistics:

- BEIR: Thakur et al., "BEIR: A Heterogeneous Benchmark for Zero-shot Evaluation of Information Retrieval
  Models", NeurIPS 2021 Datasets and Benchmarks, Table 1 (corpus size, test queries, average words per document
  and per query);
- BRIGHT: Su et al., "BRIGHT: A Realistic and Challenging Benchmark for Reasoning-Intensive Retrieval", ICLR
  2025, Table 1 (queries, documents, average query and document length). BRIGHT counts GPT-2 tokens
  (``scripts/stats.py`` of github.com/xlang-ai/BRIGHT); taken here at ``WORDS_PER_TOKEN`` words per token.

Query words are drawn like document words (``--query-words zipf`` of synthetic.py): BRIGHT's and ArguAna's
queries are paragraphs, whose common words touch many postings. Synthetic words are never stopwords, so
every word is indexed (real text loses ~30% to stopwords): the stand-in is, if anything, costlier.

In one fresh process with an empty cache (``nice -n 5`` is up to the caller), one phase after another:

1. **cold build**: every index (``get_index``, all cores);
2. **estimate**: what ``evorank datasets`` estimates for one full BM25 evaluation of each collection
   (``evaluators/cost.py``, CPU time), against the BM25 seed run in that process: the CPU time of its first
   ``prepare`` and of every query (``score`` + top-k; the least of three runs), and the wall time all that took;
3. **in the loop**: an ``Evaluator`` as ``evorank run`` makes it (2 workers, sandbox, cascade, prepare reuse):
   the BM25 reference (computes and stores every ``prepare`` state), a BM25 candidate that changes only its
   ``score`` (stage 1 then the full evaluation, states reused), the same candidate's full evaluation alone, a weak
   candidate the cascade stops after stage 1 (the cascade's savings), and ``examples/rm3.py`` (two passes per
   query), fully and then as a score-only mutant, with the default limits and, where those stop it, again with a
   per-task timeout of ``--rm3-timeout`` seconds;

with wall time, the CPU time of the whole process tree and its peak memory (sampled every 0.1 s: the sum of the
processes' resident sets, which counts the memory-mapped index once per process that maps it, and the sum of
their proportional sets, which shares it out), and the load average, per phase. ``--cache DIR`` reuses the
indexes of an earlier run (kept with ``--keep``) and skips the cold build. The machine may be shared: CPU time is what the work costs; wall time is what it
took with the load there was.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS_PER_TOKEN = 0.75  # English words per GPT-2 token (about 4 tokens for 3 words)

#: (name, documents, words per document, queries, words per query)
BEIR = [
    ("beir-arguana", 8_674, 166.80, 1_406, 192.98),
    ("beir-fiqa", 57_638, 132.32, 648, 10.77),
    ("beir-nfcorpus", 3_633, 232.26, 323, 3.30),
    ("beir-scidocs", 25_657, 176.19, 1_000, 9.38),
    ("beir-scifact", 5_183, 213.63, 300, 12.37),
    ("beir-trec-covid", 171_332, 160.77, 50, 10.60),
]
#: (name, documents, GPT-2 tokens per document, queries, GPT-2 tokens per query)
BRIGHT = [
    ("bright-biology", 57_359, 83.6, 103, 115.2),
    ("bright-earth-science", 121_249, 132.6, 116, 109.5),
    ("bright-economics", 50_220, 120.2, 103, 181.5),
    ("bright-pony", 7_894, 98.3, 112, 102.6),
    ("bright-stackoverflow", 107_081, 704.7, 117, 478.3),
    ("bright-theoremqa-theorems", 23_839, 354.8, 76, 91.7),
]
SETS = BEIR + [(n, d, dl * WORDS_PER_TOKEN, q, ql * WORDS_PER_TOKEN) for n, d, dl, q, ql in BRIGHT]
TARGETS = {"loop_s": 30.0, "peak_gb": 4.0, "build_s": 600.0, "estimate": 0.30}

DRIVER = r'''
import json, os, sys, time
from pathlib import Path

def tree_cpu():
    """CPU seconds of this process, its live descendants and every child they reaped (from /proc)."""
    children, stats = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            f = s[s.rindex(")") + 2:].split()
            children.setdefault(int(f[1]), []).append(int(d))
            stats[int(d)] = sum(int(x) for x in f[11:15])
    total, todo = 0, [os.getpid()]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0)
        todo.extend(children.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")

def mark(phase, **data):
    print(json.dumps({"phase": phase, "t": time.time(), "cpu_s": tree_cpu(), "load": os.getloadavg()[0], **data}),
          flush=True)

folders = sys.argv[1:]
mark("start")
from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.availability import collection_availability
topics = []
for f in folders:
    t0 = time.perf_counter()
    topics.append(load_topics(f))
    t = topics[-1]
    mark("built", name=Path(f).name, wall_s=time.perf_counter() - t0, docs=int(t.index.n_docs),
         terms=int(t.index.n_terms), postings=int(t.index.term_doc.nnz), queries=len(t.queries),
         query_terms=float(sum(len(q.term_ids) for q in t.queries) / max(1, len(t.queries))),
         index_bytes=sum(p.stat().st_size for p in Path(t.index.path).iterdir() if p.is_file()),
         corpus_bytes=(Path(f) / "corpus.jsonl").stat().st_size)
mark("build_done")
from evorank.evaluators.program.source import load_program, seed_path
from evorank.evaluators.program.ranking import plain_scores, score_buffer, top_k
bm25 = load_program("bm25")
for f, t in zip(folders, topics):
    est = collection_availability(f)
    t0, c0 = time.perf_counter(), time.thread_time()
    state = bm25.prepare(t.index)
    prepare_cpu = time.thread_time() - c0
    buffer, cpu = score_buffer(t.index.n_docs), [float("inf")] * len(t.queries)
    for _ in range(3):  # the least of three runs of each query: what it costs without other jobs in the way
        for i, q in enumerate(t.queries):
            c = time.thread_time()
            top_k(plain_scores(bm25.score(q, t.index, state), t.index.n_docs, buffer), t.depth())
            cpu[i] = min(cpu[i], time.thread_time() - c)
    mark("estimate", name=Path(f).name, estimated_s=est.eval_seconds, wall_s=time.perf_counter() - t0,
         measured_s=prepare_cpu + sum(cpu), prepare_s=prepare_cpu, query_p50_ms=1e3 * sorted(cpu)[len(cpu) // 2])
mark("estimate_done")
from evorank.evaluators.parallel import CascadeConfig, Evaluator, Limits
source = seed_path("bm25").read_text()
line = "scores = rows.T @ query.qtf.astype(np.float32)"
assert line in source, "the BM25 seed no longer has the score line the mutants edit"
strong = source.replace(line, "scores = rows.T @ np.sqrt(query.qtf.astype(np.float32))")
weak = source.replace(line, "scores = -(rows.T @ query.qtf.astype(np.float32))")
rm3 = Path(sys.modules["evorank"].__file__).parent.joinpath("examples", "rm3.py").read_text()
with Evaluator([], n_workers=2, limits=Limits(), cascade=CascadeConfig(), topics=topics) as ev:
    def timed(label, fn):
        t0, c0 = time.perf_counter(), tree_cpu()
        r = fn()
        mark(label, wall_s=time.perf_counter() - t0, stage=r.stage, ok=r.ok, fitness=r.fitness,
             stage1_fitness=r.stage1_fitness, reused=r.prepare_reused, runs=r.prepare_runs,
             reason=r.failure_reason, detail=(r.failure_detail or "")[:300], task_cpu_s=tree_cpu() - c0)
        return r
    ref = timed("reference", lambda: ev.evaluate_trusted(source, name="bm25"))
    parent = [ref.stage1_fitness]
    timed("bm25_mutant_cascade", lambda: ev.evaluate([strong], parent_stage1=parent, names=["mutant"])[0])
    timed("bm25_mutant_full", lambda: ev.evaluate([strong], names=["mutant"])[0])
    timed("weak_mutant_cascade", lambda: ev.evaluate([weak], parent_stage1=parent, names=["weak"])[0])
    rm3_line = "    return weighted_bm25(state, terms, weights, index.n_docs)"  # score's last line
    assert rm3.count(rm3_line) == 1, "examples/rm3.py no longer ends score with the line its mutant edits"
    rm3_mutant = rm3.replace(rm3_line, rm3_line.replace("weights,", "2.0 * weights,"))
    first = timed("rm3_full_cold", lambda: ev.evaluate_trusted(rm3, name="rm3"))
    timed("rm3_mutant_full", lambda: ev.evaluate([rm3_mutant], names=["rm3-mutant"])[0])
    sizes = {t.name: len(s) for t, s in zip(topics, ev._samples)}
if not first.ok:  # again with a longer per-task timeout: what the program costs when it may finish
    with Evaluator([], n_workers=2, limits=Limits(timeout_s=float(os.environ["RM3_TIMEOUT"])), cascade=CascadeConfig(),
                   topics=topics) as ev:
        timed("rm3_full_long_timeout", lambda: ev.evaluate_trusted(rm3, name="rm3"))
        timed("rm3_mutant_long_timeout", lambda: ev.evaluate([rm3_mutant], names=["rm3-mutant"])[0])
mark("loop_done", sizes=sizes)
'''


class RssSampler:
    """(time, resident bytes, proportional bytes) of a process and all its descendants (summed), every 0.1 s."""

    def __init__(self, pid: int):
        self.pid, self.samples = pid, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from scale import process_tree  # bench/scale.py, beside this script

        while not self._stop.is_set():
            rss = pss = 0
            for p in process_tree(self.pid):
                try:
                    text = Path(f"/proc/{p}/smaps_rollup").read_text()
                    m, n = re.search(r"^Rss:\s+(\d+) kB", text, re.M), re.search(r"^Pss:\s+(\d+) kB", text, re.M)
                    rss += int(m.group(1)) * 1024 if m else 0
                    pss += int(n.group(1)) * 1024 if n else 0
                except OSError:
                    pass
            self.samples.append((time.time(), rss, pss))
            time.sleep(0.1)

    def peak(self, start: float = 0.0, end: float = float("inf"), proportional: bool = False) -> float:
        """Peak in GB between two times: of the summed resident sets, or of the summed proportional sets."""
        return max((s[2 if proportional else 1] for s in self.samples if start <= s[0] <= end), default=0) / 2**30

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def generate(work: Path, scale: float) -> list[Path]:
    sys.path.insert(0, str(HERE))
    from synthetic import write_collection

    folders = []
    for i, (name, docs, doc_words, queries, query_words) in enumerate(SETS):
        n_docs, n_queries = max(100, int(docs * scale)), max(10, int(queries * min(1.0, scale * 4)))
        folder = work / f"{name}-x{scale:g}"
        if not (folder / "qrels" / "test.tsv").is_file():
            print(f"  generating {folder.name}: {n_docs:,} documents of ~{doc_words:.0f} words, {n_queries:,} "
                  f"queries of {round(query_words)} words ...", flush=True)
            write_collection(folder, n_docs, round(doc_words), n_queries, max(1, round(query_words)), seed=i,
                             log=None, query_words="zipf")
        folders.append(folder)
    return folders


def run(folders: list[Path], work: Path, keep: bool, cache: Path | None, rm3_timeout: float
        ) -> tuple[list[dict], RssSampler]:
    reuse = cache is not None
    cache = cache or Path(tempfile.mkdtemp(prefix="paper12-cache-", dir=work))
    env = dict(os.environ, EVORANK_CACHE=str(cache), RM3_TIMEOUT=str(rm3_timeout))
    script = work / "paper12_driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), *map(str, folders)], env=env, stdout=subprocess.PIPE,
                            text=True)
    rss = RssSampler(proc.pid)
    marks = []
    try:
        for line in proc.stdout:
            if line.startswith("{"):
                marks.append(json.loads(line))
                m = marks[-1]
                print(f"  {m['phase']:22} {m.get('name', '')[:26]:26} load {m['load']:5.1f}  "
                      + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()
                                  if k in ("wall_s", "measured_s", "estimated_s", "stage", "reused", "reason")),
                      flush=True)
        proc.wait()
    finally:
        rss.stop()
        if not keep and not reuse:
            shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"the driver failed (exit {proc.returncode})")
    return marks, rss


def report(marks: list[dict], rss: RssSampler) -> dict:
    by = {}
    for m in marks:
        by.setdefault(m["phase"], []).append(m)
    start, build_done = by["start"][0], by["build_done"][0]
    est_done, loop_done = by["estimate_done"][0], by["loop_done"][0]
    built = {m["name"]: m for m in by["built"]}
    est = {m["name"]: m for m in by["estimate"]}
    print("\n| collection | docs | postings | queries | terms/query | build | est. BM25 eval | measured CPU | "
          "est/meas | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, b in built.items():
        e = est[name]
        ratio = e["estimated_s"] / e["measured_s"] if e["estimated_s"] and e["measured_s"] else float("nan")
        print(f"| {name} | {b['docs']:,} | {b['postings']:,} | {b['queries']:,} | {b['query_terms']:.0f} | "
              f"{b['wall_s']:.0f} s | {e['estimated_s']:.2f} s | {e['measured_s']:.2f} s | {ratio:.2f} | "
              f"{e['wall_s']:.2f} s |")
    est_total = sum(e["estimated_s"] or 0 for e in est.values())
    meas_total = sum(e["measured_s"] for e in est.values())
    out = {
        "build_wall_s": build_done["t"] - start["t"], "build_cpu_s": build_done["cpu_s"] - start["cpu_s"],
        "build_peak_gb": rss.peak(start["t"], build_done["t"]),
        "estimate_total_s": est_total, "measured_total_s": meas_total,
        "loop_peak_gb": rss.peak(est_done["t"], loop_done["t"]), "peak_gb": rss.peak(),
        "build_peak_pss_gb": rss.peak(start["t"], build_done["t"], True),
        "loop_peak_pss_gb": rss.peak(est_done["t"], loop_done["t"], True), "peak_pss_gb": rss.peak(proportional=True),
        "load": [m["load"] for m in marks],
    }
    for phase in ("reference", "bm25_mutant_cascade", "bm25_mutant_full", "weak_mutant_cascade", "rm3_full_cold",
                  "rm3_mutant_full", "rm3_full_long_timeout", "rm3_mutant_long_timeout"):
        if phase in by:
            out[phase] = {k: by[phase][0][k] for k in ("wall_s", "task_cpu_s", "stage", "ok", "reused", "runs",
                                                       "fitness", "stage1_fitness", "reason", "load")}
    out["index_gb"] = sum(b["index_bytes"] for b in built.values()) / 2**30
    out["corpus_gb"] = sum(b["corpus_bytes"] for b in built.values()) / 2**30
    print(f"\ncold build of all twelve: {out['build_wall_s']:.0f} s wall, {out['build_cpu_s']:.0f} s CPU "
          f"(target <= {TARGETS['build_s']:.0f} s), peak RSS {out['build_peak_gb']:.2f} GB; indexes "
          f"{out['index_gb']:.2f} GB for {out['corpus_gb']:.2f} GB of corpus.jsonl")
    for label, prefix in (("all twelve", ""), ("BEIR half (the model was fitted on it)", "beir-"),
                          ("BRIGHT half (not fitted on it)", "bright-")):
        part = [e for n, e in est.items() if n.startswith(prefix)]
        e_s, m_s, w_s = (sum(e[k] or 0 for e in part) for k in ("estimated_s", "measured_s", "wall_s"))
        print(f"evorank datasets' estimate of one BM25 evaluation, {label}: {e_s:.1f} s vs {m_s:.1f} s CPU measured "
              f"in process: {e_s / m_s - 1:+.0%} (target within +-{TARGETS['estimate']:.0%}); wall {w_s:.1f} s")
    for phase, what in (("reference", "BM25 reference, full, computing every prepare"),
                        ("bm25_mutant_cascade", "BM25 candidate in the loop: stage 1 + full, prepare reused"),
                        ("bm25_mutant_full", "BM25 candidate, full evaluation alone, prepare reused"),
                        ("weak_mutant_cascade", "weak candidate stopped by the cascade after stage 1"),
                        ("rm3_full_cold", "rm3, full, computing its prepare"),
                        ("rm3_mutant_full", "rm3 score-only mutant, full, prepare reused"),
                        ("rm3_full_long_timeout", "rm3, full, with the longer per-task timeout"),
                        ("rm3_mutant_long_timeout", "rm3 score-only mutant, full, with the longer timeout")):
        if phase in out:
            r = out[phase]
            print(f"{what}: {r['wall_s']:.1f} s wall, {r['task_cpu_s']:.1f} s CPU (stage {r['stage']}, "
                  f"reused {r['reused']}/{r['runs']}, load {r['load']:.1f}){'' if r['ok'] else ' FAILED ' + str(r['reason'])}")
    if "bm25_mutant_full" in out and "weak_mutant_cascade" in out:
        full, weak = out["bm25_mutant_full"], out["weak_mutant_cascade"]
        print(f"cascade: a stopped candidate costs {weak['wall_s']:.1f} s of a full {full['wall_s']:.1f} s "
              f"({1 - weak['wall_s'] / full['wall_s']:.0%} saved; CPU {1 - weak['task_cpu_s'] / full['task_cpu_s']:.0%})")
    print(f"peak memory of the process tree: {out['peak_pss_gb']:.2f} GB proportional (build "
          f"{out['build_peak_pss_gb']:.2f}, loop {out['loop_peak_pss_gb']:.2f}), {out['peak_gb']:.2f} GB summed RSS "
          f"(build {out['build_peak_gb']:.2f}, loop {out['loop_peak_gb']:.2f}; target <= {TARGETS['peak_gb']:.0f} GB); "
          f"load average {min(out['load']):.1f}-{max(out['load']):.1f} on {os.cpu_count()} cores")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "evorank-paper12")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each set's documents (queries: 4x that)")
    ap.add_argument("--keep", action="store_true", help="keep the generated collections and the cache")
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    ap.add_argument("--cache", type=Path, help="the EVORANK_CACHE of an earlier --keep run: its indexes, no cold build")
    ap.add_argument("--rm3-timeout", type=float, default=600.0,
                    help="per-task timeout for rm3 where the default limits stop it (default 600 s)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; generating into {args.work}", flush=True)
    t = time.perf_counter()
    folders = generate(args.work, args.scale)
    print(f"  collections ready in {time.perf_counter() - t:.0f} s", flush=True)
    marks, rss = run(folders, args.work, args.keep, args.cache, args.rm3_timeout)
    out = report(marks, rss)
    if args.json:
        args.json.write_text(json.dumps({"marks": marks, "summary": out}, indent=1))
    if not args.keep:
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)


if __name__ == "__main__":
    main()
