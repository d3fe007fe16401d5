"""Sandboxed parallel evaluation (evaluators/parallel.py): the adversarial battery, workers, cascade."""
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from evorank.evaluators.evaluate import evaluate_on, load_topics
from evorank.evaluators.cascade import CascadeConfig, cascade_sample
from evorank.evaluators.parallel import Evaluator, Limits, evaluate_program_sandboxed
from evorank.evaluators.program.source import compile_program, seed_path, split_block
from conftest import cmdline, descendants, long_lived_helper, proc_table, sandbox_processes, write_random_beir
from evorank.evaluators.sandbox.jail import SANDBOX_UID_BASE


BM25 = seed_path("bm25").read_text(encoding="utf-8")
QL = seed_path("ql_dirichlet").read_text(encoding="utf-8")
SPLIT = split_block(BM25)
SECRET = "sk-test-secret"
TIMEOUT = 2.0
LIMITS = Limits(timeout_s=TIMEOUT, memory_mb=300, output_bytes=20_000)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVORANK_CACHE", str(root / "cache"))
        # secrets in the parent's environment must never reach a worker or a candidate
        mp.setenv("OPENAI_API_KEY", SECRET)
        mp.setenv("EVORANK_TEST_TOKEN", SECRET + "-token")
        mp.setenv("https_proxy", "http://proxy.invalid:3128")
        topics = load_topics(str(write_random_beir(root / "coll")))
        ev = Evaluator([], n_workers=2, limits=LIMITS, topics=[topics], cascade=CascadeConfig())
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.setblocking(False)
        reference, _ = evaluate_on(compile_program(BM25), topics)
        yield {"root": root, "topics": topics, "ev": ev, "server": server, "port": server.getsockname()[1],
               "reference": reference}
        ev.close()
        server.close()


def assert_exact_bm25(ev, reference):
    res = ev.evaluate([BM25], [BM25], [None], ["bm25-after"])[0]
    assert res.ok and res.stage == 2, (res.failure_reason, res.failure_detail)
    got = res.suite.collections[0]
    assert got.metrics == reference.metrics
    for m, v in reference.per_query.items():
        np.testing.assert_array_equal(got.per_query[m], v)


def assert_no_connection(server):
    with pytest.raises(BlockingIOError):
        server.accept()


def all_text(res) -> str:
    parts = [str(res.failure_reason), str(res.failure_detail), *res.outputs.values()]
    if res.suite is not None:
        parts += [str(c.error) for c in res.suite.collections]
    return "\n".join(parts)


# -- the adversarial battery (static checks and sandbox, as in production) -------------------------

def battery(port: int) -> list[tuple[str, str, str]]:
    """(name, EVOLVE-BLOCK, expected reason); the block replaces the BM25 seed's."""
    bm25_slow = SPLIT.block.replace(
        "    rows = state[query.term_ids]", "    x = 0\n    for _ in range(DELAY):\n        x += 1\n    rows = state[query.term_ids]")
    return [
        ("infinite loop", "def score(q, index, s):\n    while True:\n        pass\n", "timeout"),
        ("sleep", "import time\ndef score(q, index, s):\n    time.sleep(100)\n", "forbidden:import time"),
        ("busy wait in prepare", "def prepare(index):\n    x = 0\n    while x >= 0:\n        x += 1\n\n"
                                 "def score(q, index, s):\n    return None\n", "timeout"),
        ("redos", "import re\ndef score(q, index, s):\n    re.match('(a+)+$', 'a' * 60 + 'b')\n", "timeout"),
        ("fork bomb", "import os\ndef score(q, index, s):\n    while True:\n        os.fork()\n", "forbidden:import os"),
        ("memory bomb", "def score(q, index, s):\n    return np.ones((10**6, 10**6))\n", "memory"),
        ("memory creep", "def score(q, index, s):\n    x = []\n    while True:\n        x.append(np.empty(10**7))\n",
         "memory"),
        ("list bomb", "def score(q, index, s):\n    return [0] * (10**10)\n", "memory"),
        ("deep recursion", "def f(n):\n    return f(n + 1)\n\ndef score(q, index, s):\n    return f(0)\n",
         "exception:RecursionError"),
        ("write file", "def score(q, index, s):\n    with open('out.txt', 'w') as f:\n        f.write('x')\n",
         "forbidden:name open"),
        ("read env", "import os\ndef score(q, index, s):\n    print(os.environ)\n", "forbidden:import os"),
        ("builtins import", "def score(q, index, s):\n    os = __builtins__['__import__']('os')\n",
         "forbidden:name __builtins__"),
        ("subclasses", "def score(q, index, s):\n    for c in ().__class__.__base__.__subclasses__():\n        pass\n",
         "forbidden:attribute __subclasses__"),
        ("socket", f"import socket\ndef score(q, index, s):\n    socket.create_connection(('127.0.0.1', {port}))\n",
         "forbidden:import socket"),
        ("write index", "def score(q, index, s):\n    index.doc_len[0] = 1.0\n", "exception:ValueError"),
        ("monkeypatch numpy", "np.argsort = sorted\nnp.bincount = None\n" + SPLIT.block, "forbidden:assign np.argsort"),
        ("huge stdout", "def score(q, index, s):\n    print('x' * 1_000_000)\n", "output_limit"),
        ("print flood", "def score(q, index, s):\n    for i in range(10**7):\n        print(i)\n", "output_limit"),
        ("os._exit", "import os\ndef score(q, index, s):\n    os._exit(3)\n", "forbidden:import os"),
        ("SystemExit", "def score(q, index, s):\n    raise SystemExit(3)\n", "exit:3"),
        ("exit builtin", "def score(q, index, s):\n    exit(3)\n", "forbidden:name exit"),
        ("segfault via ctypes", "import ctypes\ndef score(q, index, s):\n    ctypes.string_at(0)\n",
         "forbidden:import ctypes"),
        ("nan", "def score(q, index, s):\n    x = np.zeros(index.n_docs)\n    x[3] = np.nan\n    return x\n",
         "invalid_scores:nan"),
        ("+inf", "def score(q, index, s):\n    return np.full(index.n_docs, np.inf)\n", "invalid_scores:inf"),
        ("list", "def score(q, index, s):\n    return [0.0] * index.n_docs\n", "invalid_scores:type"),
        ("wrong length", "def score(q, index, s):\n    return np.zeros(index.n_docs - 1)\n", "invalid_scores:shape"),
        ("object dtype", "def score(q, index, s):\n    return np.array([None] * index.n_docs)\n", "invalid_scores:dtype"),
        ("slow over limit", "DELAY = 10**7\n" + bm25_slow, "timeout"),
        ("prepare raises", "def prepare(index):\n    return 1 / 0\n\ndef score(q, index, s):\n    return None\n",
         "exception:ZeroDivisionError"),
        ("getattr trick", "def score(q, index, s):\n    return getattr(np, 'lo' + 'ad')('/etc/passwd')\n",
         "forbidden:name getattr"),
        ("format leak", "import typing\ndef score(q, index, s):\n    raise ValueError('{0.sys.modules}'.format(typing))\n",
         "forbidden:format_fields"),
        ("string eval", "import typing\ndef score(q, index, s):\n    return typing.get_type_hints(score)\n",
         "forbidden:attribute get_type_hints"),
        ("frame walk", "def g():\n    yield 1\n\ndef score(q, index, s):\n    return g().gi_frame.f_back\n",
         "forbidden:attribute f_back"),
        ("KeyboardInterrupt", "def score(q, index, s):\n    raise KeyboardInterrupt\n", "exception:KeyboardInterrupt"),
        ("no score", "def scor(q, index, s):\n    return None\n", "missing_score"),
        ("syntax error", "def score(q, index, s)\n    return None\n", "syntax_error"),
    ]


def test_adversarial_battery(env):
    ev, server = env["ev"], env["server"]
    cases = battery(env["port"])
    assert len(cases) >= 20
    sources = [SPLIT.join(block) for _, block, _ in cases]
    # plus: a modified head, and a slow-but-valid program under the limit
    sources.append(BM25.replace("import numpy as np", "import numpy as np, os"))
    sources.append(SPLIT.join("DELAY = 2000\n" + SPLIT.block.replace(
        "    rows = state[query.term_ids]", "    x = 0\n    for _ in range(DELAY):\n        x += 1\n    rows = state[query.term_ids]")))
    expected = [reason for _, _, reason in cases] + ["modified_outside_block:head", None]
    names = [name for name, _, _ in cases] + ["modified head", "slow under limit"]
    t0 = time.monotonic()
    results = ev.evaluate(sources, [BM25] * len(sources), [None] * len(sources), names)
    wall = time.monotonic() - t0
    for name, want, res in zip(names, expected, results):
        assert res.failure_reason == want, (name, res.failure_reason, res.failure_detail)
        assert res.eval_seconds <= TIMEOUT + 2.0, (name, res.eval_seconds)
        if want is not None:
            assert res.fitness == 0.0 and res.failure_detail
            assert res.stage == (0 if res.eval_seconds == 0 else 2)
        assert SECRET not in all_text(res)
    assert results[-1].fitness == pytest.approx(ev.evaluate([BM25])[0].fitness)
    assert wall < len(sources) * (TIMEOUT + 2.0)  # nothing outlived its limit (even run one after the other)
    # nothing leaked into the next candidate, nothing survived, nobody connected
    assert_exact_bm25(ev, env["reference"])
    assert sandbox_processes() == []
    assert_no_connection(server)


# -- the OS layers alone (static checks and restricted builtins bypassed) --------------------------

def unsafe_block(body: str) -> str:
    return "import os, sys, socket, ctypes, time, posix\n\ndef score(q, index, s):\n" + \
        "".join(f"    {line}\n" for line in body.strip("\n").split("\n"))


def test_os_layers_hold_without_static_checks(env):
    ev, server, port, root = env["ev"], env["server"], env["port"], env["root"]
    secret_file = root / "qrels-secret.tsv"
    secret_file.write_text("q1\td7\t2 TOPSECRET")
    marker = root / "pwned"
    attacks = {
        "read file": f"""
out = []
for p in [{str(secret_file)!r}, '/etc/passwd', '/proc/self/environ', {str(root)!r}]:
    try:
        out.append(open(p).read())
    except Exception as e:
        out.append('blocked:' + type(e).__name__)
raise RuntimeError(repr(out))
""",
        "socket": f"""
out = []
for make in (lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1),
             lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)):
    try:
        make()
        out.append('connected')
    except Exception as e:  # LookupError (no idna codec in the jail), PermissionError (seccomp), ...
        out.append('blocked:' + type(e).__name__)
raise RuntimeError(repr(out))
""",
        "env": """
print(dict(os.environ), posix.environ, sys.argv)
raise RuntimeError('blocked env=' + repr(dict(os.environ)))
""",
        "fork bomb": """
n = 0
while True:
    try:
        if os.fork() == 0:
            os.setsid()
            while True:
                time.sleep(1)
        n += 1
    except OSError:
        raise RuntimeError('blocked after ' + str(n))
""",
        "subclasses": f"""
wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]
rc = wrap.__init__.__globals__['system']('touch {marker}')
raise RuntimeError('blocked rc=' + str(rc))
""",
        "kill everyone": """
for target in (-1, 0, 1):
    try:
        os.kill(target, 9)
    except OSError:
        pass
raise RuntimeError('blocked: still here')
""",
        "monkeypatch numpy": """
np.argsort = np.bincount = np.lexsort = np.partition = lambda *a, **k: 0
import evorank.evaluators.program.ranking as r
r.top_k = None
raise RuntimeError('blocked: patched')
""",
        "write index memory": "ctypes.memmove(index.doc_len.ctypes.data, b'\\xff' * 8, 8)",
        "segfault": "ctypes.string_at(0)",
        "os._exit": "os._exit(3)",
    }
    expected = {"write index memory": "crashed:SIGSEGV", "segfault": "crashed:SIGSEGV", "os._exit": "exit:3"}
    ev._unsafe_skip_language_checks = True
    try:
        results = ev.evaluate([SPLIT.join(unsafe_block(b)) for b in attacks.values()], names=list(attacks))
    finally:
        ev._unsafe_skip_language_checks = False
    for name, res in zip(attacks, results):
        text = all_text(res)
        want = expected.get(name, "exception:RuntimeError")
        assert res.failure_reason == want, (name, res.failure_reason, res.failure_detail)
        assert res.eval_seconds <= TIMEOUT + 2.0, name
        assert SECRET not in text and "TOPSECRET" not in text and "proxy.invalid" not in text, name
        if want == "exception:RuntimeError":
            assert "blocked" in res.failure_detail, (name, res.failure_detail)
    assert "OMP_NUM_THREADS" in results[2].failure_detail and "OPENAI" not in results[2].failure_detail
    assert not marker.exists()
    assert_no_connection(server)
    time.sleep(0.2)
    assert sandbox_processes() == []
    assert_exact_bm25(ev, env["reference"])  # and the workers survived it all


def test_workers_never_saw_the_secrets(env):
    ev = env["ev"]
    ev.evaluate([BM25])  # make sure the workers exist
    workers = [p for p in descendants(os.getpid()) if b"LokyProcess" in cmdline(p)]
    assert workers  # (loky's resource trackers inherit the full environment, but never fork candidates)
    for pid in workers:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert SECRET.encode() not in environ and b"proxy.invalid" not in environ


# -- cascade --------------------------------------------------------------------------------------

def test_cascade_sample_is_fixed_and_seeded():
    a = cascade_sample(40, "coll", 0)
    assert len(a) == 20 and list(a) == sorted(set(a.tolist()))
    np.testing.assert_array_equal(a, cascade_sample(40, "coll", 0))
    assert list(a) != list(cascade_sample(40, "coll", 1))
    assert list(a) != list(cascade_sample(40, "other", 0))
    assert len(cascade_sample(300, "x", 0)) == 60 and len(cascade_sample(12, "x", 0)) == 12
    assert len(cascade_sample(100, "x", 0, CascadeConfig(fraction=0.5, min_queries=5))) == 50


def test_cascade_stages_and_identical_full_metrics(env):
    ev, topics = env["ev"], env["topics"]
    full_direct, full_cascaded, stopped = ev.evaluate([BM25, BM25, BM25], [BM25] * 3, [None, 1e-9, 10.0])
    assert full_direct.stage == 2 and full_cascaded.stage == 2
    assert full_direct.suite.collections[0].metrics == full_cascaded.suite.collections[0].metrics
    # the collection has fewer than 1,000 documents: R@100 does not count there (metrics.MIN_DOCS_PER_CUTOFF)
    assert topics.index.n_docs < 1000
    assert full_direct.fitness == full_cascaded.fitness == pytest.approx(env["reference"].metrics["ndcg@10"])
    # stage-1 fitness measured on the sample equals the one derived from the full run
    assert full_direct.stage1_fitness == pytest.approx(full_cascaded.stage1_fitness, abs=1e-12)
    assert stopped.stage == 1 and stopped.ok and stopped.stopped_by_cascade and stopped.fitness is None
    assert stopped.stage1_fitness == pytest.approx(full_direct.stage1_fitness, abs=1e-12)
    assert stopped.suite.collections[0].n_queries == 20 < len(topics.queries)
    # a failure in stage 1 ends at stage 1 with the reason
    bad = ev.evaluate([SPLIT.join("def score(q, index, s):\n    return None\n")], [BM25], [0.5])[0]
    assert bad.stage == 1 and bad.failure_reason == "invalid_scores:type" and bad.fitness == 0.0
    # a worse candidate (BM25 that retrieves nothing for about three queries in four; the judgements of this random
    # collection are random, so only retrieving less is reliably worse) stops at 0.9 x its parent's stage-1 fitness
    weak = SPLIT.join(SPLIT.block.replace("return np.where(matched, scores, -np.inf)",
                                          "return np.where(matched & (len(query.text) % 4 == 0), scores, -np.inf)"))
    res = ev.evaluate([weak], [BM25], [full_direct.stage1_fitness])[0]
    assert res.stage == 1 and res.stage1_fitness < 0.9 * full_direct.stage1_fitness


def test_trusted_path_and_one_shot(env):
    ev, topics = env["ev"], env["topics"]
    res = ev.evaluate_trusted(QL, name="ql")
    ql_ref, _ = evaluate_on(compile_program(QL), topics)
    assert res.ok and res.stage == 2 and res.suite.collections[0].metrics == ql_ref.metrics
    assert res.latency_ms is not None and res.latency_ms > 0
    suite = evaluate_program_sandboxed(QL, [], seed_source=QL, n_workers=1, limits=LIMITS, topics=[topics],
                                       fitness="latency-aware")
    assert suite.ok and suite.collections[0].metrics == ql_ref.metrics
    assert suite.fitness_name == "latency-aware" and suite.latency_ratio is not None and suite.latency_ratio > 0
    bad = evaluate_program_sandboxed(SPLIT.join("import os\n"), [], seed_source=BM25, n_workers=1, topics=[topics])
    assert not bad.ok and bad.collections[0].error_reason == "forbidden:import os" and bad.fitness == 0.0


def test_close_leaves_no_processes(env):
    topics = env["topics"]
    before = set(descendants(os.getpid()))
    ev = Evaluator([], n_workers=1, limits=LIMITS, topics=[topics])
    ev._unsafe_skip_language_checks = True
    res = ev.evaluate([SPLIT.join(unsafe_block("while True:\n    if os.fork() == 0:\n        os.setsid()"))])[0]
    assert res.failure_reason in ("timeout", "exception:BlockingIOError", "exception:PermissionError")  # fork is refused
    ev.close()
    time.sleep(0.3)
    left = set(descendants(os.getpid())) - before
    # loky's and multiprocessing's helpers live as long as this process; nothing else may remain
    assert [p for p in left if not long_lived_helper(p)] == []
    assert sandbox_processes() == []


def test_worker_killed_midway_is_recovered(env, caplog):
    """A worker that dies (here: SIGKILLed from outside) is replaced and its tasks are retried once."""
    import signal
    import threading

    topics = env["topics"]
    slow = SPLIT.join("DELAY = 300000\n" + SPLIT.block.replace(
        "    rows = state[query.term_ids]", "    x = 0\n    for _ in range(DELAY):\n        x += 1\n    rows = state[query.term_ids]"))
    others = set(descendants(os.getpid()))  # e.g. the workers of the module's evaluator: not these
    with Evaluator([], n_workers=2, limits=Limits(timeout_s=20), topics=[topics]) as ev:
        ev.evaluate([BM25] * 2)  # workers up
        workers = [p for p in descendants(os.getpid()) if p not in others and b"LokyProcess" in cmdline(p)]
        assert workers

        def kill_one():  # once workers[0] is running a candidate (its jail exists), however loaded the machine
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(ppid == workers[0] and uid >= SANDBOX_UID_BASE for ppid, uid in proc_table().values()):
                    break
                time.sleep(0.01)
            os.kill(workers[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_one)
        killer.start()
        results = ev.evaluate([slow] * 4, [BM25] * 4)
        killer.join()
        assert all(r.ok for r in results), [(r.failure_reason, r.failure_detail) for r in results]
        assert len({r.fitness for r in results}) == 1
        assert "restarting the pool" in caplog.text
        assert_exact_bm25(ev, env["reference"])
    assert sandbox_processes() == []
