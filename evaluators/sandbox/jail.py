"""The operating-system layers of the sandbox: namespaces, seccomp, rlimits, chroot, uid, scrubbed state.

``run_sandboxed`` (``evaluators.sandbox.runner``) forks; the child either becomes the jail directly (as root:
the worker already made it PID 1 of a new PID namespace) or becomes a *keeper* that creates the
namespaces (with a user namespace when unprivileged) and forks the jail, relaying its pid, wait status
and CPU time. The jail (``enter_jail``) then applies, in order: new IPC namespace, closed inherited
file descriptors, rlimits, a scrubbed environment, unmapped shared writable memory, chroot into an
empty folder, an unprivileged uid of its own, no_new_privs and a seccomp filter, and only then hands
over to the harness (``evaluators.sandbox.harness``), which runs the candidate.

The seccomp filter (``evaluators.sandbox.seccomp``) refuses, among other things, new processes: so the
per-process rlimits (address space, CPU time) bound the whole candidate, threads included.

Each layer degrades gracefully when the OS refuses it; which ones held is reported as a bit set in
the first record of the result stream (``LAYERS``). See ``docs/sandbox.md``.
"""
from __future__ import annotations

import ctypes
import fcntl
import importlib
import logging
import math
import os
import re
import resource
import signal
import struct
import sys
import tempfile
from dataclasses import dataclass

from . import seccomp, wire
from .harness import run_candidate, write_all
from evorank.evaluators.program.checks import ALLOWED_MODULES

log = logging.getLogger(__name__)

# -- configuration ---------------------------------------------------------------------------------

#: The candidate's uid/gid is SANDBOX_UID_BASE + pid of its keeper process: unique among running
#: sandboxes, so RLIMIT_NPROC counts only that sandbox's processes and sandboxes cannot signal or
#: ptrace each other. No account or file on the system uses these ids.
SANDBOX_UID_BASE = 0x60000000
SANDBOX_UID_SPAN = 1 << 23

#: Environment the candidate sees (everything else is removed).
CANDIDATE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

#: Modules imported before the jail closes (nothing can be imported from disk afterwards).
PRELOAD_MODULES = tuple(sorted(ALLOWED_MODULES - {"scipy"})) + ("traceback", "linecache", "encodings.utf_8")

# Layer names, in the order they are applied.
LAYERS = ("process", "pidns", "netns", "ipcns", "userns", "fds", "rlimits", "env", "shm_unmapped", "chroot", "uid",
          "no_new_privs", "seccomp")
_BIT = {name: 1 << i for i, name in enumerate(LAYERS)}


# -- libc / kernel interfaces (trusted code) ---------------------------------------------------------

CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38

_libc = None


def _get_libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _unshare(flags: int) -> bool:
    libc = _get_libc()
    return libc.unshare(ctypes.c_int(flags)) == 0


def _prctl(option: int, arg2: int = 0) -> bool:
    libc = _get_libc()
    return libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)) == 0


def _make_empty_netns() -> int | None:
    """An fd of a fresh network namespace (no interfaces up) shared by this process's sandboxes.

    Creating one namespace per process instead of one per sandbox keeps the kernel's asynchronous
    namespace teardown off the hot path. Only the calling thread is switched, and only for the moment
    it takes to open the namespace; it is switched back before returning. None when not permitted.
    """
    libc = _get_libc()
    try:
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if libc.unshare(ctypes.c_int(CLONE_NEWNET)) != 0:
            return None
        try:
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if libc.setns(ctypes.c_int(orig), ctypes.c_int(CLONE_NEWNET)) != 0:  # pragma: no cover
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
        return fd
    finally:
        os.close(orig)


def _restore_pidns() -> None:
    """Point this thread's future children back at our own PID namespace (after a sandbox fork)."""
    global _own_pidns
    if _get_libc().setns(ctypes.c_int(_own_pidns), ctypes.c_int(CLONE_NEWPID)) != 0:  # pragma: no cover
        log.error("sandbox: cannot restore the PID namespace for children (errno %d); falling back to keepers",
                  ctypes.get_errno())
        _own_pidns = None


def _drop_capabilities() -> bool:
    """Clear all capability sets (used when isolation relies on a user namespace instead of root)."""
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = _get_libc()
    _prctl(PR_SET_SECUREBITS, 0x2F)  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off, locked
    hdr = Header(0x20080522, 0)
    data = (Data * 2)()
    return libc.syscall(ctypes.c_long(126), ctypes.byref(hdr), ctypes.byref(data)) == 0  # capset (x86_64)


# -- process-wide preparation (in the worker) --------------------------------------------------------

_prepared = False
_seccomp_filter = None  # built once per process (seccomp.build_filter)
_empty_netns: int | None = None
_own_pidns: int | None = None  # fd of this process's PID namespace, to undo unshare(CLONE_NEWPID)


def prepare_process() -> None:
    """Once per process (worker): import everything a candidate may use (nothing can be imported inside
    the jail), build the seccomp filter, and, as root, create the shared empty network namespace and
    keep a handle on our own PID namespace."""
    global _prepared, _seccomp_filter, _empty_netns, _own_pidns
    if _prepared:
        if _jail_parent is None or not os.path.isdir(_jail_parent):  # e.g. the temp folder was cleaned
            _make_jail_parent()
        return
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # pragma: no cover - optional submodule missing
            pass
    _get_libc()
    _make_jail_parent()
    try:
        _seccomp_filter = seccomp.build_filter()
    except Exception:  # pragma: no cover
        _seccomp_filter = None
    if os.geteuid() == 0:
        _empty_netns = _make_empty_netns()
        try:
            _own_pidns = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _own_pidns = None
    _prepared = True


_jail_parent: str | None = None
_JAIL_PREFIX = "evorank-jails-"


def remove_stale_jails() -> None:
    """Remove the jail folders of processes that no longer exist (e.g. workers killed at shutdown)."""
    import shutil

    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for entry in names:
        if not entry.startswith(_JAIL_PREFIX):
            continue
        try:
            pid = int(entry[len(_JAIL_PREFIX):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)
        except (ValueError, OSError):
            pass


def _make_jail_parent() -> None:
    """A private folder for this process's per-task jail folders; stale ones of dead processes are removed."""
    global _jail_parent
    import atexit
    import shutil

    remove_stale_jails()
    _jail_parent = tempfile.mkdtemp(prefix=f"{_JAIL_PREFIX}{os.getpid()}-")
    atexit.register(shutil.rmtree, _jail_parent, True)


def new_jail_dir() -> str:
    """An empty, read-only folder for one run to chroot into (removed by the caller afterwards)."""
    jail_dir = tempfile.mkdtemp(prefix="jail-", dir=_jail_parent)
    os.chmod(jail_dir, 0o555)
    return jail_dir


# -- starting a jail (called in the worker) ----------------------------------------------------------

#: Status records on the keeper's pipe: "g" + jail pid + layer bits, then "s" + wait status, CPU seconds (user,
#: system) and peak resident memory (KiB) of the jail, as the kernel accounted them.
_STARTED = struct.Struct("<iI")
_ENDED = struct.Struct("<iddq")


def start(res_w: int, out_w: int, jail_dir: str, args, parent_fds: tuple[int, ...] = ()) -> tuple[int, int]:
    """Fork the jail for one run. Returns (pid to wait for, status pipe fd or -1); the pid is -1 (and the
    error is raised as OSError) when no process could be started.

    As root, this thread's next child becomes PID 1 of a new PID namespace and *is* the jail (the worker
    waits for it directly). Otherwise a keeper child creates the namespaces (a user namespace when
    possible) and relays the jail's pid, wait status and CPU time over a status pipe (``read_status``).
    ``parent_fds`` are closed in the child."""
    direct = _own_pidns is not None
    st_r = st_w = -1
    if not direct:
        st_r, st_w = os.pipe()
    pidns = direct and _unshare(CLONE_NEWPID)
    try:
        pid = os.fork()
    except OSError:
        if pidns:
            _restore_pidns()
        for fd in (st_r, st_w):
            if fd >= 0:
                os.close(fd)
        raise
    if pid and pidns:
        _restore_pidns()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            for fd in parent_fds:  # the worker's ends of the pipes (-1: none)
                if fd >= 0:
                    os.close(fd)
            if direct:
                _direct_child(res_w, out_w, jail_dir, pidns, args)
            else:
                os.close(st_r)
                _keeper(res_w, out_w, st_w, jail_dir, args)
        finally:
            os._exit(71)
    if st_w >= 0:
        os.close(st_w)
    return pid, st_r


@dataclass(frozen=True)
class KeeperStatus:
    """What a keeper reported; None where it has not (yet) said."""

    jail_pid: int | None = None
    layer_bits: int = 0
    wait_status: int | None = None
    cpu_s: float | None = None
    max_rss_kib: int | None = None


def read_status(buf: bytes) -> KeeperStatus:
    """Parse a keeper's status bytes (a keeper is trusted code, but may have been killed half-way)."""
    if len(buf) < 1 + _STARTED.size or buf[0:1] != b"g":
        return KeeperStatus()
    pid, bits = _STARTED.unpack_from(buf, 1)
    at = 1 + _STARTED.size
    if len(buf) < at + 1 + _ENDED.size or buf[at:at + 1] != b"s":
        return KeeperStatus(pid, bits)
    status, utime, stime, rss = _ENDED.unpack_from(buf, at + 1)
    return KeeperStatus(pid, bits, status, utime + stime, rss)


def _keeper(res_w: int, out_w: int, st_w: int, jail_dir: str, args) -> None:
    """C: new process group and namespaces, fork the jail, report its pid, wait status and CPU time.
    Never returns."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    layers = _BIT["process"]
    uid, gid = os.getuid(), os.getgid()
    userns = False
    libc = _get_libc()
    if _empty_netns is not None and libc.setns(ctypes.c_int(_empty_netns), ctypes.c_int(CLONE_NEWNET)) == 0 \
            and _unshare(CLONE_NEWPID):
        layers |= _BIT["pidns"] | _BIT["netns"]
    elif _unshare(CLONE_NEWPID | CLONE_NEWNET):
        layers |= _BIT["pidns"] | _BIT["netns"]
    elif _unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC):
        layers |= _BIT["pidns"] | _BIT["netns"] | _BIT["userns"] | _BIT["ipcns"]
        userns = True
        try:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
        except OSError:
            pass
    elif _unshare(CLONE_NEWNET):
        layers |= _BIT["netns"]
    if not layers & _BIT["ipcns"] and _unshare(CLONE_NEWIPC):
        layers |= _BIT["ipcns"]
    keeper_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(st_w)
            enter_jail(res_w, out_w, jail_dir, layers, userns, keeper_pid, args)
        finally:
            os._exit(70)
    os.close(res_w)
    os.close(out_w)
    if args[7] is not None and args[7].capture_fd >= 0:  # the jail's pipe for its prepare() state
        os.close(args[7].capture_fd)
    write_all(st_w, b"g" + _STARTED.pack(pid, layers))
    utime = stime = 0.0
    rss = 0
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            utime, stime, rss = usage.ru_utime, usage.ru_stime, usage.ru_maxrss
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            status = -1
            break
    write_all(st_w, b"s" + _ENDED.pack(status, utime, stime, rss))
    os._exit(0)


def _direct_child(res_w: int, out_w: int, jail_dir: str, pidns: bool, args) -> None:
    """G started directly by the worker (as root): already PID 1 of a new PID namespace. Never returns."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    layers = _BIT["process"] | (_BIT["pidns"] if pidns else 0)
    libc = _get_libc()
    if _empty_netns is not None and libc.setns(ctypes.c_int(_empty_netns), ctypes.c_int(CLONE_NEWNET)) == 0:
        layers |= _BIT["netns"]
    elif _unshare(CLONE_NEWNET):
        layers |= _BIT["netns"]
    if _unshare(CLONE_NEWIPC):
        layers |= _BIT["ipcns"]
    try:
        host_pid = int(os.readlink("/proc/self"))  # procfs shows our pid in the worker's namespace
    except (OSError, ValueError):
        host_pid = int.from_bytes(os.urandom(3), "little")
    enter_jail(res_w, out_w, jail_dir, layers, False, host_pid, args)


def _read_proc_numbers() -> tuple[int, int, int] | None:
    """(arg_start, env_end, VmSize in bytes) of this process, read before the jail closes."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        # fields[0] is field 3 (state); arg_start is field 48, env_end field 51
        arg_start, env_end = int(fields[45]), int(fields[48])
        with open("/proc/self/status", "rb") as f:
            m = re.search(rb"VmSize:\s+(\d+) kB", f.read())
        vm = int(m.group(1)) * 1024 if m else 0
        return arg_start, env_end, vm
    except (OSError, ValueError, IndexError):
        return None


def _unmap_shared_writable() -> bool:
    """Unmap writable shared mappings inherited from the worker (e.g. its semaphores in /dev/shm)."""
    libc = _get_libc()
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    ok = True
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.split()
        if len(parts) < 2:
            continue
        perms = parts[1]
        if perms[1] == "w" and perms[3] == "s":
            a, b = (int(x, 16) for x in parts[0].split("-"))
            ok &= libc.munmap(ctypes.c_void_p(a), ctypes.c_size_t(b - a)) == 0
    return ok


#: The default memory allowance: a base plus room for this many float64 arrays the size of the postings
#: (BM25's ``prepare`` holds about five at its peak), so that the default grows with the collection.
MEMORY_BASE_MB = 1024
MEMORY_POSTING_ARRAYS = 6


def memory_limit_mb(limits, index) -> int:
    """The memory a candidate may allocate on top of the shared index: ``limits.memory_mb`` when set, else
    ``MEMORY_BASE_MB`` plus ``MEMORY_POSTING_ARRAYS`` float64 arrays of the index's postings."""
    if limits.memory_mb:
        return int(limits.memory_mb)
    try:
        postings = int(index.term_doc.nnz)
    except AttributeError:  # a stand-in index without postings
        postings = 0
    return MEMORY_BASE_MB + (MEMORY_POSTING_ARRAYS * 8 * postings) // 2**20


def _set_rlimits(limits, memory_mb: int, vm_bytes: int) -> bool:
    """Per-process limits; with new processes refused by seccomp they bound the whole candidate. The address
    space limit is what is mapped at this point (the shared, read-only index included) plus ``memory_mb``,
    so the index itself never counts against the candidate's memory."""
    ok = True
    cpu = int(math.ceil(limits.cpu_s if limits.cpu_s is not None else limits.timeout_s))
    todo = [
        (resource.RLIMIT_CORE, 0, 0),
        # the jail is PID 1 of its namespace, which the kernel sends no SIGXCPU (an init process gets no signal it
        # has no handler for): the SIGKILL at the hard limit ends it, a second later
        (resource.RLIMIT_CPU, max(1, cpu), max(1, cpu) + 1),
        (resource.RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        (resource.RLIMIT_NPROC, limits.max_procs, limits.max_procs),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ]
    if memory_mb and vm_bytes:
        cap = vm_bytes + memory_mb * 1024 * 1024
        todo.append((resource.RLIMIT_AS, cap, cap))
    for what, soft, hard in todo:
        try:
            cur_soft, cur_hard = resource.getrlimit(what)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
                soft = min(soft, hard)
            resource.setrlimit(what, (soft, hard))
        except (ValueError, OSError):
            ok = False
    return ok


def _scrub_env(proc: tuple[int, int, int] | None) -> bool:
    os.environ.clear()
    try:
        import posix

        posix.environ.clear()
    except Exception:  # pragma: no cover
        pass
    os.environ.update(CANDIDATE_ENV)
    sys.argv[:] = ["ranking-program"]
    try:
        sys.orig_argv[:] = []
    except Exception:  # pragma: no cover
        pass
    # The process's initial argv/environment strings still sit on the stack (and in /proc/self/environ).
    if proc is not None:
        arg_start, env_end, _ = proc
        if 0 < arg_start < env_end and env_end - arg_start < (1 << 24):
            ctypes.memset(ctypes.c_void_p(arg_start), 0, env_end - arg_start)
    return True


def enter_jail(res_w: int, out_w: int, jail_dir: str, layers: int, userns: bool, uid_seed: int, args) -> None:
    """G: apply the remaining layers, then run the candidate. Never returns."""
    source, index, queries, k, limits, name, restrict_builtins, reuse = args
    # stdio: stdin from /dev/null, stdout/stderr into the capped output pipe
    try:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        os.close(0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    if out_w > 2:
        os.close(out_w)
    if res_w <= 2:  # keep the result pipe clear of stdio
        res_w = os.dup(res_w)
    if reuse is not None and 0 <= reuse.capture_fd < res_w:  # the state pipe above the result pipe (and stdio)
        high = fcntl.fcntl(reuse.capture_fd, fcntl.F_DUPFD, res_w + 1)
        os.close(reuse.capture_fd)
        reuse.capture_fd = high
    # close every inherited descriptor (the worker's pipes to the executor, index files, ...) except the result
    # pipe and the pipe for the prepare() state
    keep = sorted({res_w} | ({reuse.capture_fd} if reuse is not None and reuse.capture_fd >= 0 else set()))
    low = 3
    for fd in keep:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(1 << 16, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    layers |= _BIT["fds"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing a file fails with an exception instead
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    proc = _read_proc_numbers()
    if _set_rlimits(limits, memory_limit_mb(limits, index), proc[2] if proc else 0):
        layers |= _BIT["rlimits"]
    if _scrub_env(proc):
        layers |= _BIT["env"]
    if _unmap_shared_writable():
        layers |= _BIT["shm_unmapped"]
    # The candidate sees the vocabulary (read now: nothing can be read once the jail is closed; workers load it
    # once, before forking), but no path on disk and not the document ids.
    try:
        index.terms
    except Exception:  # a stand-in index without a vocabulary
        pass
    for attr in ("path", "_doc_ids"):
        if hasattr(index, attr):
            try:
                setattr(index, attr, None)
            except Exception:  # pragma: no cover
                pass
    try:
        os.chroot(jail_dir)
        os.chdir("/")
        layers |= _BIT["chroot"]
    except OSError:
        try:
            os.chdir(jail_dir)
        except OSError:
            pass
    if userns:
        if _drop_capabilities():
            layers |= _BIT["uid"]
    elif os.geteuid() == 0:
        uid = SANDBOX_UID_BASE + uid_seed % SANDBOX_UID_SPAN
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            layers |= _BIT["uid"]
        except OSError:
            pass
    if _prctl(PR_SET_NO_NEW_PRIVS, 1):
        layers |= _BIT["no_new_privs"]
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(PR_SET_DUMPABLE, 0)
    try:
        if _seccomp_filter is not None and seccomp.install(_seccomp_filter):
            layers |= _BIT["seccomp"]
    except Exception:
        pass
    write_all(res_w, wire.layers_record(layers))
    run_candidate(res_w, source, index, queries, k, name, restrict_builtins, reuse)


def layers_from_bits(bits: int) -> tuple[str, ...]:
    return tuple(name for name in LAYERS if bits & _BIT[name])
