"""The environment of the processes that run sandboxed tasks, and workers forked from a one-shot command.

Loky workers (what ``Evaluator`` starts) begin a fresh interpreter with ``tasks.worker_env()``: every variable
outside ``WORKER_ENV_KEEP`` blanked, ``THREAD_ENV`` set. Starting one costs about a second of CPU (the
interpreter, loky's bootstrap, numpy and scipy), which a run pays once but a one-shot ``evorank eval`` would pay
on every call. ``forked_pool`` forks its workers from the command instead, after the imports they need and before
the command reads any judgement: they start in milliseconds, and hold no more than a loky worker would, since each
first erases and removes every environment variable outside ``WORKER_ENV_KEEP`` (``erase_environment``); the
jails they fork erase the process's initial environment block as well (``sandbox.jail``).

This module imports neither numpy nor the sandbox when it is imported, so that ``one_thread_per_library`` can
take effect before numpy is loaded.
"""
from __future__ import annotations

import os
import sys

#: Environment variables passed to worker processes with their values; all others are blanked.
WORKER_ENV_KEEP = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "TZ", "TMPDIR", "TEMP", "TMP",
    "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH", "SYSTEMROOT",
})
#: Set in every worker: numeric libraries use one thread (workers, not threads, are the parallelism).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


def one_thread_per_library() -> bool:
    """Set ``THREAD_ENV`` in this process if numpy is not loaded yet (it reads them when it loads), so that workers
    forked from it, and their jails, run numeric libraries on one thread as loky workers do. True if it was set."""
    if "numpy" in sys.modules:
        return False
    os.environ.update(THREAD_ENV)
    return True


def erase_environment(keep: frozenset[str] = WORKER_ENV_KEEP) -> None:
    """Remove every environment variable outside ``keep``, overwriting its value's bytes first: the process was
    forked from one that holds them (API keys and the like), and removing a variable only frees its memory."""
    import ctypes

    data = getattr(os.environ, "_data", {})
    header = sys.getsizeof(b"") - 1  # where a bytes object's characters start (CPython)
    for key in [k for k in os.environ if k not in keep]:
        raw = data.get(os.environ.encodekey(key)) if hasattr(os.environ, "encodekey") else None
        del os.environ[key]
        if isinstance(raw, bytes) and len(raw) > 1 and sys.getrefcount(raw) == 2:  # held nowhere else (never a cached object)
            ctypes.memset(id(raw) + header, 0, len(raw))


def _init_forked_worker() -> None:
    erase_environment()
    os.environ.update(THREAD_ENV)
    from evorank.evaluators.sandbox.jail import prepare_process

    prepare_process()


class ForkedWorkers:
    """A ``concurrent.futures`` process pool whose workers were forked from this process, and which can be shut
    down with ``kill_workers=True`` like loky's (the Evaluator kills the workers of a pool that stopped answering;
    the standard library's pool would wait for them)."""

    def __init__(self, n_workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context("fork"),
                                         initializer=_init_forked_worker)

    def submit(self, fn, /, *args, **kwargs):
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, kill_workers: bool = False) -> None:
        if kill_workers:
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                process.kill()
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures or kill_workers)


def fork_is_safe() -> str | None:
    """Why workers must not be forked from this process now (None when they may): forking copies the whole process
    into every worker and, through them, into every jail, so it is done only from a process that runs one thread
    (forking a threaded process can copy a lock in a held state) and has read no judgements yet."""
    import threading

    if threading.active_count() > 1:
        return "this process runs several threads"
    evaluate = sys.modules.get("evorank.evaluators.evaluate")
    if evaluate is not None and evaluate.judgements_read():
        return "this process has read judgements"
    return None


def forked_pool(n_workers: int) -> ForkedWorkers | None:
    """``n_workers`` sandbox workers forked from this process now, for one evaluation by a command; an ``Evaluator``
    given it as ``pool`` uses it instead of starting loky workers. Call it after importing what the workers run
    (``evorank.evaluators.parallel``) and ``one_thread_per_library``, and before this process reads judgements
    (load the collections afterwards: the workers prepare the sandbox meanwhile). None when ``fork_is_safe`` says
    no: the caller then lets the Evaluator start fresh workers."""
    if fork_is_safe() is not None:
        return None
    from evorank.evaluators.sandbox.jail import prepare_process

    prepare_process()  # the modules a jail may use, the seccomp program, the network namespace: once, inherited
    pool = ForkedWorkers(n_workers)
    pool.submit(os.getpid)  # starts the workers now
    return pool
