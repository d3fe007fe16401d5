"""`evorank export`: the standalone scorer module.

The exported module is checked in a fresh interpreter that cannot import evorank: `python -I` (no
PYTHONPATH, no user site, no script folder on sys.path), every sys.path entry inside the repository
removed, and a meta-path finder that raises ImportError for `evaluators`, `evolve`, `archive` and
`seeds` (the editable install's finder would otherwise still find them). The child asserts that
`import evaluators` fails and, at the end, that no module loaded from the repository is in
sys.modules. Its rankings are then measured in this process with evorank's own metrics.
"""
import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evorank.archive import ProgramRecord
from evorank.evaluators.index.analyzer import Analyzer as EvoAnalyzer
from evorank.evaluators.index.analyzer import tokenize as evo_tokenize
from evorank.evaluators.data.collections import load_collection
from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.index.index import safe_name
from evorank.evaluators.metrics import evaluate_ranking
from evorank.evaluators.program.source import compile_program, load_program, program_path
from evorank.evaluators.program.ranking import Ranking, make_queries, rank
from evorank.evolve.cli.main import main
from evorank.evolve.inspection.export import TEMPLATE, render, template_names

from synthetic_run import RICH, make_collections, make_run

REPO = Path(__file__).resolve().parents[3]
ALLOWED_IMPORTS = {"re", "numpy", "scipy", "scipy.sparse", "Stemmer", "json", "sys"}

CHILD = r'''
import importlib.abc, json, sys
repo, folder, job_file, out_file = sys.argv[1:5]
BLOCKED = ("evorank", "evaluators", "evolve", "archive", "seeds")


class HideEvorank(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is hidden from this process")
        return None


sys.meta_path.insert(0, HideEvorank())
sys.path[:] = [p for p in sys.path if p and not p.startswith(repo)]
sys.path.insert(0, folder)
try:
    import evorank.evaluators  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("evorank is importable in the child")
job = json.load(open(job_file))
out = {}
for task in job:
    mod = __import__(task["module"])
    assert mod.__file__.startswith(folder), mod.__file__
    retriever = mod.Retriever(dict(task["docs"]))
    res = {}
    for qid, text, k in task["queries"]:
        res[qid] = retriever.search(text, k=k)
    out[task["name"]] = res
from_repo = sorted(n for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", "") or "").startswith(repo))
assert not from_repo, from_repo
json.dump(out, open(out_file, "w"))
'''


def run_isolated(tmp_path, folder: Path, tasks: list[dict]) -> dict:
    job, out = tmp_path / "job.json", tmp_path / "out.json"
    job.write_text(json.dumps(tasks))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-I", "-c", CHILD, str(REPO), str(folder), str(job), str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def task(module: str, address: str, k: int = 1000, sample: int | None = None, k_rest: int | None = None):
    coll = load_collection(address)
    queries = coll.queries
    ks = [k] * len(queries)
    if sample is not None:
        keep = set(np.random.default_rng(0).choice(len(queries), size=min(sample, len(queries)), replace=False).tolist())
        ks = [k if i in keep else k_rest for i in range(len(queries))]
    return {"module": module, "name": address,
            "docs": [[d, {"title": title, "text": body}] for d, title, body in coll.iter_docs()],
            "queries": [[qid, text, kk] for (qid, text), kk in zip(queries, ks)]}


def measure(results: dict, address: str) -> dict[str, float]:
    """evorank's metrics of rankings given as {qid: [(doc id, score), ...]}."""
    topics = load_topics(address)
    number = {d: i for i, d in enumerate(topics.index.doc_ids)}
    qids = [q.id for q in topics.queries]
    ranking = Ranking(qids, [np.array([number[d] for d, _ in results[q]], dtype=np.int64) for q in qids],
                      [np.array([s for _, s in results[q]], dtype=np.float64) for q in qids],
                      np.zeros(len(qids)), 0.0)
    return {m: float(v.mean()) for m, v in evaluate_ranking(ranking, topics.judged).items()}


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn_export")
    colls = make_collections(root)
    _, recs = make_run(root / "run", colls)
    return {"run": root / "run", "recs": recs, "colls": colls}


# -- the file ---------------------------------------------------------------------------------------------

def test_export_cli_writes_a_documented_standalone_module(syn, tmp_path, capsys, monkeypatch):
    rich = syn["recs"]["rich"]
    path = tmp_path / "my_scorer.py"
    assert main(["export", str(syn["run"]), str(rich.id), "-o", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = path.read_text()
    tree = ast.parse(text)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
    doc = ast.get_docstring(tree)
    for needle in (str(syn["run"].resolve()), f"#{rich.id}", rich.code_hash, "crossover", "gpt-test",
                   "builtin:demo", f"{rich.metrics['builtin:demo']['ndcg@10']:.4f}", "exported:", "UTC",
                   "from my_scorer import Retriever", "score(query, index, state)", "bm25 seed"):
        assert needle in doc, needle
    # the program's own text is in the file, verbatim
    assert rich.code.split("# EVOLVE-BLOCK-START")[1] in text
    mod = load_module(path)
    assert mod.PROVENANCE["program_id"] == rich.id and mod.PROVENANCE["metrics"] == rich.metrics
    assert "The evolved scoring function" in mod.score.__doc__ and "coverage bonus" in mod.score.__doc__
    # default file name, --json, and the best program
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["export", str(syn["run"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    best = syn["recs"]["k1"]
    assert info["program_id"] == best.id and info["path"] == f"scorer_{best.id}.py" and info["warning"] is None
    assert (tmp_path / f"scorer_{best.id}.py").is_file()
    assert main(["export", str(syn["run"]), str(syn["recs"]["cut"].id), "-o", str(tmp_path / "cut.py")]) == 0
    assert "was not accepted in the run (rejected_cascade" in capsys.readouterr().err


def test_eval_of_an_exported_module_scores_the_program_it_carries(syn, tmp_path, capsys):
    """The exported module's support code (analyzer, index, Retriever) is for users; `evorank eval` scores the
    ranking program it carries verbatim, in the sandbox, as it scores the run's program."""
    from evorank.evolve.inspection.export import embedded_program

    rich = syn["recs"]["rich"]
    path = tmp_path / "exported.py"
    assert main(["export", str(syn["run"]), str(rich.id), "-o", str(path)]) == 0
    program = embedded_program(path.read_text())
    assert program is not None and rich.code.split("# EVOLVE-BLOCK-START")[1] in program
    assert embedded_program(rich.code) is None
    capsys.readouterr()
    assert main(["eval", str(path), "--datasets", "builtin:demo", "--json", "--compare", "none"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["eval", f"{syn['run']}:{rich.id}", "--datasets", "builtin:demo", "--json", "--compare", "none"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert from_file["fitness"] > 0 and from_file["collections"][0]["metrics"] == from_run["collections"][0]["metrics"]


def test_exported_analyzer_and_index_match_evorank(syn, tmp_path):
    path = tmp_path / "scorer.py"
    assert main(["export", str(syn["run"]), "seed:bm25", "-o", str(path)]) == 0
    mod = load_module(path)
    texts = ["The U.S.A.'s GDP rose 3.14% in 1,000 days; don't panic!", "h2o covid19 snake_case __x__ ___",
             "Ünïcödé naïve café’s résumé — “quotes”", "us is a i o as s's ab abc running runs ran",
             "x" * 600 + " tail", "possibly possible logically logic", "", "The and of it."]
    coll = load_collection("builtin:demo")
    docs = [(d, f"{title} {body}" if title else body) for d, title, body in coll.iter_docs()]
    texts += [t for _, t in docs] + [q for _, q in coll.queries]
    ours, theirs = mod.Analyzer(), EvoAnalyzer()
    for t in texts:
        assert mod.tokenize(t) == evo_tokenize(t)
        assert ours.analyze(t) == theirs.analyze(t)
    assert mod.STOPWORDS == __import__("evorank.evaluators.index.analyzer", fromlist=["x"]).STOPWORDS
    ref = load_topics("builtin:demo").index
    with_titles = mod.build_index([(d, {"title": title, "text": body}) for d, title, body in coll.iter_docs()])
    assert_same_index(with_titles, ref, fields=True)
    # documents given as plain text: the same terms and positions, every term in the body
    flat = mod.build_index(docs)
    assert_same_index(flat, ref, fields=False)
    assert not flat.has_titles and not flat.title_tf.any() and not flat.title_len.any()
    assert np.array_equal(flat.field("body").term_doc.data, ref.term_doc.data)
    for text in ["solar panels and solar power", "The Cats' bowls of zebra-unicorns", "", "the of and"]:
        q_ours = mod.make_query(text, with_titles)
        (q_ref,) = make_queries([("q", text)], ref)
        assert q_ours.terms == q_ref.terms and q_ours.words == q_ref.words
        for name in ("term_ids", "qtf", "token_ids", "positions"):
            a, b = getattr(q_ours, name), getattr(q_ref, name)
            assert a.dtype == b.dtype and np.array_equal(a, b) and not a.flags.writeable, name


def assert_same_index(idx, ref, fields: bool):
    """An exported module's index equals evorank's: sizes, names, every array (dtype, values, read-only) and the
    helpers; with ``fields``, the title/body statistics too."""
    assert (idx.n_docs, idx.n_terms, idx.total_tokens, idx.avg_doc_len) == (ref.n_docs, ref.n_terms, ref.total_tokens,
                                                                            ref.avg_doc_len)
    assert not hasattr(idx, "doc_ids")  # the program sees document numbers; the ids stay in Retriever
    assert idx.terms == ref.terms and type(idx.terms) is tuple
    assert all(idx.term_id(t) == i for i, t in enumerate(ref.terms)) and idx.term_id("zzz-absent") == -1
    names = ["doc_len", "df", "cf", "doc_tokens", "doc_positions", "posting_positions", "doc_token_ptr",
             "posting_position_ptr"] + (["title_tf", "title_len"] if fields else [])
    for name in names:
        a, b = getattr(idx, name), getattr(ref, name)
        assert a.dtype == b.dtype and np.array_equal(a, b) and not a.flags.writeable, name
    for name in ("term_doc", "doc_term") + (("title", "body") if fields else ()):
        a = idx.field(name).term_doc if name in ("title", "body") else getattr(idx, name)
        b = ref.field(name).term_doc if name in ("title", "body") else getattr(ref, name)
        assert type(a) is type(b) and a.shape == b.shape
        for part in ("data", "indices", "indptr"):
            assert getattr(a, part).dtype == getattr(b, part).dtype and np.array_equal(getattr(a, part), getattr(b, part))
    if fields:
        assert idx.has_titles == ref.has_titles
        for name in ("title", "body"):
            f, g = idx.field(name), ref.field(name)
            assert np.array_equal(f.doc_len, g.doc_len) and f.avg_doc_len == g.avg_doc_len
    for t in (0, 5, ref.n_terms - 1):
        assert [list(x) for x in idx.postings(t)] == [list(x) for x in ref.postings(t)]
        assert [list(x) for x in idx.positions(t)] == [list(x) for x in ref.positions(t)]
    for d in (0, 3, ref.n_docs - 1):
        assert [list(x) for x in idx.doc_token_list(d)] == [list(x) for x in ref.doc_token_list(d)]
        assert [list(x) for x in idx.doc_terms(d)] == [list(x) for x in ref.doc_terms(d)]


def test_exported_program_reproduces_archived_metrics_without_evorank(syn, tmp_path):
    """The evolved `rich` program (uses doc_term, cf, total_tokens) and a variant whose names clash with
    the harness (exported in namespace mode), run in a process that cannot import evorank: identical
    rankings to evorank's, and the archived metrics to 1e-6 on both collections of the run."""
    rich = syn["recs"]["rich"]
    folder = tmp_path / "exported"
    folder.mkdir()
    assert main(["export", str(syn["run"]), str(rich.id), "-o", str(folder / "rich_scorer.py")]) == 0
    clash_code = RICH.replace("_coverage", "tokenize") + "\n\nclass Index:\n    pass\n"
    clash = ProgramRecord(code=clash_code, operator="full", island=0, generation=0, iteration=1, id=99,
                          code_hash="0" * 64, metrics={})
    clash_text = render(clash, syn["run"], module_name="clash_scorer")
    assert "runs in\n# its own namespace" in clash_text and "tokenize" in template_names(TEMPLATE.read_text())
    (folder / "clash_scorer.py").write_text(clash_text)
    tasks = [task("rich_scorer", a) for a in syn["colls"]]
    tasks += [dict(task("clash_scorer", "builtin:demo"), name="clash")]
    results = run_isolated(tmp_path, folder, tasks)
    for address in syn["colls"]:
        got = measure(results[address], address)
        for m, v in rich.metrics[address].items():
            assert got[m] == pytest.approx(v, abs=1e-6), (address, m)
        # and the rankings themselves are evorank's, document for document
        topics = load_topics(address)
        ref = rank(compile_program(rich.code), topics.index, topics.queries, k=1000)
        for qid, idx, scores in zip(ref.query_ids, ref.doc_idx, ref.scores):
            mine = results[address][qid]
            assert [d for d, _ in mine] == [topics.index.doc_ids[i] for i in idx]
            np.testing.assert_allclose([s for _, s in mine], scores, rtol=1e-12, atol=0)
    assert results["clash"] == results["builtin:demo"]  # same scorer, other export mode


EXAMPLES = ("bm25f", "proximity", "variants", "rm3", "dfr")


def test_exported_examples_reproduce_evorank_without_evorank(syn, tmp_path):
    """The example programs (fields, positions, term strings, the forward index, collection statistics), exported
    and run in a process that cannot import evorank, on both collections of the synthetic run (titles, an empty
    document): evorank's rankings document for document, and its metrics exactly."""
    folder = tmp_path / "exported"
    folder.mkdir()
    for i, name in enumerate(EXAMPLES):
        code = program_path(f"examples/{name}.py").read_text(encoding="utf-8")
        rec = ProgramRecord(code=code, operator="seed", island=0, generation=0, iteration=0, id=100 + i,
                            code_hash="0" * 64, metrics={})
        text = render(rec, syn["run"], module_name=f"{name}_scorer")
        assert "its own namespace" not in text and code.split("# EVOLVE-BLOCK-START")[1] in text
        (folder / f"{name}_scorer.py").write_text(text)
    tasks = [dict(task(f"{name}_scorer", a), name=f"{name}|{a}") for name in EXAMPLES for a in syn["colls"]]
    results = run_isolated(tmp_path, folder, tasks)
    for name in EXAMPLES:
        program = load_program(f"examples/{name}.py")
        for address in syn["colls"]:
            mine = results[f"{name}|{address}"]
            topics = load_topics(address)
            expected, ranking = evaluate_on(program, topics, k=1000)
            for qid, idx, scores in zip(ranking.query_ids, ranking.doc_idx, ranking.scores):
                assert [d for d, _ in mine[qid]] == [topics.index.doc_ids[i] for i in idx], (name, address, qid)
                np.testing.assert_allclose([s for _, s in mine[qid]], scores, rtol=1e-12, atol=0)
            got = measure(mine, address)
            assert got == {m: pytest.approx(v, abs=1e-12) for m, v in expected.metrics.items()}, (name, address)


@pytest.mark.shared_data
def test_exported_bm25_ranks_scifact_like_evorank_eval(shared_env, syn, tmp_path, capsys):
    """The exported BM25 seed's Retriever against `evorank eval bm25 --runs-out` on SciFact: the top 10
    of every query and the top 1,000 of a sample of 25 queries are the same documents in the same order."""
    address = "beir/scifact/test"
    runs = tmp_path / "runs"
    assert main(["eval", "bm25", "--datasets", address, "--runs-out", str(runs), "--json"]) == 0
    capsys.readouterr()
    trec: dict[str, list[tuple[str, float]]] = {}
    for line in (runs / f"{safe_name(address)}.run").read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        trec.setdefault(qid, []).append((doc, float(score)))
    folder = tmp_path / "exported"
    assert main(["export", str(syn["run"]), "seed:bm25", "-o", str(folder / "bm25_scorer.py")]) == 0
    t = task("bm25_scorer", address, k=1000, sample=25, k_rest=10)
    results = run_isolated(tmp_path, folder, [t])[address]
    assert set(results) == set(trec) and len(trec) == 300
    n_full = 0
    for qid, _, k in t["queries"]:
        ours, ref = results[qid], trec[qid][:k]
        assert [d for d, _ in ours] == [d for d, _ in ref], qid
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in ref], atol=1e-6)
        n_full += k == 1000
    assert n_full == 25
