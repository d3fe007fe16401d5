"""The sandbox itself (evaluators/sandbox/runner.py), called directly from the test process.

Most hostile programs here run with the language layer OFF (``restrict_builtins=False``, no static
checks): these tests prove that the OS layers alone stop file reads, network, secrets in the
environment, fork bombs and escapes. Short limits keep the file fast.
"""
import json
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from evorank.evaluators.evaluate import evaluate_on, measure
from evorank.evaluators.program.source import compile_program, seed_path, split_block
from evorank.evaluators.program.ranking import rank
from conftest import long_lived_helper, random_topics, proc_table, sandbox_processes
from evorank.evaluators.sandbox import wire
from evorank.evaluators.sandbox.jail import LAYERS, SANDBOX_UID_BASE
from evorank.evaluators.sandbox.runner import Limits, isolation_layers, run_sandboxed


BM25 = seed_path("bm25").read_text(encoding="utf-8")
SPLIT = split_block(BM25)
SECRET = "sk-test-secret"
IS_ROOT = os.geteuid() == 0
LIMITS = Limits(timeout_s=2.0, memory_mb=300, output_bytes=20_000)


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    yield from random_topics(tmp_path_factory, "sandbox")


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET + "-gh")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")


def run(topics, block: str, limits: Limits = LIMITS, unsafe: bool = False, queries=None):
    src = SPLIT.join(block)
    t0 = time.monotonic()
    res = run_sandboxed(src, topics.index, topics.queries if queries is None else queries, 1000, limits,
                        restrict_builtins=not unsafe)
    res.elapsed = time.monotonic() - t0
    assert res.elapsed <= limits.timeout_s + 2.0, (res.reason, res.elapsed)
    return res


def children_of_this_process() -> list[int]:
    """Children of this process, except the helpers multiprocessing/loky keep (``long_lived_helper``)."""
    me = os.getpid()
    return [p for p, (ppid, _) in proc_table().items() if ppid == me and not long_lived_helper(p)]


# -- correctness -----------------------------------------------------------------------------------

def test_valid_program_matches_in_process_ranking(topics):
    res = run(topics, SPLIT.block)
    assert res.ok, res.message
    ref = rank(compile_program(BM25), topics.index, topics.queries, 1000)
    assert res.ranking.query_ids == ref.query_ids
    for a, b in zip(res.ranking.doc_idx, ref.doc_idx):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(res.ranking.scores, ref.scores):
        np.testing.assert_array_equal(a, b)
    assert len(res.ranking.latency_ms) == len(topics.queries) and res.ranking.prepare_ms >= 0
    in_process, _ = evaluate_on(compile_program(BM25), topics)
    assert measure(res.ranking, topics).metrics == in_process.metrics
    assert children_of_this_process() == []


def test_isolation_layers_active(topics):
    layers = isolation_layers(topics.index)
    assert {"process", "fds", "rlimits", "env"} <= set(layers)
    if IS_ROOT:
        expected = set(LAYERS) - {"userns"}
        assert expected <= set(layers), expected - set(layers)


# -- every outcome is a result ---------------------------------------------------------------------

@pytest.mark.parametrize("block, reason", [
    ("def score(q, index, s):\n    while True:\n        pass\n", "timeout"),
    ("def prepare(index):\n    x = 0\n    while x >= 0:\n        x += 1\n\ndef score(q, index, s):\n    return None\n",
     "timeout"),
    ("def score(q, index, s):\n    return np.ones((10**6, 10**6))\n", "memory"),
    ("def score(q, index, s):\n    x = []\n    while True:\n        x.append(np.empty(10**7))\n", "memory"),
    ("def score(q, index, s):\n    return [0] * (10**10)\n", "memory"),
    ("def f(n):\n    return f(n + 1)\n\ndef score(q, index, s):\n    return f(0)\n", "exception:RecursionError"),
    ("def score(q, index, s):\n    x = np.zeros(index.n_docs)\n    x[0] = np.nan\n    return x\n", "invalid_scores:nan"),
    ("def score(q, index, s):\n    return np.full(index.n_docs, np.inf)\n", "invalid_scores:inf"),
    ("def score(q, index, s):\n    return [0.0] * index.n_docs\n", "invalid_scores:type"),
    ("def score(q, index, s):\n    return np.zeros(index.n_docs + 1)\n", "invalid_scores:shape"),
    ("def score(q, index, s):\n    return np.array(['a'] * index.n_docs)\n", "invalid_scores:dtype"),
    ("def score(q, index, s):\n    index.doc_len[0] = 1.0\n", "exception:ValueError"),
    ("def score(q, index, s):\n    raise SystemExit(3)\n", "exit:3"),
    ("def score(q, index, s):\n    raise KeyboardInterrupt\n", "exception:KeyboardInterrupt"),
    ("def score(q, index, s):\n    print('x' * 100_000)\n", "output_limit"),
    ("def score(q, index, s):\n    for i in range(10**7):\n        print(i)\n", "output_limit"),
    ("import re\ndef score(q, index, s):\n    re.match('(a+)+$', 'a' * 60 + 'b')\n", "timeout"),
    ("def prepare(index):\n    return 1 / 0\n\ndef score(q, index, s):\n    return None\n", "exception:ZeroDivisionError"),
    ("def scor(q, index, s):\n    return None\n", "missing_score"),
    ("def score(q, index, s)\n    return None\n", "syntax_error"),
    ("import os\n", "exception:ImportError"),  # runtime layer (static checks are not run here)
    ("def score(q, index, s):\n    return open('/etc/hostname')\n", "exception:NameError"),
])
def test_failures_are_results(topics, block, reason):
    res = run(topics, block)
    assert res.reason == reason, (res.reason, res.message)
    assert res.ranking is None and res.message
    assert sandbox_processes() == [] and children_of_this_process() == []


def test_exception_message_names_line_and_query(topics):
    res = run(topics, "def score(q, index, s):\n    return {}['missing']\n")
    line = SPLIT.head.count("\n") + 2
    assert res.reason == "exception:KeyError"
    assert f"line {line}" in res.message and "query 1 of 40" in res.message


def test_numpys_private_exception_classes_are_reported_as_the_builtin_they_extend(topics):
    """``int_array += floats`` raises numpy's private _UFuncOutputCastingError: a TypeError, not "a class the program
    defined" (the int64 bincount of a query without a vocabulary term, then ``scores += ...``)."""
    res = run(topics, "def score(q, index, s):\n    x = np.zeros(index.n_docs, dtype=np.int64)\n"
                      "    x += np.ones(index.n_docs) * 0.5\n    return x\n")
    assert res.reason == "exception:TypeError", (res.reason, res.message)
    assert "raised TypeError" in res.message and "class the program defined" not in res.message
    assert res.program_text.startswith("UFuncTypeError: Cannot cast ufunc 'add' output")  # numpy's own name


def test_a_shape_error_says_which_arrays_of_the_failing_line_had_which_shape(topics):
    """The lengths in numpy's message, put to names: the exact-type arrays and sparse matrices the failing line
    names, as part of the program's (untrusted) error text."""
    res = run(topics, "def score(q, index, s):\n    per_term = np.zeros(index.n_terms)\n"
                      "    td = index.term_doc\n    return per_term + td.data + index.doc_len\n")
    assert res.reason == "exception:ValueError"
    n_terms, nnz = topics.index.n_terms, topics.index.term_doc.nnz
    assert res.program_text.endswith(f"\narrays in that line: per_term float64[{n_terms}], td sparse csr_matrix"
                                     f"[{n_terms}, {topics.index.n_docs}]"), res.program_text
    assert "operands could not be broadcast" in res.program_text.partition("\n")[0]


def test_slow_but_valid_under_and_over_the_limit(topics):
    slow = SPLIT.block.replace("    rows = state[query.term_ids]",
                               "    x = 0\n    for _ in range(DELAY):\n        x += 1\n    rows = state[query.term_ids]")
    ok = run(topics, "DELAY = 2000\n" + slow)
    assert ok.ok
    ref = run(topics, SPLIT.block)
    assert [list(a) for a in ok.ranking.doc_idx] == [list(a) for a in ref.ranking.doc_idx]
    over = run(topics, "DELAY = 10**7\n" + slow)
    assert over.reason == "timeout" and "of 40 queries" in over.message


def test_cpu_limit_is_a_timeout(topics):
    """The CPU limit, not the wall clock, ends the run: the wall-clock limit is far (the jail may get a fraction of a
    core on a loaded machine), and the CPU time the kernel charged is the limit's."""
    res = run(topics, "def score(q, index, s):\n    while True:\n        pass\n",
              limits=Limits(timeout_s=120.0, cpu_s=1.0, memory_mb=300))
    assert res.reason == "timeout" and "CPU" in res.message
    assert res.cpu_ms >= 800  # the kernel's figure (it may read a little under the limit it enforced)


# -- OS layers with the language layer bypassed ----------------------------------------------------

def unsafe(topics, body: str, limits: Limits = LIMITS):
    """Run ``body`` as score(); it reports what it saw by raising RuntimeError(text)."""
    block = "import os, sys, socket, ctypes, time, signal\n\ndef score(q, index, s):\n" + \
        "".join(f"    {line}\n" for line in body.strip("\n").split("\n"))
    return run(topics, block, limits=limits, unsafe=True, queries=topics.queries[:2])


def reported(res) -> str:
    """What the program said in its RuntimeError (program text: it travels apart from the trusted message)."""
    assert res.reason == "exception:RuntimeError", (res.reason, res.message, res.program_text)
    return res.program_text


def test_file_read_blocked_by_chroot(topics, tmp_path):
    secret_file = tmp_path / "qrels-secret.txt"
    secret_file.write_text("TOPSECRET-QRELS")
    body = f"""
found = []
for p in [{str(secret_file)!r}, '/etc/passwd', '/proc/self/environ', '/root/.bashrc']:
    try:
        found.append(open(p).read())
    except Exception as e:
        found.append('blocked:' + type(e).__name__)
raise RuntimeError(repr(found) + ' root=' + repr(os.listdir('/')))
"""
    msg = reported(unsafe(topics, body))
    assert "TOPSECRET" not in msg and "root:" not in msg
    if IS_ROOT:
        assert msg.count("blocked:") == 4 and "root=[]" in msg


def test_file_write_blocked(topics):
    body = """
out = []
for p in ['/x.txt', '/tmp/x.txt', 'x.txt']:
    try:
        with open(p, 'w') as f:
            f.write('data')
        out.append('wrote ' + p)
    except Exception as e:
        out.append('blocked:' + type(e).__name__)
raise RuntimeError(repr(out))
"""
    msg = reported(unsafe(topics, body))
    assert "wrote" not in msg


def test_environment_is_scrubbed(topics, secret_env):
    body = """
import posix
raise RuntimeError(repr(dict(os.environ)) + repr(posix.environ) + repr(sys.argv) + repr(sys.orig_argv))
"""
    res = unsafe(topics, body)
    msg = reported(res)
    assert SECRET not in msg and "proxy.invalid" not in msg and "OPENAI" not in msg and "TOKEN" not in msg
    assert "'OMP_NUM_THREADS': '1'" in msg
    assert SECRET not in res.output


def test_network_blocked(topics):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    body = f"""
out = []
for family, addr in [(socket.AF_INET, ('127.0.0.1', {port})), (socket.AF_INET, ('8.8.8.8', 53))]:
    try:
        c = socket.socket(family, socket.SOCK_STREAM)
        c.settimeout(1)
        c.connect(addr)
        out.append('connected')
    except Exception as e:
        out.append('blocked:' + type(e).__name__)
raise RuntimeError(repr(out))
"""
    try:
        msg = reported(unsafe(topics, body))
        assert "connected" not in msg and msg.count("blocked:") == 2
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_identity_and_privileges(topics):
    body = """
out = [os.getuid(), os.getgid(), os.getgroups(), os.getpid()]
for name, fn in [('setuid', lambda: os.setuid(0)), ('chroot', lambda: os.chroot('/')),
                 ('kill_init', lambda: os.kill(1, 9)), ('kill_all', lambda: os.kill(-1, 9))]:
    try:
        fn()
        out.append(name + ':done')
    except Exception as e:
        out.append(name + ':' + type(e).__name__)
raise RuntimeError(repr(out))
"""
    msg = reported(unsafe(topics, body))
    assert "setuid:done" not in msg and "chroot:done" not in msg
    if IS_ROOT:
        vals = eval(msg.split("\n")[0])  # noqa: S307 - our own test output
        assert vals[0] >= SANDBOX_UID_BASE and vals[1] >= SANDBOX_UID_BASE and vals[2] == [] and vals[3] == 1
    # the test process (and its workers) survived kill(-1)
    assert run(topics, SPLIT.block).ok


def test_fork_bomb_leaves_nothing_behind(topics):
    body = """
kids = 0
for _ in range(1000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.setsid()          # leave the process group: only the PID namespace can catch this one
        while True:
            time.sleep(1)
    kids += 1
raise RuntimeError('forked ' + str(kids))
"""
    msg = reported(unsafe(topics, body))
    kids = int(msg.rsplit(" ", 1)[1].split()[0])
    assert kids < LIMITS.max_procs
    time.sleep(0.2)
    assert sandbox_processes() == []
    assert children_of_this_process() == []


def test_os_exit_and_segfault(topics):
    assert unsafe(topics, "os._exit(3)").reason == "exit:3"
    assert unsafe(topics, "os._exit(0)").reason == "exit:0"
    assert unsafe(topics, "ctypes.string_at(0)").reason == "crashed:SIGSEGV"
    # writing into the shared, read-only index mapping kills only the candidate
    res = unsafe(topics, "ctypes.memmove(index.doc_len.ctypes.data, b'\\xff' * 8, 8)")
    assert res.reason == "crashed:SIGSEGV"
    assert run(topics, SPLIT.block).ok


def test_system_via_subclasses_cannot_execute(topics, tmp_path):
    marker = tmp_path / "pwned"
    body = f"""
wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]
system = wrap.__init__.__globals__['system']
rc = system('touch {marker}')
raise RuntimeError('rc=' + str(rc))
"""
    msg = reported(unsafe(topics, body))
    assert "rc=0" not in msg
    assert not marker.exists()


# -- the result protocol ---------------------------------------------------------------------------

def _q(i, docs, scores, ms=1.0):
    docs = np.asarray(docs, dtype="<i8")
    scores = np.asarray(scores, dtype="<f8")
    return b"Q" + struct.pack("<IId", i, len(docs), ms) + docs.tobytes() + scores.tobytes()


P = b"I" + struct.pack("<d", 0.5) + b"P" + struct.pack("<d", 1.0)


@pytest.mark.parametrize("stream, problem", [
    (P + _q(0, [1, 2], [2.0, 1.0]) + b"D", None),
    (P + _q(0, [1, 1], [2.0, 2.0]) + b"D", "out of order"),
    (P + _q(0, [2, 1], [2.0, 2.0]) + b"D", "out of order"),
    (P + _q(0, [1, 2], [1.0, 2.0]) + b"D", "descending"),
    (P + _q(0, [1, 99], [2.0, 1.0]) + b"D", "out of range"),
    (P + _q(0, [-1], [2.0]) + b"D", "out of range"),
    (P + _q(0, [1], [np.nan]) + b"D", "non-finite"),
    (P + _q(0, [1], [np.inf]) + b"D", "non-finite"),
    (P + _q(1, [1], [1.0]) + b"D", "out of order"),
    (P + _q(0, [1], [1.0], ms=-5) + b"D", "latency"),
    (P + _q(0, list(range(11)), list(range(11, 0, -1))) + b"D", "more than k"),
    (P + _q(0, [1, 2], [2.0, 1.0])[:-4], "truncated"),
    (P + b"X", "unknown"),
    (_q(0, [1], [1.0]), "bad query record"),
    (P + b"D" + b"junk", "after the end"),
    (b"P" + struct.pack("<d", 1.0) + _q(0, [1], [1.0]) + b"D", "bad prepare record"),  # no import record first
    (P + b"P" + struct.pack("<d", 1.0), "bad prepare record"),
])
def test_parser_rejects_malformed_streams(stream, problem):
    out = wire.parse(stream, n_q=2, n_docs=20, k=10, n_layers=len(LAYERS))
    if problem is None:
        assert out.problem is None and out.done
    else:
        assert problem in out.problem


# -- degraded modes --------------------------------------------------------------------------------

def test_keeper_path_without_direct_pid_namespace(topics, monkeypatch):
    """The fallback path (a keeper process creates the namespaces and relays the status) gives the same results."""
    import evorank.evaluators.sandbox.jail as jail

    jail.prepare_process()
    monkeypatch.setattr(jail, "_own_pidns", None)
    res = run(topics, SPLIT.block)
    assert res.ok and "pidns" in res.layers
    ref = rank(compile_program(BM25), topics.index, topics.queries, 1000)
    assert all((a == b).all() for a, b in zip(res.ranking.doc_idx, ref.doc_idx))
    assert run(topics, "def score(q, index, s):\n    while True:\n        pass\n").reason == "timeout"
    assert unsafe(topics, "ctypes.string_at(0)").reason == "crashed:SIGSEGV"
    assert unsafe(topics, "os._exit(4)").reason == "exit:4"
    bomb = "while True:\n    try:\n        os.fork() or (os.setsid(), time.sleep(60))\n    except OSError:\n" \
           "        raise RuntimeError('blocked')"
    msg = reported(unsafe(topics, bomb))
    assert "blocked" in msg
    time.sleep(0.2)
    assert sandbox_processes() == [] and children_of_this_process() == []


NON_ROOT_SCRIPT = r"""
import json, os, sys
import numpy as np
from evorank.evaluators.sandbox import jail
from evorank.evaluators.sandbox import runner as sandbox
from evorank.evaluators.program.ranking import Query
for m in jail.PRELOAD_MODULES:
    try:
        __import__(m)
    except Exception:
        pass
import socket
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
jail._prctl(jail.PR_SET_DUMPABLE, 1)  # as for any process started by an ordinary user
class Tiny:
    n_docs = 3
q = [Query("q", "", (), np.zeros(0, dtype=np.int64), np.zeros(0))]
out = {"layers": list(sandbox.isolation_layers())}
def run(body):
    src = "import os, socket\n# EVOLVE-BLOCK-START\ndef score(query, index, state):\n" + "".join(
        "    " + l + "\n" for l in body.split("\n")) + "# EVOLVE-BLOCK-END\n"
    r = sandbox.run_sandboxed(src, Tiny(), q, 10, sandbox.Limits(timeout_s=3), restrict_builtins=False)
    return [r.reason, (r.message or "") + r.program_text]
out["read"] = run("open(%r).read()" % sys.argv[1])
out["socket"] = run("socket.socket().connect(('127.0.0.1', 22))")
out["chroot"] = run("os.chroot('/')")
out["valid"] = run("import numpy as np\nreturn np.zeros(index.n_docs)")
print(json.dumps(out))
"""


@pytest.mark.skipif(not IS_ROOT, reason="needs root to start the unprivileged test process")
def test_unprivileged_fallback_uses_a_user_namespace(tmp_path):
    """Started by an ordinary user, the sandbox falls back to a user namespace and still isolates."""
    import subprocess
    import sys

    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    secret.chmod(0o644)
    tmp_path.chmod(0o755)
    proc = subprocess.run([sys.executable, "-c", NON_ROOT_SCRIPT, str(secret)], capture_output=True, text=True,
                          timeout=60, cwd=str(Path(__file__).resolve().parent.parent))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "userns" not in out["layers"]:
        pytest.skip("unprivileged user namespaces are not available here")
    assert {"pidns", "netns", "chroot", "uid", "no_new_privs"} <= set(out["layers"])
    assert out["read"][0] == "exception:FileNotFoundError" and "TOPSECRET" not in out["read"][1]
    assert out["socket"][0] == "exception:PermissionError"
    assert out["chroot"][0] == "exception:PermissionError"
    assert out["valid"][0] is None


def test_ordinary_python_works_under_the_runtime_layer(topics):
    """Classes, dataclasses, allowed imports and literal getattr all work with restricted builtins."""
    block = '''
from collections import Counter
from dataclasses import dataclass, field
import heapq
import math
from scipy.special import expit


@dataclass
class State:
    weights: object
    notes: list = field(default_factory=list)


class Base:
    def __init__(self):
        self.k1 = 0.9


class Scorer(Base):
    def __init__(self):
        super().__init__()
        self._b = 0.4


def prepare(index):
    s = Scorer()
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = td.data.astype(np.float64)
    norm = s.k1 * (1.0 - s._b + s._b * index.doc_len[td.indices] / index.avg_doc_len)
    rows = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    w = idf[rows] * tf / (tf + norm)
    _ = Counter([1, 1, 2]), heapq.nlargest(1, [1, 2]), math.sqrt(4.0), expit(0.0), getattr(index, "n_docs")
    print("prepared", len(w))
    return State(sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape))


def score(query, index, state):
    rows = state.weights[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    return np.where(matched, scores, -np.inf)
'''
    from evorank.evaluators.program.checks import check_source

    assert check_source(SPLIT.join(block), BM25).ok
    res = run(topics, block)
    assert res.ok, res.message
    assert res.output.startswith("prepared")
    ref = run(topics, SPLIT.block)
    assert all((a == b).all() for a, b in zip(res.ranking.doc_idx, ref.ranking.doc_idx))


def test_numpy_methods_that_import_lazily_from_c_work_under_the_runtime_layer(topics):
    """ndarray.sum/mean/std/max..., array printing and sparse reductions import numpy internals from C on first
    use; with the candidate's frame on top, those imports go through its restricted ``__import__``. They load
    nothing new and must not fail (an LLM-written ``tf.sum()`` was once rejected as a forbidden import)."""
    block = '''
def prepare(index):
    td = index.term_doc
    idf = np.log1p((index.n_docs - index.df + 0.5) / (index.df + 0.5))
    tf = td.data.astype(np.float64)
    norm = 0.9 * (0.6 + 0.4 * index.doc_len[td.indices] / index.doc_len.mean())
    rows = np.repeat(np.arange(index.n_terms), np.diff(td.indptr))
    w = idf[rows] * tf / (tf + norm)
    stats = (tf.sum(), tf.prod(), tf.mean(), tf.std(), tf.var(), tf.max(), tf.min(), tf.any(), tf.all(),
             tf.clip(0, 3).sum(), tf.round(1).sum(), np.median(tf), np.percentile(tf, 90), np.linalg.norm(tf),
             td.sum(axis=1).max(), td.max(), str(tf[:3]), repr(tf[:3]), f"{tf.mean():.3f}", tf.argmax(), tf.ptp()
             if hasattr(tf, "ptp") else 0.0, np.partition(tf, 1)[0], tf.cumsum()[-1], tf.astype(np.float32).sum())
    print(len(stats))
    return sp.csr_matrix((w, td.indices, td.indptr), shape=td.shape)


def score(query, index, state):
    rows = state[query.term_ids]
    weights = rows.data * np.repeat(query.qtf, np.diff(rows.indptr))
    weights = weights / max(float(weights.sum()), 1e-9) * weights.size
    scores = np.bincount(rows.indices, weights=weights, minlength=index.n_docs)
    matched = np.bincount(rows.indices, minlength=index.n_docs) > 0
    return np.where(matched, scores, -np.inf)
'''
    res = run(topics, block, limits=Limits(timeout_s=5.0, memory_mb=400, output_bytes=20_000))
    assert res.reason is None, (res.reason, res.message)
