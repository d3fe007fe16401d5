"""The evolution loop end to end: scripted LLM server, offline determinism, kill -9 and resume."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evorank.archive import RunStore

from fake_openai import FakeOpenAI
from run_helpers import diff, make_config, prior, run_engine

REPO = Path(__file__).resolve().parents[3]


FULL_REWRITE = '''A log-idf variant, with a document-length prior.
```python
K1 = 0.9
B = 0.4


def prepare(index):
    td = index.term_doc
    idf = np.log((index.n_docs + 1.0) / (index.df + 0.5))
    norm = K1 * (1.0 - B + B * index.doc_len / index.avg_doc_len)
    tf = td.data
    weights = np.repeat(idf, np.diff(td.indptr)) * tf / (tf + norm[td.indices])
    return sp.csr_matrix((weights, td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    rows = state[query.term_ids]
    scores = rows.T @ query.qtf.astype(np.float32)
    matched = rows.T @ np.ones(len(query.term_ids), dtype=np.float32) > 0
    return np.where(matched, scores + 1.0 * index.doc_len, -np.inf)
```
'''
HOSTILE = '''```python
import os


def score(query, index, state):
    os.system("echo pwned")
    return np.zeros(index.n_docs)
```'''

SCRIPT = [
    prior(0.1, (100, 20)),                                                     # 1 accepted
    diff("K1 = 7.7", "K1 = 1.0", (110, 21)),                                   # 2 diff does not apply
    {"content": FULL_REWRITE, "usage": (120, 30)},                             # 3 accepted (full)
    {"content": "BM25 is great; I would keep it.", "usage": (130, 10)},         # 4 prose, no code
    {"content": "```python\ndef score(query, index, state):\n    return np.", "finish_reason": "length",
     "usage": (140, 40)},                                                      # 5 truncated
    {"content": HOSTILE, "usage": (150, 25)},                                  # 6 hostile
    {"status": 429, "headers": {"Retry-After": "1"}},                          # 7: 429, then
    diff("    scores = rows.T @ query.qtf.astype(np.float32)",
         "    scores = rows.T @ query.qtf.astype(np.float32) - 0.5 * index.doc_len", (160, 20)),  # accepted
    {"status": 500},                                                           # 8: 500, then
    diff("    matched = rows.T", "    scores = -scores\n    matched = rows.T", (170, 22)),  # accepted (reversed)
    {"content": "too late", "delay": 3.0, "usage": (999, 999)},                # 9: slower than the timeout, then
    diff("    rows = state[query.term_ids]", "    rows = state[query.term_ids] * 2.0", (180, 23)),  # ranks as before
]
EXPECTED = {1: ("accepted", None), 2: ("failed", "diff_no_match"), 3: ("accepted", None), 4: ("failed", "no_code"),
            5: ("failed", "truncated"), 6: ("failed", "forbidden"), 7: ("accepted", None), 8: ("accepted", None),
            9: ("duplicate", "no_op")}


def test_scripted_llm_run_records_every_proposal(tmp_path, tiny_collection, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(SCRIPT) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="fake-model", base_url=srv.url, request_timeout_s=1.5,
                          max_retries=2, backoff_base_s=0.01, operator_mix={"diff": 1.0}, repair_rounds=0,
                          prices={"fake-model": {"input": 2.0, "output": 8.0}})  # one script item per proposal
        engine, best = run_engine(cfg, tiny_collection)
        requests = list(srv.requests)
    store = RunStore.open(Path(cfg.out), readonly=True)
    progs = {p.iteration: p for p in store.programs() if p.iteration > 0}
    assert sorted(progs) == list(range(1, 10))
    for it, (status, reason) in EXPECTED.items():
        assert progs[it].status == status, (it, progs[it].status, progs[it].failure_reason, progs[it].failure_detail)
        if reason:
            assert progs[it].failure_reason.startswith(reason), (it, progs[it].failure_reason)
            assert progs[it].failure_detail
    assert progs[3].operator == "full" and progs[1].operator == "diff"
    assert "import" in progs[6].failure_reason and "os" in progs[6].failure_reason
    # retries: 12 scripted answers, each consumed once; the 429 was honoured (>= 1 s gap)
    assert len(requests) == len(SCRIPT)
    gap = requests[7]["time"] - requests[6]["time"]
    assert gap >= 0.95
    usage = [s["usage"] for s in SCRIPT if "content" in s and not s.get("delay")]
    assert sum(p.prompt_tokens for p in progs.values()) == sum(u[0] for u in usage)
    assert sum(p.completion_tokens for p in progs.values()) == sum(u[1] for u in usage)
    assert sum(p.cost_usd for p in progs.values()) == pytest.approx(sum(u[0] * 2 + u[1] * 8 for u in usage) / 1e6)
    # the prompt shows the contract, the parent and the failures of its line
    assert "EVOLVE-BLOCK" in progs[9].prompt and "index.term_doc" in progs[9].prompt
    # only failures with something to act on: the forbidden import, not the replies that gave no usable code
    assert "forbidden:import os" in progs[9].prompt
    assert "diff_no_match" not in progs[9].prompt and "no_code" not in progs[9].prompt
    assert best is not None and best.status == "accepted"
    store.close()


def test_budget_cap_stops_cleanly(tmp_path, tiny_collection, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    script = [diff("K1 = 0.9", f"K1 = {1 + i / 10}", (1000, 1000)) for i in range(10)]
    with FakeOpenAI(script) as srv:
        cfg = make_config(tmp_path, tiny_collection, llm="m", base_url=srv.url, operator_mix={"diff": 1.0},
                          prices={"m": {"input": 1000.0, "output": 1000.0}}, budget_usd=5.0, iterations=10)
        engine, _ = run_engine(cfg, tiny_collection)
    assert engine.stop_reason == "budget"
    done, _ = engine.proposals_done()
    assert done == 3  # $2 per call: stops once $5 is reached


def _run_cli(args, env=None, **kw):
    env = dict(os.environ) if env is None else env
    return subprocess.Popen([sys.executable, "-m", "evorank", "run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)


# small enough to be quick, long enough that the adaptive bins are refined and the islands migrate several times
REPRO = ["--llm", "offline", "--suite", "demo", "--iterations", "16", "--seed", "3", "--workers", "2", "--quiet"]
REPRO_CONFIG = "regrid_every = 4\nmigration_every = 3\n"


def _archive(run_dir):
    """Every program of a run as (iteration, island, operator, status, code hash, fitness, metrics, features, parents,
    cell), in id order: what two runs must share to be the same run (times, latencies and dates aside)."""
    store = RunStore.open(run_dir, readonly=True)
    try:
        return [(p.iteration, p.island, p.operator, p.status, p.code_hash, p.fitness, p.metrics, p.features,
                 p.parent_ids, p.cell) for p in store.programs()]
    finally:
        store.close()


@pytest.fixture(scope="module")
def repro_setup(tmp_path_factory):
    """A cache for the built-in demo collection, the run configuration and one uninterrupted run (the
    reference). The demo collection, not the tiny one: there, most edits change a program's fitness."""
    root = tmp_path_factory.mktemp("repro")
    (root / "run.toml").write_text(REPRO_CONFIG)
    env = {**os.environ, "EVORANK_CACHE": str(root / "cache")}
    args = [*REPRO, "--config", str(root / "run.toml")]
    p = _run_cli([*args, "--out", str(root / "reference")], env=env)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out.decode()[-3000:]
    return root, args, env


def test_offline_runs_with_the_same_seed_give_the_same_archive(repro_setup):
    root, args, env = repro_setup
    p = _run_cli([*args, "--out", str(root / "again")], env=env)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out.decode()[-3000:]
    reference = _archive(root / "reference")
    assert len(reference) >= 16 + 2  # the proposals and a seed on each island
    assert _archive(root / "again") == reference
    store = RunStore.open(root / "reference", readonly=True)
    try:  # otherwise the test would not cover them
        assert store.events("regrid") and store.events("migration")
    finally:
        store.close()
    status = subprocess.run([sys.executable, "-m", "evorank", "status", str(root / "again")], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert "reproducible: a run of the same configuration with --seed 3 --batch 2" in status.stdout


def test_kill_9_several_times_then_resume_gives_the_uninterrupted_archive(repro_setup):
    root, args, env = repro_setup
    run_dir = root / "killed"
    db = run_dir / "archive.sqlite"
    p = _run_cli([*args, "--out", str(run_dir)], env=env)
    kills = 0
    for at_least in (5, 9, 13):  # programs archived when the writer is killed
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and p.poll() is None:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                    if con.execute("SELECT COUNT(*) FROM programs").fetchone()[0] >= at_least:
                        break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.05)
        if p.poll() is not None:
            break
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        kills += 1
        p = _run_cli(["--resume", str(run_dir), "--quiet"], env=env)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out.decode()[-3000:]
    assert kills >= 2, "the run finished before it could be killed twice"
    con = sqlite3.connect(str(db))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    events = [r[0] for r in con.execute("SELECT kind FROM events ORDER BY rowid")]
    assert events.count("resume") == kills and events[-1] == "stop"
    con.close()
    assert _archive(run_dir) == _archive(root / "reference")


def test_run_settings_flags_override_the_config_file(tmp_path):
    """Defaults < --config file < flags, for the LLM connection settings a local server needs."""
    from evorank.evolve.cli.main import build_parser
    from evorank.evolve.cli.run import resolve_run_config

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('llm = "local"\nrequest_timeout_s = 300\nmax_tokens = 800\niterations = 7\n')
    args = build_parser().parse_args(["run", "--config", str(cfg_file), "--request-timeout", "900",
                                      "--api-key-env", "LOCAL_LLM_KEY", "--base-url", "http://127.0.0.1:8089/v1"])
    cfg = resolve_run_config(args)
    assert cfg.request_timeout_s == 900 and cfg.api_key_env == "LOCAL_LLM_KEY"
    assert cfg.base_url == "http://127.0.0.1:8089/v1" and cfg.llm == "local"
    assert cfg.max_tokens == 800 and cfg.iterations == 7  # from the file, no flag given
    assert resolve_run_config(build_parser().parse_args(["run"])).request_timeout_s == 120  # the default


def test_default_suite_probe_never_downloads(tmp_path, tiny_collection):
    """Deciding between `dev` and the demo looks only at what is on disk: with an empty ir_datasets home and no
    built index (a fresh machine) the BEIR collections count as absent and nothing is fetched (a download attempt
    would write under it). In a fresh process: ir_datasets binds its home when it is first imported."""
    home = tmp_path / "irds"
    home.mkdir()
    env = {**os.environ, "IR_DATASETS_HOME": str(home), "EVORANK_DATA": str(tmp_path / "nodata"),
           "EVORANK_CACHE": str(tmp_path / "cache")}  # an index built here earlier would count as available
    probe = f"""
import ir_datasets.util.download as download
from evorank.evaluators.availability import collection_availability
fetched = []
download.Download.__init__ = lambda self, *a, **k: fetched.append(a) or None
print([collection_availability(a, counts=False).offline
       for a in ("beir/scifact/test", "local:cranfield", {str(tiny_collection)!r})], fetched)
"""
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[False, False, True] []"
    assert not [p for p in home.rglob("*") if p.is_file()]


def test_ctrl_c_during_a_model_request_says_what_the_exit_waits_for(tmp_path, tiny_collection):
    # the first request is the preflight; the second, the first proposal, answers only after 8 s
    with FakeOpenAI([{"content": "ok", "usage": (1, 1)}, {"content": "late", "delay": 8.0}]) as srv:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
        p = subprocess.Popen([sys.executable, "-m", "evorank", "run", "--llm", "m", "--base-url", srv.url,
                              "--datasets", str(tiny_collection), "--iterations", "3", "--in-flight", "1",
                              "--out", str(tmp_path / "run"), "--quiet"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while len(srv.requests) < 2 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert len(srv.requests) == 2, "the proposal's request was never sent"
        os.killpg(p.pid, signal.SIGINT)
        out, _ = p.communicate(timeout=120)
    text = out.decode()
    assert "run interrupted" in text, text[-3000:]
    assert "waiting for 1 model request(s) still in flight" in text and "Ctrl-C again" in text, text[-3000:]
