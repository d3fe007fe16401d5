"""Inspection commands (status, top, show, diff, lineage), program addresses, `evorank eval RUN:ID`,
and one real tiny run made by `evorank run --llm offline`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evorank.evaluators.program.source import split_block
from evorank.archive import ProgramRecord, RunStore
from evorank.evolve.cli.main import main
from evorank.evolve.inspection.format import short_name
from evorank.evolve.inspection.queries import InspectError, resolve_id, resolve_program_arg, split_run_address, writer_pid

from synthetic_run import BM25, CHILD_K1, make_collections, make_run

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    colls = make_collections(root)
    _, recs = make_run(root / "run", colls)
    return {"run": root / "run", "recs": recs, "colls": colls}


def run_json(capsys, *argv):
    capsys.readouterr()
    assert main(list(argv) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_text(capsys, *argv, rc=0):
    capsys.readouterr()
    assert main(list(argv)) == rc
    out = capsys.readouterr()
    return out.out + out.err


# -- addresses --------------------------------------------------------------------------------------

def test_resolve_every_id_form(syn):
    recs = syn["recs"]
    with RunStore.open(syn["run"], readonly=True) as store:
        assert resolve_id(store, "best").id == recs["k1"].id  # the fittest program of the run
        for isl in (0, 1):
            b = resolve_id(store, f"best@island:{isl}")
            assert b.island == isl
            assert b.fitness == max(p.fitness for p in store.programs(status="accepted", island=isl))
        assert resolve_id(store, "best@1").id == resolve_id(store, "best@island:1").id
        assert resolve_id(store, str(recs["rich"].id)).id == recs["rich"].id
        assert resolve_id(store, f"#{recs['b'].id}").id == recs["b"].id
        assert resolve_id(store, recs["rich"].code_hash[:10]).id == recs["rich"].id
        assert resolve_id(store, recs["rich"].code_hash.upper()[:10]).id == recs["rich"].id
        # a hash shared by several rows (migration copy, duplicate) means the first accepted original
        assert resolve_id(store, recs["k1"].code_hash[:12]).id == recs["k1"].id
        assert resolve_id(store, "seed:ql_dirichlet").id == recs["ql"].id
        for bad, msg in (("999", "no program with id 999"), ("#12345", "no program with id 12345"),
                         ("best@island:7", "island 7 does not exist"), ("seed:bm99", "no seed 'bm99'"),
                         ("zzz", "cannot read program address"), ("ffffffffffffff", "no code hash starting with")):
            with pytest.raises(InspectError) as e:
                resolve_id(store, bad)
            assert msg in str(e.value)


def test_ambiguous_hash_prefix_is_an_error(tmp_path):
    with RunStore.create(tmp_path / "r", {}, 0, synchronous="NORMAL") as store:
        for i in range(40):
            store.add_program(ProgramRecord(code=f"x = {i}\n", operator="seed", island=0, generation=0, iteration=0,
                                            status="failed", failure_reason="test"))
        hashes = [p.code_hash for p in store.programs()]
    prefix = next(h[:n] for n in (1, 2) for h in hashes
                  if not h[:n].isdigit() and sum(x.startswith(h[:n]) for x in hashes) > 1)
    with RunStore.open(tmp_path / "r", readonly=True) as store:
        with pytest.raises(InspectError, match="ambiguous") as e:
            resolve_id(store, prefix)
        assert "give more characters" in str(e.value)
        with pytest.raises(InspectError, match="no accepted program"):
            resolve_id(store, "best")


def test_run_addresses_for_eval(syn):
    run = str(syn["run"])
    assert split_run_address(f"{run}:best@island:1") == (syn["run"], "best@island:1")
    assert split_run_address(run) == (syn["run"], "best")
    assert split_run_address("bm25") is None and split_run_address("seeds/bm25.py") is None
    name, src = resolve_program_arg(f"{run}:{syn['recs']['rich'].id}")
    assert src == syn["recs"]["rich"].code and f"#{syn['recs']['rich'].id}" in name
    assert short_name("beir/scifact/test") == "scifact" and short_name("local:cisi") == "cisi"
    assert short_name("/data/x/tiny/") == "tiny" and short_name("builtin:demo") == "demo"


def test_eval_accepts_run_addresses(syn, capsys):
    """`evorank eval RUN:ID` scores the archived code: on a collection of the run it reproduces the
    archived metrics (same evaluator), for every ID form."""
    recs = syn["recs"]
    for ident, rec in (("best", recs["k1"]), (str(recs["rich"].id), recs["rich"]), ("best@island:0", None)):
        out = run_json(capsys, "eval", f"{syn['run']}:{ident}", "--datasets", "builtin:demo")
        (coll,) = out["collections"]
        if rec is not None:
            for m, v in rec.metrics["builtin:demo"].items():
                assert coll["metrics"][m] == pytest.approx(v, abs=1e-12)
    err = run_text(capsys, "eval", f"{syn['run']}:4242", "--datasets", "builtin:demo", rc=2)
    assert "evorank: error: no program with id 4242" in err and "Traceback" not in err


def test_eval_of_archived_code_runs_checked_and_sandboxed(syn, capsys, tmp_path):
    """Code from a run archive was written by a proposer: `evorank eval RUN:ID` always puts it through the static
    checks and the sandbox (`--in-process` is refused), and --runs-out writes the rankings the sandbox returned."""
    run = syn["run"]
    forbidden = syn["recs"]["forbidden"].id
    capsys.readouterr()
    assert main(["eval", f"{run}:{forbidden}", "--datasets", "builtin:demo", "--json"]) == 1
    (coll,) = json.loads(capsys.readouterr().out)["collections"]
    assert coll["error_reason"] == "forbidden:import os"
    err = run_text(capsys, "eval", f"{run}:best", "--datasets", "builtin:demo", "--in-process", rc=2)
    assert err.startswith("evorank: error: --in-process refused") and err.count("\n") == 1
    out = run_json(capsys, "eval", f"{run}:best", "--datasets", "builtin:demo", "--runs-out", str(tmp_path / "r"))
    assert out["collections"][0]["metrics"]["ndcg@10"] == pytest.approx(
        syn["recs"]["k1"].metrics["builtin:demo"]["ndcg@10"], abs=1e-12)
    assert out["compare"]["program"] == "bm25" and "significance" in out["compare"]  # bm25 by default for RUN:ID
    (trec,) = (tmp_path / "r").iterdir()
    assert len(trec.read_text().splitlines()) > 42
    bad = tmp_path / "mine.py"  # your own file: the jail by default, the static checks with --sandbox
    bad.write_text(syn["recs"]["forbidden"].code)
    capsys.readouterr()
    assert main(["eval", str(bad), "--datasets", "builtin:demo", "--checked", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["collections"][0]["error_reason"] == "forbidden:import os"


def test_top_and_status_mark_significance_against_bm25(syn, capsys):
    """--significance evaluates the listed programs and BM25 now, in the sandbox, and tests each against BM25 per
    query: JSON carries the full comparison, the table a mark, status a line for the best program."""
    run = str(syn["run"])
    recs = syn["recs"]
    top = run_json(capsys, "top", run, "-n", "3", "--significance")
    by_id = {r["id"]: r for r in top}
    k1 = by_id[recs["k1"].id]["significance"]
    assert k1["baseline"] == "bm25" and set(k1["collections"]) == set(recs["k1"].metrics)
    pooled = k1["pooled"]["ndcg@10"]
    assert pooled["n"] == 45 and pooled["mean"] == pytest.approx(
        (42 * recs["k1"].metrics["builtin:demo"]["ndcg@10"] + 3 * recs["k1"].metrics[syn["colls"][1]]["ndcg@10"]) / 45)
    assert by_id[recs["bm25"].id]["significance"]["pooled"]["ndcg@10"]["delta"] == 0
    text = run_text(capsys, "top", run, "-n", "3", "--significance", "builtin:demo")
    assert "vs BM25" in text and "baseline" in text and "▲" in text and "Holm" in text
    text = run_text(capsys, "status", run, "--significance", "builtin:demo")
    assert "vs BM25:    nDCG@10" in text and "pooled over 42 queries" in text


# -- status -------------------------------------------------------------------------------------------

def test_status(syn, capsys):
    st = run_json(capsys, "status", str(syn["run"]))
    assert st["state"] == "stopped (completed)" and st["alive"] is False and st["writer_pid"] is None
    assert st["iterations_total"] == 12 and st["proposals_done"] == 8 and st["last_iteration"] == 8
    assert st["proposals"] == {"accepted": 4, "failed": 2, "duplicate": 1, "rejected_cascade": 1}
    assert st["failure_reasons"] == {"syntax_error": 1, "duplicate": 1, "cascade": 1, "forbidden:import os": 1}
    assert st["seed_programs"] == 4 and st["migration_copies"] >= 1
    assert st["prompt_tokens"] == 8000 and st["completion_tokens"] == 1600
    assert st["cost_usd"] == pytest.approx(0.008)
    assert st["best"]["id"] == syn["recs"]["k1"].id
    assert [i["island"] for i in st["islands"]] == [0, 1]
    assert st["islands"][1]["best_id"] == syn["recs"]["k1"].id
    assert set(st["seeds"]) == {"bm25", "ql_dirichlet"}
    assert len(st["sessions"]) == 1 and st["elapsed_s"] >= 0
    text = run_text(capsys, "status", str(syn["run"]))
    for needle in ("stopped (completed)", "8/12 proposals", "4 accepted, 2 failed", "forbidden:import os 1",
                   "island 1:", "9,600", "$0.0080"):
        assert needle in text


def test_status_sees_a_live_writer_and_a_killed_run(tmp_path, capsys):
    run = tmp_path / "live"
    store = RunStore.create(run, {"iterations": 5}, 0, synchronous="NORMAL")
    store.log_event("start", {})
    store.add_program(ProgramRecord(code=BM25, operator="seed", island=0, generation=0, iteration=0,
                                    features={"seed_name": "bm25"}, fitness=0.5, metrics={"c": {"ndcg@10": 0.5}}))
    try:
        assert writer_pid(run) == os.getpid()
        st = run_json(capsys, "status", str(run))
        assert st["alive"] is True and st["state"] == "running" and st["writer_pid"] == os.getpid()
    finally:
        store.close()
    # the probe never touched the lock: a writer can take it right away
    RunStore.open(run).close()
    st = run_json(capsys, "status", str(run))
    assert st["alive"] is False and st["state"].startswith("killed")  # 'start' without 'stop'
    assert st["sessions"][0]["stop_reason"] == "killed"


def test_errors_are_one_line(tmp_path, capsys):
    err = run_text(capsys, "status", str(tmp_path), rc=2)
    assert err.startswith("evorank: error:") and "holds no run" in err and "Traceback" not in err


# -- top ------------------------------------------------------------------------------------------------

def test_top(syn, capsys):
    recs = syn["recs"]
    rows = run_json(capsys, "top", str(syn["run"]))
    fits = [r["fitness"] for r in rows]
    assert fits == sorted(fits, reverse=True) and rows[0]["id"] == recs["k1"].id
    assert all(r["operator"] != "migration" and r["status"] == "accepted" for r in rows)
    assert sorted(r["seed_name"] for r in rows if r["operator"] == "seed") == ["bm25", "ql_dirichlet"]
    assert len(rows) == 6 and set(rows[0]["metrics"]) == set(syn["colls"])
    fast = run_json(capsys, "top", str(syn["run"]), "--by", "latency", "-n", "2")
    assert [r["id"] for r in fast] == [recs["ql1"].id, recs["ql"].id]
    by_ndcg = run_json(capsys, "top", str(syn["run"]), "--by", "ndcg@10", "--island", "1")
    assert all(r["island"] == 1 for r in by_ndcg)
    means = [sum(m["ndcg@10"] for m in r["metrics"].values()) for r in by_ndcg]
    assert means == sorted(means, reverse=True)
    text = run_text(capsys, "top", str(syn["run"]), "-n", "3")
    assert "demo" in text and "tiny" in text and "nDCG@10/R@100" in text and "1.05x" in text
    assert "metric" in run_text(capsys, "top", str(syn["run"]), "--by", "bogus", rc=2)


# -- show / diff / lineage ------------------------------------------------------------------------------

def test_show(syn, capsys):
    recs = syn["recs"]
    out = run_json(capsys, "show", str(syn["run"]), str(recs["k1"].id))
    assert out["code"] == CHILD_K1 and out["parent"]["id"] == recs["bm25@1"].id
    assert out["seed"]["name"] == "bm25" and "prompt" not in out and "response" not in out
    fit = next(r for r in out["comparison"] if r["metric"] == "fitness")
    assert fit["value"] == recs["k1"].fitness and fit["parent"] == fit["seed"] == recs["bm25"].fitness
    out = run_json(capsys, "show", str(syn["run"]), str(recs["k1"].id), "--prompt", "--response")
    assert out["prompt"].startswith("PROMPT-K1") and out["response"].startswith("RESPONSE-K1")
    text = run_text(capsys, "show", str(syn["run"]), "best", "--prompt", "--response")
    for needle in ("program #%d" % recs["k1"].id, "operator diff", "model gpt-test", "K1 = 1.1", "PROMPT-K1",
                   "RESPONSE-K1", "seed bm25", "nDCG@10", "+0.0006"):
        assert needle in text
    failed = run_text(capsys, "show", str(syn["run"]), str(recs["broken"].id))
    assert "syntax_error" in failed and "expected ':'" in failed
    migrant = run_text(capsys, "show", str(syn["run"]), str(recs["migrant"].id))
    assert f"copy of #{recs['migrant'].parent_ids[0]}" in migrant


def test_diff(syn, capsys):
    recs = syn["recs"]
    out = run_json(capsys, "diff", str(syn["run"]), str(recs["k1"].id))
    assert out["from"] == recs["bm25@1"].id and "-K1 = 0.9\n+K1 = 1.1\n" in out["diff"]
    text = run_text(capsys, "diff", str(syn["run"]), str(recs["rich"].id), "seed:bm25")
    assert text.startswith("--- #1 seed") and "+def _coverage(index):" in text and "+K1 = 1.2" in text
    assert "identical code" in run_text(capsys, "diff", str(syn["run"]), str(recs["migrant"].id))
    assert "is a seed and has no parent" in run_text(capsys, "diff", str(syn["run"]), "seed:bm25", rc=2)


def test_lineage(syn, capsys):
    recs = syn["recs"]
    steps = run_json(capsys, "lineage", str(syn["run"]), str(recs["rich"].id))
    assert [s["id"] for s in steps] == [recs["bm25@1"].id, recs["k1"].id, recs["b"].id, recs["rich"].id]
    assert steps[0]["operator"] == "seed" and steps[0]["seed_name"] == "bm25" and steps[0]["delta"] is None
    assert steps[2]["delta"] == pytest.approx(recs["b"].fitness - recs["k1"].fitness)
    assert steps[3]["other_parents"] == [recs["ql1"].id]
    assert steps[3]["delta_from_start"] == pytest.approx(recs["rich"].fitness - recs["bm25"].fitness)
    text = run_text(capsys, "lineage", str(syn["run"]), str(recs["rich"].id))
    assert "3 step(s) from seed bm25" in text and f"crossed with #{recs['ql1'].id}" in text
    assert len(run_json(capsys, "lineage", str(syn["run"]), "seed:ql_dirichlet")) == 1


# -- a real run -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_offline_run_can_be_inspected(tiny_collection, tmp_path, capsys):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "evorank", "run", "--llm", "offline", "--datasets", str(tiny_collection),
         "--iterations", "6", "--workers", "1", "--out", str(out), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = run_json(capsys, "status", str(out))
    assert st["proposals_done"] == 6 and st["iterations_total"] == 6 and st["state"] == "stopped (completed)"
    assert sum(st["proposals"].values()) == 6 and st["alive"] is False
    top = run_json(capsys, "top", str(out), "-n", "0")
    best = run_json(capsys, "show", str(out), "best")
    assert best["fitness"] == top[0]["fitness"]
    # best.py is the archived program under a docstring that describes it (the archive keeps the seed's)
    written, archived = split_block((out / "best.py").read_text()), split_block(best["code"])
    assert written.block == archived.block and written.tail == archived.tail
    assert written.head.startswith(f'"""Ranking program #{best["id"]} evolved by evorank')
    steps = run_json(capsys, "lineage", str(out), str(max(r["id"] for r in top)))
    assert steps[0]["operator"] == "seed"
    child = next((r for r in top if r["operator"] != "seed"), None)
    if child is not None:
        assert run_json(capsys, "diff", str(out), str(child["id"]))["from"] == child["parent_ids"][0]
    ev = run_json(capsys, "eval", f"{out}:best", "--datasets", str(tiny_collection))
    assert ev["collections"][0]["metrics"]["ndcg@10"] == pytest.approx(
        best["metrics"][str(tiny_collection)]["ndcg@10"], abs=1e-12)


@pytest.mark.parametrize("width", [160, 200])
def test_top_fits_six_collections_in_the_terminal_without_cutting_values(width):
    """Six collections, four-digit ids, fitness with its gain, validation and latency: at 160 columns nothing is
    cut ("0.3248/0.2..." was), at 200 nothing is left out."""
    from rich.console import Console

    from evorank.evolve.inspection.terminal import top_table

    colls = ["beir/nfcorpus/test", "beir/scifact/test", "local:cacm", "local:cisi", "local:cranfield", "local:med"]
    metrics = {c: {"ndcg@10": 0.3248 + i / 100, "recall@100": 0.2917 + i / 100} for i, c in enumerate(colls)}
    seed = ProgramRecord(id=1, code="", code_hash="f" * 64, island=0, generation=0, iteration=0, fitness=0.5919,
                         operator="seed",
                         features={"seed_name": "bm25"}, metrics=metrics)
    recs = [ProgramRecord(id=1000 + i, code="", code_hash=f"{i:x}" * 64, island=i % 2, generation=3, iteration=900 + i,
                          operator="offline", fitness=0.6491 - i / 1000, latency_ratio=18.6,
                          features={"val_fitness": 0.6506}, metrics=metrics) for i in range(10)]
    console = Console(width=width, record=True, color_system=None)
    table, left_out = top_table(console, [seed] + recs, {"bm25": seed}, colls, ["ndcg@10", "recall@100"], "top")
    console.print(table)
    text = console.export_text()
    assert "…" not in text
    for r in recs:
        assert f" {r.id} " in text and f"{r.fitness:.4f} (+" in text
    assert "18.60x" in text and "0.6506" in text
    for i in range(len(colls)):
        a, b = 0.3248 + i / 100, 0.2917 + i / 100
        forms = (f"{a:.4f}/{b:.4f}", f"{a:.3f}/{b:.3f}", f"{a:.3f}/{b:.3f}".replace("0.", "."))
        assert max(text.count(f) for f in forms) == 11  # the seed and ten programs
    assert "operator" not in left_out and (width == 160 or not left_out)
