"""Run one untrusted ranking program on one collection's queries in an isolated, short-lived process.

``run_sandboxed`` is called by a (trusted) worker process that already holds the memory-mapped
``Index`` and has imported numpy/scipy. For each call it forks a jail (``evaluators.sandbox.jail``: namespaces,
rlimits, chroot, uid, seccomp), in which the harness (``evaluators.sandbox.harness``) runs the candidate and
streams its results back over a pipe in a fixed binary format (``evaluators.sandbox.wire``, never pickle).

The worker trusts nothing the jail says. It enforces the wall-clock and output limits itself, parses
and validates the stream (document numbers in range, no document twice, scores finite and
non-increasing), chooses every failure reason from a fixed vocabulary, and measures the run itself:
it notes when each phase's record arrives (module execution, ``prepare()``, scoring) and how much CPU
time the kernel had charged to the jail at that moment (the jail's process CPU clock; ``wait4`` for
the total). The times the jail reports are detail inside that measurement: a phase whose CPU time
exceeds twice what the jail reports for it (plus a slack) fails as ``latency_mismatch``, and
per-query latencies that account for less of the scoring phase's CPU time than they should are
scaled up to it (``bound_latencies``). A program that does its work outside the timed calls, or
rewrites its timing records, gets the latency of the work it did, or no result.

Nothing the jail sends can make this code raise: whatever goes wrong reading it is the candidate's
``protocol_error``, never a failed worker (which would restart the pool under every candidate in it).

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
from dataclasses import dataclass, replace

import numpy as np

from . import jail, wire
from .prepared import plan_reuse
from evorank.evaluators.program.output import clean
from evorank.evaluators.program.ranking import DEFAULT_K, Query, Ranking, program_queries, query_names

log = logging.getLogger(__name__)

#: A phase (or, where the phases cannot be told apart, the run) may spend at most this much CPU time beyond
#: what the jail reports as timed for it (module execution, ``prepare()``, ``score()`` + top-k) plus as much
#: again as it reports: harness set-up, result packing and exit cost a few milliseconds; deferred scoring costs
#: far more. Beyond it the run fails as ``latency_mismatch``.
LATENCY_SLACK_MS = 250.0
#: The scoring phase's CPU time that per-query latencies need not account for: setting up the loop, packing
#: and writing each query's record, the first moments of the jail's exit before the worker read the end.
SCORE_SLACK_MS = 25.0
SCORE_SLACK_PER_QUERY_MS = 0.05
#: Per-query latencies that account for less than 1 / (1 + this) of the rest are scaled up to it.
SCORE_TOLERANCE = 0.10


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
    prepared_mb: int | None = None  # that cache's cap; None: $EVORANK_PREPARED_MB of the process running the jail


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
    phases: Phases | None = None  # the worker's own measurement of each phase (None where it has none)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Phases:
    """The worker's measurement of one run, per phase: wall time from its own clock (from the fork to the arrival
    of the phase's record) and CPU time from the kernel's accounting of the jail; None where unknown. ``import``
    includes the jail's set-up; ``prepare`` writing a state to share; ``score`` every query's ``score()`` + top-k
    and the packing of its results."""

    import_wall_ms: float | None = None
    import_cpu_ms: float | None = None
    prepare_wall_ms: float | None = None
    prepare_cpu_ms: float | None = None
    score_wall_ms: float | None = None
    score_cpu_ms: float | None = None


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

    ``queries``: ``Query`` or ``ProgramQuery`` objects; the jail gets them without ids either way, and the
    ranking names them by id (``Query``) or position (``ProgramQuery``: the caller knows the ids).
    ``restrict_builtins=False`` turns off the in-process language layer (restricted builtins and
    imports); tests use it, with static checks skipped, to prove the OS layers hold on their own.
    """
    jail.prepare_process()
    t_start = time.monotonic()
    names = query_names(queries)
    queries = program_queries(queries)
    plan = plan_reuse(source, index, limits.reuse_prepare, limits.prepared_mb)
    try:
        result = _run(source, index, queries, names, k, limits, name, restrict_builtins, plan, t_start)
    except Exception as e:  # noqa: BLE001 - the worker's own failure reading the jail: the candidate's result
        log.warning("reading a sandboxed run failed (%s)", type(e).__name__)
        result = SandboxResult(None, "protocol_error", "the sandboxed process's output could not be read")
    fate = plan.finish(result.ok, result.ranking.prepare_ms if result.ok else None)
    if fate == "refused":
        return replace(result, ranking=None, reason="protocol_error",
                       message="the prepare() state the sandboxed process sent was rejected by the worker's checks")
    if plan.found is not None and result.ok:
        result.prepare_reused = 1
        result.ranking.prepare_ms = plan.found.prepare_ms  # what prepare() costs this program (its producer's time)
    return result


def _run(source: str, index, queries, names: list[str], k: int, limits: Limits, name: str, restrict_builtins: bool,
         plan, t_start: float) -> SandboxResult:
    deadline = t_start + limits.timeout_s
    max_result = wire.max_stream_bytes(len(queries), k)
    jail_dir = jail.new_jail_dir()
    reuse, cap_w = plan.jail_args()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    args = (source, index, queries, k, limits, name, restrict_builtins, reuse)
    t_fork = time.monotonic()
    try:
        pid, st_r = jail.start(res_w, out_w, jail_dir, args, parent_fds=(res_r, out_r, plan.read_fd))
    except OSError as e:
        for fd in (res_r, res_w, out_r, out_w, cap_w):
            if fd >= 0:
                os.close(fd)
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
    marks: list[tuple[int, float, float | None]] = []  # per read of the result pipe: (bytes so far, time, jail CPU s)
    out_total = 0
    jail_pid = pid if direct else None
    clock = _cpu_clock(jail_pid)
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
    reaped = False
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
                    marks.append((len(res_buf), time.monotonic(), _read_clock(clock)))
                    if len(res_buf) > max_result and killed is None:
                        kill("protocol_error", "the sandboxed process sent more result data than possible")
                else:
                    st_buf += data
                    found = jail.read_status(bytes(st_buf)).jail_pid
                    if jail_pid is None and found is not None:
                        jail_pid = found
                        clock = _cpu_clock(jail_pid)
                        if killed is not None:  # killed before we knew the jail's pid
                            kill(*killed)
        status, usage = _reap(pid)
        reaped = True
    finally:
        if not reaped:  # the loop itself failed: the jail must not outlive this run
            kill("sandbox_error", "the worker failed while the program ran")
            _reap(pid)
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
    return _interpret(bytes(res_buf), keeper, status, killed, bytes(out_buf), wall_ms, names, index, k, limits,
                      plan.allowance_ms, _Marks(marks, t_fork))


def _cpu_clock(pid: int | None) -> int | None:
    """The id of ``pid``'s process CPU-time clock (Linux: all its threads, readable by any process; what
    ``clock_getcpuclockid`` returns), or None."""
    if not pid or pid <= 0 or not hasattr(time, "clock_gettime"):
        return None
    return ((~pid) << 3) | 2  # CPUCLOCK_SCHED of the whole process


def _read_clock(clock: int | None) -> float | None:
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:  # the jail has exited and been reaped, or the clock is not available
        return None


@dataclass
class _Marks:
    """When the bytes of the result stream arrived, and the jail's CPU time then (seconds)."""

    reads: list[tuple[int, float, float | None]]
    t_fork: float

    def at(self, offset: int) -> tuple[float | None, float | None]:
        """(arrival time, jail CPU seconds) of the read that completed the stream up to ``offset``."""
        for size, t, cpu in self.reads:
            if size >= offset:
                return t, cpu
        return None, None


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
               names: list[str], index, k: int, limits: Limits, untimed_ms: float, marks: _Marks) -> SandboxResult:
    output = clean(out.decode("utf-8", "replace"), limits.output_bytes)
    n_q, n_docs = len(names), int(index.n_docs)
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
        f = wire.describe_failure(stream.error, n_q)
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
    phases, cumulative = _phases(stream, marks)
    timing = bound_latencies(stream, phases, cumulative, cpu_ms, untimed_ms)
    if isinstance(timing, str):
        return replace(fail("latency_mismatch", timing), phases=phases)
    latency, prepare_ms = timing
    ranking = Ranking(list(names), stream.doc_idx, stream.scores, latency, prepare_ms)
    return SandboxResult(ranking, None, None, output, wall_ms, layers, done, "", cpu_ms, rss_mb, phases=phases)


def _phases(stream: wire.Stream, marks: _Marks) -> tuple[Phases, tuple[float | None, float | None, float | None]]:
    """The worker's measurement of each phase, and the jail's CPU time (ms) when each phase's record arrived."""
    (t_i, c_i), (t_p, c_p), (t_d, c_d) = (marks.at(x) for x in (stream.import_end, stream.prepare_end, stream.end))

    def ms(a, b) -> float | None:
        return (a - b) * 1e3 if a is not None and b is not None else None

    cumulative = tuple(c * 1e3 if c is not None else None for c in (c_i, c_p, c_d))
    return Phases(ms(t_i, marks.t_fork), cumulative[0], ms(t_p, t_i), ms(c_p, c_i), ms(t_d, t_p), ms(c_d, c_p)), \
        cumulative


_OUTSIDE = "work was done outside the timed calls, or the reported times are false (score() must return a plain " \
           "numpy array whose values are already computed)"


def bound_latencies(stream: wire.Stream, phases: Phases, cumulative, cpu_ms: float | None,
                    untimed_ms: float) -> tuple[np.ndarray, float] | str:
    """(per-query latencies, prepare time) of a complete run as the jail reported them, bounded by the worker's own
    measurement; or, when a phase used far more CPU time than the jail reports for it (twice as much plus
    ``LATENCY_SLACK_MS``), the ``latency_mismatch`` message.

    Scoring: per-query latencies are wall times of ``score()`` + top-k in one thread, so together they cover at
    least the scoring phase's CPU time, less the packing of results (``SCORE_SLACK_MS`` + a little per query).
    When they cover less than that by more than ``SCORE_TOLERANCE``, they are scaled up to it (their proportions
    kept: the only detail the jail adds); when they sum to more than the phase's wall time, down to it.
    ``prepare_ms`` is at most the prepare phase's wall time. ``untimed_ms``: CPU time the jail may spend writing
    a state to share (prepare phase). The module's execution and ``prepare()`` are checked as one phase (the
    jail's set-up included), scoring as another. Without the jail's CPU clock the whole run is checked against
    everything it reports, as one phase.

    The worker reads a record when it is scheduled, so a phase's end can be noted late, which counts the next
    phase's first moments in it: scoring's in setup (the scoring check only gets more lenient; the setup check
    has its slack) and the jail's exit in scoring (``SCORE_SLACK_MS``; exiting costs little)."""
    latency = np.asarray(stream.latency, dtype=np.float64)
    total = float(latency.sum())
    n = len(latency)
    _, c_p, c_d = cumulative

    def excess(cpu: float | None, reported: float, allowed: float = 0.0) -> bool:
        return cpu is not None and cpu - reported > LATENCY_SLACK_MS + allowed + reported

    if c_p is None or c_d is None:
        reported = stream.import_ms + stream.prepare_ms + total
        if excess(cpu_ms, reported, untimed_ms):
            return (f"the program used {cpu_ms:.0f} ms of CPU time but its timed work (running the module, prepare(), "
                    f"score() and top-k) accounts for {reported:.0f} ms: {_OUTSIDE}")
        return latency, stream.prepare_ms
    # Module and prepare() are checked together: a record read late moves CPU time across their boundary.
    if excess(c_p, stream.import_ms + stream.prepare_ms, untimed_ms):
        return (f"running the module and prepare() took {c_p:.0f} ms of CPU time but "
                f"{stream.import_ms + stream.prepare_ms:.0f} ms were reported: {_OUTSIDE}")
    scoring = c_d - c_p
    if excess(scoring, total):
        return (f"scoring the {n} queries took {scoring:.0f} ms of CPU time but their reported latencies sum to "
                f"{total:.0f} ms: {_OUTSIDE}")
    covered = scoring - SCORE_SLACK_MS - SCORE_SLACK_PER_QUERY_MS * n
    if n and covered > total * (1 + SCORE_TOLERANCE):
        latency = latency * (covered / total) if total > 0 else np.full(n, covered / n)
    wall = phases.score_wall_ms
    if n and wall is not None and latency.sum() > wall * (1 + SCORE_TOLERANCE) + SCORE_SLACK_MS:
        latency = latency * (wall / latency.sum())
    prepare_ms = stream.prepare_ms
    if phases.prepare_wall_ms is not None:
        prepare_ms = min(prepare_ms, max(0.0, phases.prepare_wall_ms))
    return latency, prepare_ms


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


