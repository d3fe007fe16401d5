"""Tiny collections in ir_datasets' own on-disk layout: the files it would have downloaded, written where it looks
for them under an IR_DATASETS_HOME, so that ``ir_datasets.load(...)`` reads them without the network.

Where each file goes is asked of ir_datasets itself (its download configuration, ``etc/downloads.json``: the
``cache_path`` of each download, under ``<home>/<dataset>``), and what is in it follows its readers:

- BRIGHT (``datasets/bright.py``): parquet files; documents ``id, content``; the questions ("examples") ``id,
  query, reasoning, gold_answer, gold_ids, gold_ids_long, excluded_ids``; one file per reasoning model
  ``id, reasoning``. ``bright/biology-long`` reads the long documents and ``gold_ids_long``.
- BEIR CQADupStack (``datasets/beir.py``): the ``source.zip`` of all forums, of which ``cqadupstack/english/``
  holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv``.
- MS MARCO passage with TREC DL 2019 (``datasets/msmarco_passage.py``): ``collection.tsv`` and the 2019 queries
  where ir_datasets keeps them once extracted (so the 1 GB archive is never asked for), the NIST qrels file, and
  the ``irds_version.txt`` marker without which ir_datasets would delete ``collection.tsv`` as outdated.

``EXPECTED`` holds what the tests compute by hand from these files.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

BRIGHT_DOCS = {"b0": "alpha", "b1": "alpha beta", "b2": "alpha beta gamma", "b3": "zeta", "b4": "zeta zeta",
               "b5": "zeta omega"}
BRIGHT_LONG_DOCS = {"L0": "alpha beta gamma", "L1": "alpha", "L2": "zeta omega"}
BRIGHT_QUESTIONS = [
    # BRIGHT writes "N/A" where a question excludes nothing; ir_datasets drops it
    {"id": "0", "query": "alpha beta", "gold_ids": ["b2"], "gold_ids_long": ["L1"], "excluded_ids": ["b1"],
     "gpt4": "gamma"},
    {"id": "1", "query": "alpha", "gold_ids": ["b1"], "gold_ids_long": ["L0"], "excluded_ids": ["N/A"],
     "gpt4": "gamma"},
    {"id": "2", "query": "zeta", "gold_ids": ["b5"], "gold_ids_long": ["L2"], "excluded_ids": ["b3", "b4"],
     "gpt4": "omega zeta"},
]
REASONING_SOURCES = ("Gemini-1.0_reason", "claude-3-opus_reason", "gpt4_reason", "grit_reason", "llama3-70b_reason")

CQA_DOCS = [("c0", "python", "list sort"), ("c1", "", "list"), ("c2", "python", ""), ("c3", "java", "")]
CQA_QUERIES = {"q1": "python list", "q2": "java"}
CQA_QRELS = [("q1", "c2", 1), ("q2", "c3", 1)]

MSMARCO_PASSAGES = {"p0": "cat dog", "p1": "cat", "p2": "dog fish", "p3": "fish", "p4": "cat dog fish", "p5": "bird"}
DL19_QUERIES = {"1001": "cat dog", "1002": "fish", "1003": "bird", "1004": "cat"}
# 1003 has no judgement (not in the judged subset); 1004 only a grade 1 (no judgement >= 2: not evaluated)
DL19_QRELS = [("1001", "p0", 1), ("1001", "p1", 3), ("1001", "p4", 2), ("1001", "p2", 0),
              ("1002", "p3", 2), ("1002", "p2", 1), ("1002", "p4", 0), ("1004", "p1", 1)]

#: A program whose rankings are easy to follow by hand: the number of distinct query terms a document contains
#: (documents with none are not retrieved), ties broken by document number, i.e. corpus order.
MATCH_COUNT_PROGRAM = '''import numpy as np

# EVOLVE-BLOCK-START
def score(query, index, state):
    s = np.zeros(index.n_docs)
    for t in query.term_ids:
        s[index.postings(t)[0]] += 1.0
    return np.where(s > 0, s, -np.inf)
# EVOLVE-BLOCK-END
'''


def download_path(home: Path, dataset: str, key: str) -> Path:
    """Where ir_datasets keeps download ``key`` of ``dataset`` under ``home`` (its ``cache_path``)."""
    import ir_datasets

    return Path(ir_datasets.util.DownloadConfig.context(dataset, home / dataset)[key].path(force=False))


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_bright(home: Path, subset: str = "biology") -> None:
    _parquet(download_path(home, "bright", f"{subset}/docs"),
             [{"id": d, "content": text} for d, text in BRIGHT_DOCS.items()])
    _parquet(download_path(home, "bright", f"{subset}-long/docs"),
             [{"id": d, "content": text} for d, text in BRIGHT_LONG_DOCS.items()])
    _parquet(download_path(home, "bright", f"{subset}/queries"), [
        {"id": q["id"], "query": q["query"], "reasoning": f"reasoning {q['id']}", "gold_answer": f"answer {q['id']}",
         "gold_ids": q["gold_ids"], "gold_ids_long": q["gold_ids_long"], "excluded_ids": q["excluded_ids"]}
        for q in BRIGHT_QUESTIONS])
    for source in REASONING_SOURCES:
        _parquet(download_path(home, "bright", f"{subset}/{source}/queries"),
                 [{"id": q["id"], "reasoning": q["gpt4"] if source == "gpt4_reason" else f"{source} {q['id']}"}
                  for q in BRIGHT_QUESTIONS])


def write_cqadupstack(home: Path, forum: str = "english") -> None:
    path = download_path(home, "beir", "cqadupstack")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"cqadupstack/{forum}"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/corpus.jsonl", "".join(
            json.dumps({"_id": d, "title": title, "text": text, "metadata": {"tags": ["t"]}}) + "\n"
            for d, title, text in CQA_DOCS))
        z.writestr(f"{prefix}/queries.jsonl", "".join(
            json.dumps({"_id": q, "text": text, "metadata": {"tags": ["t"]}}) + "\n" for q, text in CQA_QUERIES.items()))
        z.writestr(f"{prefix}/qrels/test.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{g}\n" for q, d, g in CQA_QRELS))


def write_trec_dl_2019(home: Path) -> None:
    base = home / "msmarco-passage"
    base.mkdir(parents=True, exist_ok=True)
    (base / "irds_version.txt").write_text("v2")
    (base / "collection.tsv").write_text("".join(f"{d}\t{text}\n" for d, text in MSMARCO_PASSAGES.items()))
    (base / "trec-dl-2019").mkdir(exist_ok=True)
    (base / "trec-dl-2019" / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in DL19_QUERIES.items()))
    qrels = download_path(home, "msmarco-passage", "trec-dl-2019/qrels")
    qrels.write_text("".join(f"{q} Q0 {d} {g}\n" for q, d, g in DL19_QRELS))


def write_all(home: Path) -> None:
    """Every fixture above under ``home`` (an IR_DATASETS_HOME)."""
    write_bright(home)
    write_cqadupstack(home)
    write_trec_dl_2019(home)
