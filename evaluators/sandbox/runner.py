"""Run one untrusted ranking program on one collection's queries in an isolated, short-lived process.

``run_sandboxed`` is called by a (trusted) worker process that already holds the memory-mapped
``Index`` and has imported numpy/scipy. For each call it forks a jail (``evaluators.sandbox.jail``: namespaces,
rlimits, chroot, uid, seccomp), in which the harness (``evaluators.sandbox.harness``) runs the candidate and
streams its results back over a pipe in a fixed binary format (``evaluators.sandbox.wire``, never pickle).

The worker trusts nothing the jail says. It enforces the wall-clock and output limits itself, parses
and validates the stream (document numbers in range, no document twice, scores finite and
non-increasing), chooses every failure reason from a fixed vocabulary, and checks the latency the
jail reports against the CPU time the kernel charged to the jail: a program that does its work
outside the timed calls (for example in a returned object's conversion hooks) fails as
``latency_mismatch`` instead of reporting a forged latency.

Every outcome is a ``SandboxResult``; failures carry a machine-readable ``reason`` (``timeout``,
``memory``, ``crashed:SIGSEGV``, ``exit:3``, ``output_limit``, ``invalid_scores:nan``,
``exception:KeyError``, ``latency_mismatch`` ...), one trusted line (``message``) and, separately,
the text the program produced (``program_text``, ``output``), which is shown only fenced
(``evaluators.program.output``).

When the jail ends, the kernel kills every process left in its PID namespace, so nothing outlives a
task. Each isolation layer degrades gracefully when the OS refuses it (one warning per process);
``isolation_layers()`` reports which are active. See ``docs/sandbox.md``.
"""
from __future__ import annotations

import logging
import math
import os
import select
import shutil
import signal
import time
from dataclasses import dataclass

import numpy as np

from . import jail, wire
from .prepared import plan_reuse
from evorank.evaluators.program.output import clean
from evorank.evaluators.program.ranking import DEFAULT_K, Query, Ranking

log = logging.getLogger(__name__)

#: A run may spend at most this much CPU time beyond everything it reports as timed (module execution,
#: ``prepare()``, ``score()`` + top-k) plus as much again as it reports: harness set-up, result packing
#: and exit cost a few milliseconds; deferred scoring costs far more.
LATENCY_SLACK_MS = 250.0


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed evaluation (one program on one collection)."""

    timeout_s: float = 60.0  # wall clock, prepare() + all queries; the process group is SIGKILLed after it
    cpu_s: float | None = None  # RLIMIT_CPU; default: timeout_s
    memory_mb: int | None = None  # RLIMIT_AS beyond the shared index; None: grows with the collection
    #                                (jail.memory_limit_mb: 1 GB + six float64 arrays of the postings)
    output_bytes: int = 64_000  # stdout + stderr; more ends the run as ``output_limit``
    max_procs: int = 8  # RLIMIT_NPROC for the sandbox's own uid
    max_open_files: int = 64  # RLIMIT_NOFILE
    file_bytes: int = 0  # RLIMIT_FSIZE: no regular file may be written
    reuse_prepare: bool = False  # reuse prepare() states across programs with the same prepare code (prepared.py)


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run. ``ranking`` is set (and ``reason`` None) only on success.

    ``message`` is written by trusted code; ``program_text`` (the program's own error message) and
    ``output`` (what it printed, at most ``Limits.output_bytes``) are program text."""

    ranking: Ranking | None
    reason: str | None = None
    message: str | None = None
    output: str = ""
    wall_ms: float = 0.0
    layers: tuple[str, ...] = ()
    queries_done: int = 0
    program_text: str = ""
    cpu_ms: float | None = None  # CPU time the kernel charged to the jail (None if unknown)
    max_rss_mb: float | None = None  # the jail's peak resident memory, as the kernel measured it
    prepare_reused: int = 0  # runs (shards) that used a stored prepare() state instead of calling prepare()

    @property
    def ok(self) -> bool:
        return self.reason is None


_warned: set[str] = set()


def warn_missing_layers(layers: tuple[str, ...]) -> None:
    """Log, once per process, the isolation layers this machine did not grant."""
    missing = [x for x in jail.LAYERS if x != "userns" and x not in layers]
    if missing and "layers" not in _warned:
        _warned.add("layers")
        log.warning("sandbox: isolation layers not available here: %s (see docs/sandbox.md)", ", ".join(missing))


def run_sandboxed(source: str, index, queries, k: int = DEFAULT_K, limits: Limits = Limits(), *,
                  name: str = "<candidate>", restrict_builtins: bool = True) -> SandboxResult:
    """Run ``source`` (prepare + score over ``queries``) isolated; never raises for anything the program does.

    ``restrict_builtins=False`` turns off the in-process language layer (restricted builtins and
    imports); tests use it, with static checks skipped, to prove the OS layers hold on their own.
    """
    jail.prepare_process()
    t_start = time.monotonic()
    deadline = t_start + limits.timeout_s
    max_result = wire.max_stream_bytes(len(queries), k)
    jail_dir = jail.new_jail_dir()
    plan = plan_reuse(source, index, limits.reuse_prepare)
    reuse, cap_w = plan.jail_args()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    args = (source, index, queries, k, limits, name, restrict_builtins, reuse)
    try:
        pid, st_r = jail.start(res_w, out_w, jail_dir, args, parent_fds=(res_r, out_r, plan.read_fd))
    except OSError as e:
        for fd in (res_r, res_w, out_r, out_w, cap_w):
            if fd >= 0:
                os.close(fd)
        plan.finish(False, None)
        os.rmdir(jail_dir)
        return SandboxResult(None, "sandbox_error", f"cannot start the sandbox process: {e}")
    os.close(res_w)
    os.close(out_w)
    if cap_w >= 0:
        os.close(cap_w)
    direct = st_r < 0
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass

    res_buf, out_buf, st_buf = bytearray(), bytearray(), bytearray()
    out_total = 0
    jail_pid = pid if direct else None
    killed: tuple[str, str] | None = None
    poller = select.poll()
    open_fds = {res_r: res_buf, out_r: out_buf}
    if not direct:
        open_fds[st_r] = st_buf
    if plan.read_fd >= 0:
        open_fds[plan.read_fd] = None  # the prepare() state: spooled to disk as it arrives
    for fd in open_fds:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    grace_until = None

    def kill(reason: str, message: str) -> None:
        nonlocal killed, grace_until
        if killed is None:
            killed = (reason, message)
        grace_until = time.monotonic() + 2.0
        try:
            if jail_pid:
                os.kill(jail_pid, signal.SIGKILL)
            else:
                os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    status = None
    usage = (None, None)
    try:
        while open_fds:
            now = time.monotonic()
            if killed is None and now >= deadline:
                kill("timeout", f"the program did not finish within the {limits.timeout_s:g} s limit (wall clock; "
                                "raise it with --timeout, or eval_timeout_s in a run config)")
            if grace_until is not None and now >= grace_until:
                break  # killed but something still holds a pipe: stop listening
            until = grace_until if grace_until is not None else deadline
            for fd, _ in poller.poll(max(1, int((until - now) * 1000) + 1)):
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    open_fds.pop(fd, None)
                    continue
                if fd == out_r:
                    out_total += len(data)
                    room = limits.output_bytes - len(out_buf)
                    if room > 0:
                        out_buf += data[:room]
                    if out_total > limits.output_bytes and killed is None:
                        kill("output_limit", f"the program wrote more than {limits.output_bytes} bytes to "
                                             "stdout/stderr; do not print")
                elif fd == plan.read_fd:
                    plan.capture.feed(data)
                elif fd == res_r:
                    res_buf += data
                    if len(res_buf) > max_result and killed is None:
                        kill("protocol_error", "the sandboxed process sent more result data than possible")
                else:
                    st_buf += data
                    found = jail.read_status(bytes(st_buf)).jail_pid
                    if jail_pid is None and found is not None:
                        jail_pid = found
                        if killed is not None:  # killed before we knew the jail's pid
                            kill(*killed)
        status, usage = _reap(pid)
    finally:
        for fd in list(open_fds):
            if fd == plan.read_fd:
                continue  # closed by plan.finish
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.rmdir(jail_dir)
        except OSError:  # only where the jail was writable (no uid change): remove what the program left
            shutil.rmtree(jail_dir, ignore_errors=True)
    if direct:  # the jail is our own child: its status and usage are the ones to interpret
        keeper = jail.KeeperStatus(pid, 0, status, *usage)
    else:
        keeper = jail.read_status(bytes(st_buf))
    wall_ms = (time.monotonic() - t_start) * 1e3
    result = _interpret(bytes(res_buf), keeper, status, killed, bytes(out_buf), wall_ms, queries, index, k, limits,
                        plan.allowance_ms)
    plan.finish(result.ok, result.ranking.prepare_ms if result.ok else None)
    if plan.found is not None and result.ok:
        result.prepare_reused = 1
        result.ranking.prepare_ms = plan.found.prepare_ms  # what prepare() costs this program (its producer's time)
    return result


def _reap(pid: int) -> tuple[int | None, tuple[float | None, int | None]]:
    """Wait for the forked child (the jail, or its keeper, which exits right after the jail); SIGKILL its group
    if it lingers. Returns (wait status, (CPU seconds, peak RSS in KiB) of the child)."""
    end = time.monotonic() + 2.0
    while True:
        try:
            done, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return None, (None, None)
        if done:
            return status, (usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
        if time.monotonic() > end:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                _, status, usage = os.wait4(pid, 0)
                return status, (usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
            except ChildProcessError:
                return None, (None, None)
        time.sleep(0.001)


_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


def _interpret(res: bytes, keeper: jail.KeeperStatus, child_status, killed, out: bytes, wall_ms: float,
               queries: list[Query], index, k: int, limits: Limits, untimed_ms: float = 0.0) -> SandboxResult:
    output = clean(out.decode("utf-8", "replace"), limits.output_bytes)
    n_q, n_docs = len(queries), int(index.n_docs)
    stream = wire.parse(res, n_q, n_docs, k, len(jail.LAYERS))
    layers = jail.layers_from_bits(keeper.layer_bits | stream.layers)
    done = stream.queries_done
    jail_status, cpu_s = keeper.wait_status, keeper.cpu_s
    cpu_ms = cpu_s * 1e3 if cpu_s is not None else None
    rss_mb = keeper.max_rss_kib / 1024 if keeper.max_rss_kib else None

    def fail(reason: str, message: str, program_text: str = "") -> SandboxResult:
        return SandboxResult(None, reason, message, output, wall_ms, layers, done, program_text, cpu_ms, rss_mb)

    progress = _progress(stream, n_q)
    if killed is not None:
        reason, message = killed
        return fail(reason, f"{message}; {progress}" if reason == "timeout" else message)
    if jail_status is not None and os.WIFSIGNALED(jail_status):
        sig = os.WTERMSIG(jail_status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and stream.error is None and _cpu_exhausted(limits, cpu_s)):
            return fail("timeout", f"the program used more than its CPU-time limit "
                                   f"({limits.cpu_s or limits.timeout_s:g} s, all threads together; it follows "
                                   f"--timeout); {progress}")
        name = _SIGNAL_NAMES.get(sig, f"SIG{sig}")
        return fail(f"crashed:{name}", f"the program's process was killed by {name} during {progress}")
    if stream.error is not None:
        f = wire.describe_failure(stream.error, [q.id for q in queries])
        if f.reason == "memory":
            f = wire.Failure(f.reason, f"{f.message} (limit: {jail.memory_limit_mb(limits, index)} MB beyond the "
                                       "shared index; raise it with --memory-mb, or eval_memory_mb in a run config)",
                             f.program_text)
        return fail(f.reason, f.message, f.program_text)
    if stream.problem is not None:
        return fail("protocol_error", f"the result stream was rejected: {stream.problem}")
    if stream.layers == 0 and jail_status is not None and os.WIFEXITED(jail_status) \
            and os.WEXITSTATUS(jail_status) in (70, 71):
        return fail("sandbox_error", "the sandbox could not be set up")
    if jail_status is None:
        if child_status is not None and os.WIFEXITED(child_status) and os.WEXITSTATUS(child_status) == 70:
            return fail("sandbox_error", "the sandbox could not be set up")
        return fail("sandbox_error", "the sandbox process ended without reporting a status")
    code = os.WEXITSTATUS(jail_status) if os.WIFEXITED(jail_status) else -1
    if not stream.done or code != 0:
        return fail(f"exit:{code}", f"the program's process exited with status {code} during {progress} "
                                    "(exiting is not allowed; return scores instead)")
    if done != n_q:
        return fail("protocol_error", f"results for {done} of {n_q} queries")
    reported_ms = stream.import_ms + stream.prepare_ms + float(np.sum(stream.latency))
    if cpu_ms is not None and cpu_ms - reported_ms > LATENCY_SLACK_MS + untimed_ms + reported_ms:
        return fail("latency_mismatch",
                    f"the program used {cpu_ms:.0f} ms of CPU time but its timed work (running the module, prepare(), "
                    f"score() and top-k) accounts for {reported_ms:.0f} ms: work was done outside the timed calls "
                    "(score() must return a plain numpy array whose values are already computed)")
    ranking = Ranking([q.id for q in queries], stream.doc_idx, stream.scores,
                      np.asarray(stream.latency, dtype=np.float64), stream.prepare_ms)
    return SandboxResult(ranking, None, None, output, wall_ms, layers, done, "", cpu_ms, rss_mb)


def _cpu_exhausted(limits: Limits, cpu_s: float | None) -> bool:
    cpu = limits.cpu_s if limits.cpu_s is not None else limits.timeout_s
    return cpu_s is not None and cpu_s >= math.ceil(cpu) - 0.05


def _progress(stream: wire.Stream, n_q: int) -> str:
    if stream.prepare_ms is None:
        return "importing the program or prepare()"
    return f"score() after {stream.queries_done} of {n_q} queries"


def isolation_layers(index=None) -> tuple[str, ...]:
    """The isolation layers this machine grants, found by running a trivial program in the sandbox."""
    class _Tiny:
        n_docs = 1

    q = Query("q", "", (), np.zeros(0, dtype=np.int64), np.zeros(0))
    src = "import numpy as np\ndef score(query, index, state):\n    return np.zeros(1)\n"
    res = run_sandboxed(src, index if index is not None else _Tiny(), [q], 1, Limits(timeout_s=10))
    warn_missing_layers(res.layers)
    return res.layers


