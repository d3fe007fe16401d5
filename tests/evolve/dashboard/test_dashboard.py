"""`evorank dashboard`: the command, its HTTP answers and security headers, what the views say of a run, and the
cache that keeps a watched run's reads few (the browser itself is driven in test_dashboard_browser.py)."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from evorank.archive import ProgramRecord, RunStore
from evorank.evolve.cli.main import main
from evorank.evolve.dashboard import views
from evorank.evolve.dashboard.server import CSP, RunWatcher, make_server
from evorank.evolve.inspection.queries import run_status

from synthetic_run import BM25, make_collections, make_run


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn_dashboard")
    _, recs = make_run(root / "run", make_collections(root))
    return root / "run", recs


@pytest.fixture(scope="module")
def server(syn):
    srv = make_server([syn[0], syn[0]], min_interval=0.0, duty=1.0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_command_prints_its_url_and_serves_the_page(syn):
    proc = subprocess.Popen([sys.executable, "-m", "evorank", "dashboard", str(syn[0]), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = proc.stdout.readline()
        m = re.match(r"dashboard: (http://127\.0\.0\.1:(\d+)/) ", line)
        assert m and int(m.group(2)) > 0, line
        status, headers, body = get(m.group(1))
        assert status == 200 and headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
        page = body.decode()
        assert '<script src="/static/dashboard.js" defer></script>' in page
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script in the page"
        assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the page loads something from elsewhere"
        status, headers, js = get(m.group(1) + "static/dashboard.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert b"innerHTML" not in js and b"insertAdjacentHTML" not in js and b"eval(" not in js
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_command_refuses_a_folder_without_a_run_and_a_port_in_use(tmp_path, capsys, server, syn):
    assert main(["dashboard", str(tmp_path), "--port", "0"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["dashboard", str(syn[0]), "--port", str(server.port)]) == 2
    assert "pass --port 0 for any free port" in capsys.readouterr().err


def test_json_answers_and_refusals(server, syn):
    base = server.url
    status, _, body = get(base + "api/runs")
    runs = json.loads(body)["runs"]
    assert [r["index"] for r in runs] == [0, 1] and runs[0]["path"] == str(syn[0].resolve())
    status, headers, body = get(base + "api/runs/0/overview")
    assert status == 200 and headers["Content-Type"] == "application/json" and headers["X-Content-Type-Options"] == "nosniff"
    tag = headers["ETag"]
    assert get(base + "api/runs/0/overview", {"If-None-Match": tag})[0] == 304
    status, _, body = get(base + "api/runs/0/points?since=0")
    pts = json.loads(body)
    assert pts["max_id"] == len(pts["points"]) == json.loads(get(base + "api/runs/0/overview")[2])["max_id"]
    assert json.loads(get(base + f"api/runs/0/points?since={pts['max_id'] - 2}")[2])["points"] == pts["points"][-2:]
    assert get(base + "api/runs/0/points?since=x")[0] == 400
    assert get(base + "api/runs/2/overview")[0] == 404
    status, _, body = get(base + "api/runs/0/programs/99999")
    assert status == 404 and "no program with id 99999" in json.loads(body)["error"]
    assert get(base + "static/../server.py")[0] == 404
    port = server.port
    assert get(f"http://127.0.0.1:{port}/api/runs", {"Host": f"attacker.example:{port}"})[0] == 403
    req = urllib.request.Request(base + "api/runs", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_overview_says_what_status_says(syn):
    run_dir, recs = syn
    with RunStore.open(run_dir, readonly=True) as store:
        with store.read_snapshot():
            data = views.overview(store, store.summaries())
            st = run_status(store)
            elites = store.elite_table()
    assert data["proposals"] == st["proposals"] and data["proposals_done"] == st["proposals_done"] == 8
    assert data["best"]["id"] == st["best"]["id"]
    shown = {c["id"] for g in data["grid"]["islands"] for c in g["cells"]}
    assert shown <= set(elites.values()) and recs["rich"].id in shown
    assert [c["id"] for c in data["grid"]["islands"][1]["cells"]] != []
    top = data["top"]
    assert top[0]["fitness"] == max(r["fitness"] for r in top)
    assert sum(1 for r in top if r["operator"] == "seed") == 2  # each seed once, not once per island
    assert all(r["operator"] != "migration" for r in top)
    assert data["speed"]["eta_s"] is None  # not running
    json.dumps(data, allow_nan=False)


def test_program_detail_lineage_tree_diff_and_explanation(syn):
    run_dir, recs = syn
    with RunStore.open(run_dir, readonly=True) as store:
        with store.read_snapshot():
            rich = views.program_detail(store, str(recs["rich"].id))
            k1 = views.program_detail(store, str(recs["k1"].id))
            broken = views.program_detail(store, str(recs["broken"].id))
    assert [s["id"] for s in rich["lineage"]] == [recs["bm25@1"].id, recs["k1"].id, recs["b"].id, recs["rich"].id]
    assert [o["id"] for o in rich["lineage"][-1]["other_parents"]] == [recs["ql1"].id]  # the crossover partner
    assert rich["parent"]["id"] == recs["b"].id and rich["seed"]["seed_name"] == "bm25"
    assert "+    return np.log1p" in rich["diff"] or "_coverage" in rich["diff"]
    migrated = {recs["migrant"].id} if recs["migrant"].parent_ids == (recs["k1"].id,) else set()
    assert {c["id"] for c in k1["children"]} == {recs["broken"].id, recs["b"].id} | migrated
    assert k1["explanation"] == "RESPONSE-K1: <<<<<<< SEARCH" and k1["code"] == recs["k1"].code
    assert "-K1 = 0.9" in k1["diff"] and "+K1 = 1.1" in k1["diff"]
    assert broken["failure_reason"] == "syntax_error" and broken["failure_detail"] == "line 22: expected ':'"
    rows = {(r["collection"], r["metric"]): r for r in k1["comparison"]}
    assert rows[(None, "fitness")]["value"] == recs["k1"].fitness
    assert rows[(None, "fitness")]["parent"] == recs["bm25@1"].fitness


def test_a_watched_run_is_read_only_when_it_changed(tmp_path):
    store, recs = make_run(tmp_path / "run", ["builtin:demo"], close=False)
    try:
        watcher = RunWatcher(0, tmp_path / "run", min_interval=0.0, alive_ttl=3600, duty=1.0)
        v1, body1 = watcher.overview()
        for _ in range(5):
            assert watcher.overview() == (v1, body1)
        assert watcher.reads == 1
        time.sleep(0.01)
        store.add_program(ProgramRecord(code=BM25.replace("K1 = 0.9", "K1 = 1.7"), operator="diff", island=0,
                                        generation=9, iteration=9, parent_ids=(recs["bm25"].id,),
                                        metrics=recs["bm25"].metrics, fitness=0.99, latency_ratio=1.0))
        v2, body2 = watcher.overview()
        assert watcher.reads == 2 and v2 == v1 + 1
        assert json.loads(body2)["max_id"] == json.loads(body1)["max_id"] + 1
        assert json.loads(watcher.points(json.loads(body1)["max_id"]))["points"][0][5] == 0.99
        slow = RunWatcher(0, tmp_path / "run", min_interval=3600)
        slow.overview()
        store.log_event("note", {})
        slow.overview()
        assert slow.reads == 1  # at most once per min_interval, however often it is asked
        costly = RunWatcher(0, tmp_path / "run", min_interval=0.0, duty=1e-6)
        costly.overview()
        store.log_event("note", {})
        costly.overview()
        assert costly.reads == 1  # a read that costs waits in proportion before the next one
    finally:
        store.close()


def test_the_server_imports_nothing_heavy():
    code = ("import sys, evorank.evolve.dashboard.server\n"
            "heavy = ('pandas', 'matplotlib', 'ir_datasets', 'scipy', 'ranx', 'openai', 'dask', 'numba')\n"
            "print([m for m in sys.modules if m.split('.')[0] in heavy])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_a_run_without_programs_yet(tmp_path):
    RunStore.create(tmp_path / "empty", {"iterations": 3}, 0, synchronous="NORMAL").close()
    watcher = RunWatcher(0, tmp_path / "empty")
    data = json.loads(watcher.overview()[1])
    assert data["state"] == "not started" and data["best"] is None and data["top"] == [] and data["max_id"] == 0
    assert data["grid"]["islands"] == [{"island": 0, "elites": 0, "cells": []}]
    assert json.loads(watcher.points(0))["points"] == []
