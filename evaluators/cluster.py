"""Evaluate candidates on a Dask distributed cluster, and split large collections into query shards.

``Evaluator(..., cluster="tcp://HOST:8786")`` (``evorank run/eval --cluster``) sends the same
(candidate x collection) tasks that the local loky pool runs to the workers of an existing Dask
cluster, through ``distributed.Client.get_executor()``: a ``concurrent.futures`` executor, so the
evaluator's completion loop (cascade, retries, merging) is the same for both. Each task runs
``run_cluster_task`` on a worker: it resolves the collection's index and calls the same
``run_sandboxed`` as a local worker, so candidates run in the same jail. Only a ``SandboxResult``
(rankings) comes back; judgements never leave the controller, which measures and archives.

Index resolution on a worker (cached per worker process, ``resolve_index``): a task carries the
collection's address, the controller's index folder and the controller index's *signature* (a hash
of the analyzer version, sizes, vocabulary, document ids and the doc_len/df/cf arrays; portable,
unlike a local collection's fingerprint, which contains its folder path and mtime). The worker uses
the controller's folder when it exists there and has that signature (a LocalCluster, a shared file
system); otherwise it loads the collection by address (``load_collection``: its own ``EVORANK_DATA``
/ ``IR_DATASETS_HOME``) and builds or opens the index in its own ``EVORANK_CACHE`` (one builder per
cache folder at a time, by file lock). A signature that differs (other data, other evorank) fails the
task with a message saying so; the analysed queries in the task depend on the vocabulary being equal.

Query shards (``shard_queries``, local and cluster paths alike): a collection with more queries is
split into balanced consecutive shards, one task each; ``prepare()`` runs once per shard; rankings are
merged in query order (``merge_shards``) before the trusted ``measure()``, so metrics do not depend
on the shard size. See ``docs/cluster.md``.

``dask[distributed]`` is optional (``pip install 'evorank[dask]'``); nothing here imports it at
module level, and ``connect`` turns its absence into a one-line ``ClusterError``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np

from .errors import EvorankError
from .sandbox import jail
from evorank.evaluators.sandbox.jail import prepare_process
from evorank.evaluators.sandbox.runner import SandboxResult, isolation_layers, run_sandboxed
from .tasks import worker_env

__all__ = ["ClusterError", "IndexMismatch", "ClusterBackend", "connect", "local_cluster", "cluster_worker_env",
           "index_signature", "resolve_index", "run_cluster_task", "worker_report"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'evorank[dask]'"

#: Variables a cluster worker needs besides ``workers.WORKER_ENV_KEEP`` (where to find data and caches).
CLUSTER_ENV_KEEP = frozenset({"EVORANK_DATA", "EVORANK_CACHE", "IR_DATASETS_HOME"})
#: Names of variables that look like credentials; a worker that has one set is reported (``DASK_*`` settings,
#: e.g. the path of a TLS key file, are not).
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


class ClusterError(EvorankError):
    """The cluster cannot be used: dask missing, scheduler unreachable, workers without the data."""


class IndexMismatch(EvorankError):
    """A worker's copy of a collection is not the controller's (raised on the worker, fails the task)."""


# -- index identity and resolution (worker side) ------------------------------------------------------

def index_signature(index) -> str:
    """A content hash of an on-disk index that is equal on every machine holding the same index."""
    manifest = json.loads((Path(index.path) / "manifest.json").read_text())
    files = manifest["files"]
    h = hashlib.sha256(json.dumps([manifest["analyzer"], manifest["format"], manifest["n_docs"], manifest["n_terms"],
                                   manifest["total_tokens"], files["terms.txt"]["crc32"],
                                   files["doc_ids.txt"]["crc32"]]).encode())
    for name, dtype in (("doc_len", "<f8"), ("df", "<i8"), ("cf", "<i8")):
        h.update(np.ascontiguousarray(getattr(index, name), dtype=dtype).tobytes())
    return h.hexdigest()[:24]


_indexes: dict[tuple[str, str], object] = {}
_resolve_lock = threading.Lock()
_prepare_lock = threading.Lock()


def resolve_index(address: str, signature: str, path: str | None = None):
    """The Index a task needs, cached per (address, signature) in this process; see the module docstring."""
    key = (address, signature)
    with _resolve_lock:
        index = _indexes.get(key)
        if index is None:
            index = _resolve(address, signature, path)
            index.terms  # read the vocabulary once per worker, not once per jail
            _indexes[key] = index
    return index


def _resolve(address: str, signature: str, path: str | None):
    from evorank.evaluators.index.index import CorruptIndex, load_index

    if path and (Path(path) / "manifest.json").is_file():
        try:
            index = load_index(Path(path), verify=False)
            if index_signature(index) == signature:
                return index
        except (CorruptIndex, OSError, KeyError, ValueError):
            pass
    from evorank.evaluators.data.collections import load_collection
    from evorank.evaluators.index.index import cache_root, get_index

    coll = load_collection(address)
    with _BuildLock(cache_root() / "indexes", coll.name):
        index = get_index(coll)
    got = index_signature(index)
    if got != signature:
        raise IndexMismatch(
            f"collection {address!r} on worker {socket.gethostname()} (pid {os.getpid()}) is not the controller's: "
            f"index signature {got} != {signature}. Give every worker the same data (EVORANK_DATA, "
            "IR_DATASETS_HOME) and the same evorank version as the controller.")
    return index


class _BuildLock:
    """An exclusive file lock per collection in a cache folder: one process builds, the others wait and open."""

    def __init__(self, folder: Path, name: str):
        from evorank.evaluators.index.index import safe_name

        self.path = folder / f".build-{safe_name(name)}.lock"
        self.fd = -1

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock


def run_cluster_task(task) -> SandboxResult:
    """Runs on a Dask worker: resolve (or reuse) the index, then one sandboxed run, exactly as a local worker.

    Raises (and so lets Dask and the evaluator retry elsewhere) only when the index cannot be resolved."""
    from evorank.evaluators.index.views import preload

    index = resolve_index(task.address, task.signature, task.index_path)
    with _prepare_lock:  # once per process; guarded because a worker may run several threads
        prepare_process()
        preload(index, task.source)  # the vocabulary views the program names, mapped before the jail closes
    return run_sandboxed(task.source, index, task.queries, task.k, task.limits, name=task.name,
                         restrict_builtins=task.restrict_builtins)


#: The evaluator code a worker runs, relative to ``evaluators/``: a worker whose copy differs is reported.
WORKER_CODE = ("sandbox/*.py", "program/*.py", "index/index.py", "index/analyzer.py", "tasks.py", "cluster.py")


def worker_code_files() -> list[Path]:
    """The files of ``WORKER_CODE``, in a fixed order (a pattern that matches nothing raises: a move of the code
    must not silently shrink what is compared)."""
    here = Path(__file__).resolve().parent
    files = []
    for pattern in WORKER_CODE:
        found = sorted(here.glob(pattern))
        if not found:
            raise FileNotFoundError(f"evaluators/{pattern}: no such file (update cluster.WORKER_CODE)")
        files += found
    return files


def _code_digest() -> str:
    """Hash of the evaluator code that runs on workers (a different evorank on a worker is reported)."""
    h = hashlib.sha256()
    for path in worker_code_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def worker_report(specs: list[tuple[str, str, str | None]] | None = None) -> dict:
    """Runs on a worker (warm-up): resolve every collection index, and describe the worker.

    Returns pid, host, isolation layers, names of set credential-like variables, the code digest and,
    per address, an error message for the collections it could not resolve."""
    errors = {}
    for address, signature, path in specs or []:
        try:
            resolve_index(address, signature, path)
        except Exception as e:  # reported to the controller, which raises one ClusterError for all
            errors[address] = f"{type(e).__name__}: {e}"
    with _prepare_lock:
        try:
            layers = tuple(isolation_layers())
        except Exception as e:  # pragma: no cover - the sandbox itself cannot start here
            layers = ()
            errors["<sandbox>"] = f"{type(e).__name__}: {e}"
    secrets = sorted(k for k, v in os.environ.items() if v and SECRET_NAME.search(k) and not k.startswith("DASK_"))
    return {"pid": os.getpid(), "host": socket.gethostname(), "layers": layers, "secret_env": secrets,
            "code": _code_digest(), "errors": errors, "cache": os.environ.get("EVORANK_CACHE", "")}


# -- controller side ---------------------------------------------------------------------------------

def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"--cluster needs dask's distributed scheduler, which is not installed: {INSTALL_HINT}") \
            from None
    return distributed


def connect(cluster, timeout_s: float = 20.0):
    """(client, owned): a ``distributed.Client`` for an address (owned: closed by us) or the given Client."""
    distributed = _distributed()
    if isinstance(cluster, distributed.Client):
        return cluster, False
    if hasattr(cluster, "scheduler_address"):  # a Cluster object (LocalCluster, SLURMCluster, KubeCluster)
        cluster = cluster.scheduler_address
    address = str(cluster)
    try:
        client = distributed.Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except Exception as e:
        raise ClusterError(f"cannot reach the dask scheduler at {address} ({type(e).__name__}: {str(e)[:200]}); "
                           "start one with `dask scheduler` and workers with `dask worker ADDRESS` "
                           "(see docs/cluster.md)") from None
    return client, True


def cluster_worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for workers we start ourselves (``local_cluster``): like the local loky workers, every
    variable outside the keep-lists is blanked (no API key reaches a process that forks candidates);
    the data and cache locations and dask's own ``DASK_*`` settings are kept."""
    env = worker_env(CLUSTER_ENV_KEEP | {k for k in os.environ if k.startswith("DASK_")})
    env.update(extra or {})
    return env


def local_cluster(n_workers: int = 2, *, env: dict[str, str] | None = None, **kwargs):
    """A ``distributed.LocalCluster`` fit for evaluation on this machine (tests, the benchmark, trying it out):
    worker processes with one thread each, on 127.0.0.1, no dashboard, scrubbed environment."""
    distributed = _distributed()
    options = dict(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                   dashboard_address=None, env=cluster_worker_env(env))
    options.update(kwargs)
    return distributed.LocalCluster(**options)


class ClusterBackend:
    """The controller's handle on a cluster: a client, its concurrent.futures executor, the warm-up."""

    def __init__(self, cluster, retries: int = 1, timeout_s: float = 20.0):
        self.client, self._owned = connect(cluster, timeout_s)
        self.address = self.client.scheduler.address
        self.retries = retries
        self.send_paths = True  # include the controller's index folder in tasks (used when it exists there)
        self.workers: dict[str, dict] = {}  # worker address -> worker_report() of the warm-up
        self._executor = None

    def slots(self) -> int:
        """Threads across the workers connected now (how many tasks run at once)."""
        return sum(int(w.get("nthreads", 1)) for w in _scheduler_workers(self.client).values())

    def executor(self):
        if self._executor is None:
            # pure=False: every submission is its own run (no key sharing between equal tasks; a retry re-runs).
            # retries: Dask re-runs a task that raised (e.g. could not resolve its index) up to this many times;
            # a task whose worker died is rescheduled by the scheduler itself.
            self._executor = self.client.get_executor(pure=False, retries=self.retries)
        return self._executor

    def warm_up(self, specs: list[tuple[str, str, str | None]], wait_s: float = 60.0) -> None:
        """Resolve every collection on every connected worker (building indexes where needed) and check the
        workers; raise one ClusterError naming each worker's problem. Workers joining later resolve lazily."""
        deadline = time.monotonic() + wait_s
        while not self._worker_addresses():
            if time.monotonic() > deadline:
                raise ClusterError(f"the dask cluster at {self.address} has no workers (waited {wait_s:g} s); "
                                   "start some with `dask worker " + self.address + "`")
            time.sleep(0.5)
        futures = {addr: self.client.submit(worker_report, specs, workers=[addr], allow_other_workers=False,
                                            pure=False, key=f"evorank-warm-up-{addr}-{time.monotonic_ns()}")
                   for addr in self._worker_addresses()}
        pending = dict(futures)
        while pending:  # no time limit while the workers live: first index builds can take long
            for addr, fut in list(pending.items()):
                if fut.done():
                    pending.pop(addr)
                    try:
                        self.workers[addr] = fut.result()
                    except Exception as e:
                        self.workers[addr] = {"errors": {"<worker>": f"{type(e).__name__}: {e}"}}
            if pending:
                alive = set(self._worker_addresses())
                for addr in [a for a in pending if a not in alive]:
                    pending.pop(addr).cancel()  # left the cluster during the warm-up
                time.sleep(0.05)
        problems = [f"{addr}: {where}: {msg}" for addr, rep in sorted(self.workers.items())
                    for where, msg in rep.get("errors", {}).items()]
        if problems:
            raise ClusterError("workers of the dask cluster cannot evaluate: " + "; ".join(problems))
        mine = _code_digest()
        other = sorted(a for a, r in self.workers.items() if r.get("code") != mine)
        if other:
            log.warning("cluster: workers %s run different evaluator code than this controller; install the same "
                        "evorank version everywhere", ", ".join(other))
        leaky = {a: r["secret_env"] for a, r in self.workers.items() if r.get("secret_env")}
        if leaky:
            log.warning("cluster: workers have credential-like environment variables set (%s); candidates run in "
                        "a fork of the worker, so start workers without secrets (see docs/cluster.md)",
                        "; ".join(f"{a}: {', '.join(v)}" for a, v in sorted(leaky.items())))
        weak = {a: [x for x in jail.LAYERS if x != "userns" and x not in r.get("layers", ())]
                for a, r in self.workers.items()}
        weak = {a: v for a, v in weak.items() if v}
        if weak:
            log.warning("cluster: sandbox isolation layers missing on workers: %s (see docs/sandbox.md)",
                        "; ".join(f"{a}: {', '.join(v)}" for a, v in sorted(weak.items())))
        log.info("cluster %s: %d workers, %d slots", self.address, len(self.workers), self.slots())

    def _worker_addresses(self) -> list[str]:
        return sorted(_scheduler_workers(self.client))

    def close(self) -> None:
        ex, self._executor = self._executor, None
        if ex is not None:
            try:
                ex.shutdown(wait=False)  # cancels what is still queued or running
            except Exception:  # pragma: no cover - client already gone
                pass
        if self._owned:
            try:
                self.client.close()
            except Exception:  # pragma: no cover
                pass


def _scheduler_workers(client) -> dict[str, dict]:
    """address -> info of every connected worker (some releases list only a few unless asked for all)."""
    import inspect

    try:
        all_of_them = "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        all_of_them = False
    info = client.scheduler_info(n_workers=-1) if all_of_them else client.scheduler_info()
    return dict(info.get("workers", {}))
