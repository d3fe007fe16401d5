"""Workers forked from a one-shot command: they keep no environment variable outside the list loky workers get,
their numeric libraries run on one thread, and they evaluate in the sandbox like loky workers."""
import os
import threading
import time

import pytest

from evorank.evaluators import workers
from evorank.evaluators.workers import THREAD_ENV, WORKER_ENV_KEEP, erase_environment, forked_pool


def environment() -> dict:
    return dict(os.environ)


@pytest.fixture
def fork_allowed(monkeypatch):
    """This test process has read judgements and may run threads; the tests below fork anyway, on purpose."""
    monkeypatch.setattr(workers, "fork_is_safe", lambda: None)


def test_forked_workers_start_without_the_commands_secrets(monkeypatch, fork_allowed):
    monkeypatch.setenv("EVORANK_TEST_API_KEY", "sk-not-for-candidates-0123456789")
    pool = forked_pool(1)
    try:
        env = pool.submit(environment).result(timeout=60)
    finally:
        pool.shutdown()
    assert "EVORANK_TEST_API_KEY" not in env and os.environ["EVORANK_TEST_API_KEY"].startswith("sk-")
    assert set(env) <= WORKER_ENV_KEEP | set(THREAD_ENV) and all(env[k] == v for k, v in THREAD_ENV.items())


def test_erase_environment_overwrites_values_held_nowhere_else(monkeypatch):
    import ctypes

    monkeypatch.setenv("EVORANK_TEST_ERASED", "a-value-to-overwrite")
    monkeypatch.setenv("EVORANK_TEST_KEPT", "stays")
    zeroed = []
    real = ctypes.memset
    monkeypatch.setattr(ctypes, "memset", lambda at, value, n: (zeroed.append(n), real(at, value, n))[1])
    keep = frozenset(k for k in os.environ if k != "EVORANK_TEST_ERASED")
    erase_environment(keep)
    assert "EVORANK_TEST_ERASED" not in os.environ and os.environ["EVORANK_TEST_KEPT"] == "stays"
    assert zeroed == [len("a-value-to-overwrite")]


def test_no_fork_from_a_threaded_process_or_one_that_has_read_judgements(monkeypatch):
    import evorank.evaluators.evaluate as evaluate

    monkeypatch.setattr(evaluate, "_judgements_read", True)
    with monkeypatch.context() as m:
        m.setattr(threading, "active_count", lambda: 1)  # other tests may have left threads in this process
        assert "judgements" in workers.fork_is_safe() and forked_pool(1) is None
    monkeypatch.setattr(evaluate, "_judgements_read", False)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert "threads" in workers.fork_is_safe() and forked_pool(1) is None
    finally:
        stop.set()
        thread.join()


def test_a_wedged_forked_worker_is_killed(fork_allowed):
    pool = forked_pool(1)
    pool.submit(time.sleep, 600)
    started = time.monotonic()
    pool.shutdown(wait=True, kill_workers=True)
    assert time.monotonic() - started < 30
