"""Run one untrusted ranking program on one collection's queries in an isolated, short-lived process.

``run_sandboxed`` is called by a (trusted) worker process that already holds the memory-mapped
``Index`` and has imported numpy/scipy. For each call it forks:

    worker (trusted; reads pipes, enforces the wall-clock limit, validates and parses results)
      └─ C  "keeper" (trusted; new process group; unshares PID + network namespaces)
           └─ G  "jail" = PID 1 of the new PID namespace: closes inherited file descriptors,
                 sets rlimits, scrubs the environment, chroots into an empty directory, drops to
                 an unprivileged uid of its own, sets no_new_privs, installs a seccomp filter, and
                 only then compiles and runs the candidate.

G streams its results back over a pipe in a fixed binary format (never pickle): a record per query
with int64 document numbers and float64 scores, which the worker validates (counts, ranges,
ordering, finiteness) before building a ``Ranking``. Every outcome is a ``SandboxResult``; failures
carry a machine-readable ``reason`` (``timeout``, ``memory``, ``crashed:SIGSEGV``, ``exit:3``,
``output_limit``, ``invalid_scores:nan``, ``exception:KeyError`` ...) and a short human message.

When G ends, the kernel kills every process left in its PID namespace, so nothing outlives a
task. Each isolation layer degrades gracefully when the OS refuses it (one warning per process);
``isolation_layers()`` reports which are active. See ``docs/sandbox.md``.
"""
from __future__ import annotations

import builtins
import ctypes
import errno
import importlib
import logging
import math
import os
import re
import resource
import select
import signal
import struct
import sys
import tempfile
import time
import types
from dataclasses import dataclass

import numpy as np

from .errors import ProgramError
from .program import compile_source, entry_points
from .ranking import DEFAULT_K, Ranking, check_scores, top_k
from .static_check import ALLOWED_IMPORTS, ALLOWED_MODULES, FORBIDDEN_ATTRIBUTES, FORBIDDEN_NAMES

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
LAYERS = ("process", "pidns", "netns", "userns", "fds", "rlimits", "env", "shm_unmapped", "chroot", "uid",
          "no_new_privs", "seccomp")
_BIT = {name: 1 << i for i, name in enumerate(LAYERS)}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed evaluation (one program on one collection)."""

    timeout_s: float = 60.0  # wall clock, prepare() + all queries; the process group is SIGKILLed after it
    cpu_s: float | None = None  # RLIMIT_CPU; default: timeout_s
    memory_mb: int = 2048  # RLIMIT_AS on top of what is mapped at fork time (the shared index included)
    output_bytes: int = 64_000  # stdout + stderr; more ends the run as ``output_limit``
    max_procs: int = 8  # RLIMIT_NPROC for the sandbox's own uid (fork bombs stop here)
    max_open_files: int = 64  # RLIMIT_NOFILE
    file_bytes: int = 0  # RLIMIT_FSIZE: no regular file may be written


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run. ``ranking`` is set (and ``reason`` None) only on success."""

    ranking: Ranking | None
    reason: str | None = None
    message: str | None = None
    output: str = ""  # captured stdout + stderr (at most Limits.output_bytes)
    wall_ms: float = 0.0
    layers: tuple[str, ...] = ()
    queries_done: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


# -- libc / kernel interfaces (trusted code) ---------------------------------------------------------

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

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


# x86_64 system calls a ranking program has no use for and that widen the kernel attack surface.
_SECCOMP_DENY_X86_64 = (
    41, 42, 43, 49, 50, 53, 288,  # socket connect accept bind listen socketpair accept4
    59, 322,  # execve execveat
    101, 310, 311, 312,  # ptrace process_vm_readv/writev kcmp
    165, 166, 155, 161, 272, 308,  # mount umount2 pivot_root chroot unshare setns
    428, 429, 430, 431, 432, 433, 442,  # open_tree move_mount fsopen fsconfig fsmount fspick mount_setattr
    248, 249, 250, 321, 298, 323,  # add_key request_key keyctl bpf perf_event_open userfaultfd
    246, 320, 175, 313, 176, 169, 167, 168, 163, 172, 173,  # kexec modules reboot swap acct iopl ioperm
    303, 304, 179, 135, 425, 426, 427, 300, 212, 133, 259, 134, 153, 103,  # handles quotactl personality
    # io_uring fanotify lookup_dcookie mknod mknodat uselib vhangup syslog
    159, 164, 227, 170, 171,  # adjtimex settimeofday clock_settime sethostname setdomainname
)
_AUDIT_ARCH_X86_64 = 0xC000003E
_MACHINE = os.uname().machine


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


_seccomp_prog = None  # (fprog, filter array) built once per process


def _build_seccomp():
    """Deny-list filter (EPERM) on x86_64; foreign ABIs (x32, i386) are refused or killed. None elsewhere."""
    if _MACHINE not in ("x86_64", "AMD64"):
        return None
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    deny = _SECCOMP_DENY_X86_64
    n = len(deny)
    prog = [
        (ld_abs, 0, 0, 4),  # arch
        (jeq, 1, 0, _AUDIT_ARCH_X86_64),
        (ret, 0, 0, 0x80000000),  # SECCOMP_RET_KILL_PROCESS
        (ld_abs, 0, 0, 0),  # syscall number
        (jge, n + 1, 0, 0x40000000),  # x32 ABI -> EPERM
    ]
    for i, nr in enumerate(deny):
        prog.append((jeq, n - i, 0, nr))  # jump to the EPERM return
    prog.append((ret, 0, 0, 0x7FFF0000))  # SECCOMP_RET_ALLOW
    prog.append((ret, 0, 0, 0x00050000 | errno.EPERM))  # SECCOMP_RET_ERRNO
    arr = (_SockFilter * len(prog))(*[_SockFilter(*p) for p in prog])
    return _SockFprog(len(prog), arr), arr


def _install_seccomp() -> bool:
    if _seccomp_prog is None:
        return False
    fprog = _seccomp_prog[0]
    libc = _get_libc()
    return libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                      ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0


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
_empty_netns: int | None = None
_own_pidns: int | None = None  # fd of this process's PID namespace, to undo unshare(CLONE_NEWPID)
_warned: set[str] = set()


def prepare_process() -> None:
    """Once per process (worker): import everything a candidate may use (nothing can be imported inside
    the jail), build the seccomp filter, and, as root, create the shared empty network namespace and
    keep a handle on our own PID namespace."""
    global _prepared, _seccomp_prog, _empty_netns, _own_pidns
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
        _seccomp_prog = _build_seccomp()
    except Exception:  # pragma: no cover
        _seccomp_prog = None
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


def _warn_once(key: str, text: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(text)


# -- the child side ----------------------------------------------------------------------------------

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _keeper(res_w: int, out_w: int, st_w: int, jail_dir: str, args) -> None:
    """C: new process group and namespaces, fork the jail, report its pid and wait status. Never returns."""
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
    elif _unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET):
        layers |= _BIT["pidns"] | _BIT["netns"] | _BIT["userns"]
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
    keeper_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(st_w)
            _jail(res_w, out_w, jail_dir, layers, userns, keeper_pid, args)
        finally:
            os._exit(70)
    os.close(res_w)
    os.close(out_w)
    _write_all(st_w, b"g" + struct.pack("<iI", pid, layers))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            status = -1
            break
    _write_all(st_w, b"s" + struct.pack("<i", status))
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
    try:
        host_pid = int(os.readlink("/proc/self"))  # procfs shows our pid in the worker's namespace
    except (OSError, ValueError):
        host_pid = int.from_bytes(os.urandom(3), "little")
    _jail(res_w, out_w, jail_dir, layers, False, host_pid, args)


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


def _set_rlimits(limits: Limits, vm_bytes: int) -> bool:
    ok = True
    cpu = int(math.ceil(limits.cpu_s if limits.cpu_s is not None else limits.timeout_s))
    todo = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, max(1, cpu), max(1, cpu) + 1),
        (resource.RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        (resource.RLIMIT_NPROC, limits.max_procs, limits.max_procs),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ]
    if limits.memory_mb and vm_bytes:
        cap = vm_bytes + limits.memory_mb * 1024 * 1024
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


def _jail(res_w: int, out_w: int, jail_dir: str, layers: int, userns: bool, uid_seed: int, args) -> None:
    """G: apply the remaining layers, then run the candidate. Never returns."""
    source, index, queries, k, limits, name, restrict_builtins = args
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
    # close every inherited descriptor (the worker's pipes to the executor, index files, ...)
    os.closerange(3, res_w)
    os.closerange(res_w + 1, max(1 << 16, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    layers |= _BIT["fds"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing a file fails with an exception instead
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    proc = _read_proc_numbers()
    if _set_rlimits(limits, proc[2] if proc else 0):
        layers |= _BIT["rlimits"]
    if _scrub_env(proc):
        layers |= _BIT["env"]
    if _unmap_shared_writable():
        layers |= _BIT["shm_unmapped"]
    # The candidate sees no path on disk (and nothing outside the jail would resolve anyway).
    for attr in ("path", "_terms", "_doc_ids", "_vocab"):
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
        if _install_seccomp():
            layers |= _BIT["seccomp"]
    except Exception:
        pass
    _write_all(res_w, b"L" + struct.pack("<I", layers))
    _harness(res_w, source, index, queries, k, name, restrict_builtins)


# -- the harness: runs the candidate (inside G) ------------------------------------------------------

_SAFE_IMPORTS = frozenset(ALLOWED_IMPORTS)


def _restricted_builtins() -> dict:
    """Builtins without the forbidden ones; ``__import__`` limited to the allowed modules (runtime layer)."""
    real_import = builtins.__import__
    real_getattr = builtins.getattr

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        # numpy's C code imports its own internals on first use (``ndarray.sum`` -> numpy._core._methods,
        # array printing, error classes) through whatever ``__import__`` the calling frame's builtins hold,
        # which is this one when the candidate made the call. Those modules are already loaded, so handing
        # them back adds no code and no reach the candidate lacks at runtime anyway; anything not yet
        # loaded, or outside numpy/scipy, stays forbidden.
        top = name.partition(".")[0]
        if not level and name not in _SAFE_IMPORTS and top in ("numpy", "scipy") and name in sys.modules:
            return sys.modules[name] if fromlist else sys.modules[top]  # no import machinery, so nothing new
        if level or name not in _SAFE_IMPORTS:
            raise ImportError(f"import of {name!r} is not allowed")
        for item in fromlist or ():
            if item.startswith("_") or item in FORBIDDEN_ATTRIBUTES:
                raise ImportError(f"importing {item!r} from {name!r} is not allowed")
        return real_import(name, globals, locals, fromlist, level)

    def guarded_getattr(obj, name, *default):
        if not isinstance(name, str) or name.startswith("_") or name in FORBIDDEN_ATTRIBUTES:
            raise AttributeError(f"getattr of {name!r} is not allowed")
        return real_getattr(obj, name, *default)

    safe = {k: v for k, v in vars(builtins).items() if k not in FORBIDDEN_NAMES}
    safe["__import__"] = guarded_import
    safe["getattr"] = guarded_getattr
    return safe


def _error_record(reason: str, message: str) -> bytes:
    r = reason.encode("utf-8", "replace")[:200]
    m = message.encode("utf-8", "replace")[:4000]
    return b"E" + struct.pack("<HI", len(r), len(m)) + r + m


def _program_line(exc: BaseException | None, name: str) -> int | None:
    """Innermost line of the candidate's own code in an exception's traceback."""
    line = None
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _harness(res_w: int, source: str, index, queries, k: int, name: str, restrict_builtins: bool) -> None:
    perf = time.perf_counter  # captured before any candidate code runs
    pack, exit_, getpid = struct.pack, os._exit, os.getpid
    me = getpid()

    def write(fd: int, data: bytes) -> None:
        if getpid() != me:  # a process the candidate forked: it may not speak for the jail
            exit_(0)
        _write_all(fd, data)

    # Query records are batched (flushed every 256 kB or 50 ms) to spare the worker a wake-up per query.
    pending: list[bytes] = []
    pending_size = 0
    last_flush = perf()

    def emit(record: bytes) -> None:
        nonlocal pending_size, last_flush
        pending.append(record)
        pending_size += len(record)
        now = perf()
        if pending_size >= (1 << 18) or now - last_flush >= 0.05:
            write(res_w, b"".join(pending))
            pending.clear()
            pending_size = 0
            last_flush = now

    stdout, stderr = sys.stdout, sys.stderr
    n_docs = int(index.n_docs)
    try:
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
        stdout, stderr = sys.stdout, sys.stderr
    except Exception:  # pragma: no cover
        pass

    def finish(record: bytes, code: int = 0) -> None:
        if getpid() != me:
            exit_(0)
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            write(res_w, b"".join(pending) + record)
        except Exception:
            pass
        exit_(code)

    stage = "importing the program"
    try:
        code = compile_source(source, name)
        mod = types.ModuleType("ranking_program")
        mod.__file__ = name
        sys.modules["ranking_program"] = mod  # (this process only) dataclasses look classes' modules up here
        module = mod.__dict__
        if restrict_builtins:
            module["__builtins__"] = _restricted_builtins()
        exec(code, module)
        prepare, score = entry_points(module)
        stage = "prepare()"
        t0 = perf()
        state = prepare(index) if prepare is not None else None
        emit(b"P" + pack("<d", (perf() - t0) * 1e3))
        for i, q in enumerate(queries):
            stage = f"score() on query {q.id!r}"
            t0 = perf()
            s = score(q, index, state)
            s = check_scores(s, n_docs)
            idx, vals = top_k(s, k)
            ms = (perf() - t0) * 1e3
            idx = np.ascontiguousarray(idx, dtype="<i8")
            vals = np.ascontiguousarray(vals, dtype="<f8")
            emit(b"Q" + pack("<IId", i, len(idx), ms) + idx.tobytes() + vals.tobytes())
        finish(b"D")
    except ProgramError as e:
        finish(_error_record(e.reason, f"{stage}: {e}" if stage != "importing the program" else str(e)))
    except MemoryError:
        finish(_error_record("memory", f"{stage} ran out of memory"))
    except SystemExit as e:
        c = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finish(_error_record(f"exit:{c}", f"{stage} called exit({e.code!r})"))
    except RecursionError as e:
        line = _program_line(e, name)
        where = f" (line {line})" if line else ""
        finish(_error_record("exception:RecursionError", f"{stage} raised RecursionError{where}: {e}"))
    except BaseException as e:  # noqa: BLE001 - every outcome is a result
        line = _program_line(e, name)
        where = f" at line {line}" if line else ""
        try:
            text = str(e)
        except BaseException:  # noqa: BLE001
            text = "<unprintable>"
        finish(_error_record(f"exception:{type(e).__name__}", f"{stage} raised {type(e).__name__}{where}: {text}"))


# -- the worker side ---------------------------------------------------------------------------------

_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}
_REASON_RE = re.compile(r"[^A-Za-z0-9_:.\-*]")


def _layers_from_bits(bits: int) -> tuple[str, ...]:
    return tuple(name for name in LAYERS if bits & _BIT[name])


def run_sandboxed(source: str, index, queries, k: int = DEFAULT_K, limits: Limits = Limits(), *,
                  name: str = "<candidate>", restrict_builtins: bool = True) -> SandboxResult:
    """Run ``source`` (prepare + score over ``queries``) isolated; never raises for anything the program does.

    ``restrict_builtins=False`` turns off the in-process language layer (restricted builtins and
    imports); tests use it, with static checks skipped, to prove the OS layers hold on their own.
    """
    prepare_process()
    t_start = time.monotonic()
    deadline = t_start + limits.timeout_s
    n_q = len(queries)
    max_result = 64 + 16 + n_q * (17 + 16 * k) + 16 * 1024
    jail_dir = tempfile.mkdtemp(prefix="jail-", dir=_jail_parent)
    os.chmod(jail_dir, 0o555)
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    args = (source, index, queries, k, limits, name, restrict_builtins)
    # As root: this thread's next child becomes PID 1 of a new PID namespace (undone right after the fork).
    # Otherwise a "keeper" child creates the namespaces (a user namespace when possible) and relays the
    # jail's pid and wait status over a third pipe.
    direct = _own_pidns is not None
    st_r = st_w = -1
    if not direct:
        st_r, st_w = os.pipe()
    pidns = direct and _unshare(CLONE_NEWPID)
    try:
        pid = os.fork()
    except OSError as e:
        pid = -1
        error = e
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(res_r)
            os.close(out_r)
            if direct:
                _direct_child(res_w, out_w, jail_dir, pidns, args)
            else:
                os.close(st_r)
                _keeper(res_w, out_w, st_w, jail_dir, args)
        finally:
            os._exit(71)
    if pidns:
        _restore_pidns()
    if pid < 0:
        for fd in (res_r, res_w, out_r, out_w, st_r, st_w):
            if fd >= 0:
                os.close(fd)
        os.rmdir(jail_dir)
        return SandboxResult(None, "sandbox_error", f"cannot start the sandbox process: {error}")
    for fd in (res_w, out_w, st_w):
        if fd >= 0:
            os.close(fd)
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
    for fd in open_fds:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    grace_until = None

    def kill(reason: str, message: str) -> None:
        nonlocal killed, grace_until
        if killed is None:
            killed = (reason, message)
        grace_until = time.monotonic() + 2.0
        if jail_pid:
            try:
                os.kill(jail_pid, signal.SIGKILL)
            except OSError:
                pass
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    try:
        while open_fds:
            now = time.monotonic()
            if killed is None and now >= deadline:
                kill("timeout", f"the program did not finish within the {limits.timeout_s:g} s limit (wall clock)")
            if grace_until is not None and now >= grace_until:
                break  # killed but something still holds a pipe: stop listening
            until = grace_until if grace_until is not None else deadline
            events = poller.poll(max(1, int((until - now) * 1000) + 1))
            for fd, _ in events:
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
                elif fd == res_r:
                    res_buf += data
                    if len(res_buf) > max_result and killed is None:
                        kill("protocol_error", "the sandboxed process sent more result data than possible")
                else:
                    st_buf += data
                    if jail_pid is None and len(st_buf) >= 9 and st_buf[0:1] == b"g":
                        jail_pid = struct.unpack_from("<i", st_buf, 1)[0]
                        if killed is not None:  # killed before we knew the jail's pid
                            kill(*killed)
        status = _reap_keeper(pid)
        if direct:  # the jail is our own child: its status is the one to interpret
            st_buf = bytearray(b"g" + struct.pack("<iI", pid, 0))
            if status is not None:
                st_buf += b"s" + struct.pack("<i", status)
    finally:
        for fd in list(open_fds):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.rmdir(jail_dir)
        except OSError:  # only where the jail was writable (no uid change): remove what the program left
            import shutil

            shutil.rmtree(jail_dir, ignore_errors=True)
    wall_ms = (time.monotonic() - t_start) * 1e3
    return _interpret(bytes(res_buf), bytes(st_buf), status, killed, bytes(out_buf), wall_ms, queries, index, k,
                      limits)


def _reap_keeper(pid: int) -> int | None:
    """Wait for the keeper (it exits right after its jail); SIGKILL its group if it lingers."""
    end = time.monotonic() + 2.0
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() > end:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                return os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return None
        time.sleep(0.001)


def _clean_text(b: bytes, limit: int) -> str:
    text = b.decode("utf-8", "replace")
    text = "".join(ch if ch in "\n\t" or ch.isprintable() else "?" for ch in text)
    return text[:limit]


def _interpret(res: bytes, st: bytes, keeper_status, killed, out: bytes, wall_ms: float, queries, index, k: int,
               limits: Limits) -> SandboxResult:
    output = _clean_text(out, limits.output_bytes)
    n_q, n_docs = len(queries), int(index.n_docs)
    # keeper status: "g" + pid + layer bits, then "s" + the jail's wait status
    layers_bits, jail_status = 0, None
    if len(st) >= 9 and st[0:1] == b"g":
        layers_bits = struct.unpack_from("<I", st, 5)[0]
        if len(st) >= 14 and st[9:10] == b"s":
            jail_status = struct.unpack_from("<i", st, 10)[0]
    parsed = _parse_records(res, n_q, n_docs, k)
    layers_bits |= parsed["layers"]
    layers = _layers_from_bits(layers_bits)
    done = parsed["done_queries"]

    def fail(reason: str, message: str) -> SandboxResult:
        return SandboxResult(None, reason, message, output, wall_ms, layers, done)

    progress = _progress(parsed, n_q)
    if killed is not None:
        reason, message = killed
        if reason == "timeout":
            message += f"; {progress}"
        return fail(reason, message)
    if jail_status is not None and os.WIFSIGNALED(jail_status):
        sig = os.WTERMSIG(jail_status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and parsed["error"] is None and _cpu_exhausted(limits,
                                                                                                         wall_ms)):
            return fail("timeout", f"the program used more than its CPU-time limit; {progress}")
        name = _SIGNAL_NAMES.get(sig, f"SIG{sig}")
        return fail(f"crashed:{name}", f"the program's process was killed by {name} during {progress}"
                    + _tail_hint(output))
    if parsed["error"] is not None:
        reason, message = parsed["error"]
        return fail(reason, message + _tail_hint(output, only_if=reason.startswith("exception")))
    if parsed["problem"] is not None:
        return fail("protocol_error", parsed["problem"])
    if parsed["layers"] == 0 and jail_status is not None and os.WIFEXITED(jail_status) \
            and os.WEXITSTATUS(jail_status) in (70, 71):
        return fail("sandbox_error", "the sandbox could not be set up")
    if jail_status is None:
        if keeper_status is not None and os.WIFEXITED(keeper_status) and os.WEXITSTATUS(keeper_status) == 70:
            return fail("sandbox_error", "the sandbox could not be set up")
        return fail("sandbox_error", "the sandbox process ended without reporting a status")
    code = os.WEXITSTATUS(jail_status) if os.WIFEXITED(jail_status) else -1
    if not parsed["done"] or code != 0:
        return fail(f"exit:{code}", f"the program's process exited with status {code} during {progress} "
                                    "(exiting is not allowed; return scores instead)" + _tail_hint(output))
    if done != n_q:
        return fail("protocol_error", f"results for {done} of {n_q} queries")
    ranking = Ranking([q.id for q in queries], parsed["doc_idx"], parsed["scores"],
                      np.asarray(parsed["latency"], dtype=np.float64), parsed["prepare_ms"])
    return SandboxResult(ranking, None, None, output, wall_ms, layers, done)


def _cpu_exhausted(limits: Limits, wall_ms: float) -> bool:
    cpu = limits.cpu_s if limits.cpu_s is not None else limits.timeout_s
    return wall_ms / 1e3 >= math.ceil(cpu)


def _progress(parsed: dict, n_q: int) -> str:
    if parsed["prepare_ms"] is None:
        return "importing the program or prepare()"
    return f"score() after {parsed['done_queries']} of {n_q} queries"


def _tail_hint(output: str, only_if: bool = True) -> str:
    if not only_if or not output.strip():
        return ""
    tail = output.strip()[-300:]
    return f"\nlast output:\n{tail}"


def _parse_records(buf: bytes, n_q: int, n_docs: int, k: int) -> dict:
    """Parse and validate the jail's result stream. Nothing in it is trusted.

    Record headers are read one by one; the documents and scores of all queries are then checked
    together (ranges, finiteness, order within each query) with a few vectorised operations.
    """
    out = {"layers": 0, "prepare_ms": None, "doc_idx": [], "scores": [], "latency": [], "done": False,
           "error": None, "problem": None, "done_queries": 0}
    pos, n = 0, len(buf)
    first = True
    spans: list[tuple[int, int]] = []  # (offset of the documents, count) per query

    def problem(text: str) -> dict:
        out["problem"] = text
        return out

    while pos < n:
        tag = buf[pos:pos + 1]
        pos += 1
        if tag == b"L":
            if not first or pos + 4 > n:
                return problem("unexpected layer record")
            out["layers"] = struct.unpack_from("<I", buf, pos)[0] & ((1 << len(LAYERS)) - 1)
            pos += 4
        elif tag == b"P":
            if out["prepare_ms"] is not None or pos + 8 > n:
                return problem("bad prepare record")
            ms = struct.unpack_from("<d", buf, pos)[0]
            pos += 8
            if not (math.isfinite(ms) and ms >= 0):
                return problem("invalid prepare time")
            out["prepare_ms"] = ms
        elif tag == b"Q":
            if out["prepare_ms"] is None or pos + 16 > n:
                return problem("bad query record")
            qi, count, ms = struct.unpack_from("<IId", buf, pos)
            pos += 16
            if qi != out["done_queries"] or qi >= n_q:
                return problem(f"query results out of order (got {qi}, expected {out['done_queries']})")
            if count > min(k, n_docs):
                return problem(f"query {qi}: {count} results, more than k={k}")
            if pos + 16 * count > n:
                return problem(f"query {qi}: truncated results")
            if not (math.isfinite(ms) and ms >= 0):
                return problem(f"query {qi}: invalid latency")
            spans.append((pos, count))
            pos += 16 * count
            out["latency"].append(ms)
            out["done_queries"] += 1
        elif tag == b"E":
            if pos + 6 > n:
                return problem("bad error record")
            lr, lm = struct.unpack_from("<HI", buf, pos)
            pos += 6
            if lr > 200 or lm > 4000 or pos + lr + lm > n:
                return problem("bad error record")
            reason = _REASON_RE.sub("_", buf[pos:pos + lr].decode("utf-8", "replace"))[:100] or "exception"
            message = _clean_text(buf[pos + lr:pos + lr + lm], 2000)
            pos += lr + lm
            out["error"] = (reason, message)
            if pos != n:
                return problem("data after the error record")
        elif tag == b"D":
            out["done"] = True
            if pos != n:
                return problem("data after the end record")
        else:
            return problem("unknown record")
        first = False
    if not spans:
        return out
    counts = np.array([c for _, c in spans], dtype=np.int64)
    ends = np.cumsum(counts)
    docs = np.concatenate([np.frombuffer(buf, dtype="<i8", count=c, offset=o) for o, c in spans]).astype(np.int64)
    vals = np.concatenate([np.frombuffer(buf, dtype="<f8", count=c, offset=o + 8 * c) for o, c in spans]
                          ).astype(np.float64)

    def query_of(i: int) -> int:  # query of the element at position i
        return int(np.searchsorted(ends, i, side="right"))

    if len(docs):
        bad = np.flatnonzero((docs < 0) | (docs >= n_docs))
        if len(bad):
            return problem(f"query {query_of(bad[0])}: document number out of range")
        bad = np.flatnonzero(~np.isfinite(vals))
        if len(bad):
            return problem(f"query {query_of(bad[0])}: non-finite score in results")
        inner = np.ones(len(docs) - 1, dtype=bool)  # pairs (i, i+1) inside the same query
        cut = ends[:-1] - 1
        inner[cut[(cut >= 0) & (cut < len(docs) - 1)]] = False
        dv = np.diff(vals)
        bad = np.flatnonzero((dv > 0) & inner)
        if len(bad):
            return problem(f"query {query_of(bad[0])}: scores not in descending order")
        bad = np.flatnonzero((dv == 0) & (np.diff(docs) <= 0) & inner)
        if len(bad):
            return problem(f"query {query_of(bad[0])}: tied or repeated documents out of order")
    out["doc_idx"] = np.split(docs, ends[:-1])
    out["scores"] = np.split(vals, ends[:-1])
    return out


def isolation_layers(index=None) -> tuple[str, ...]:
    """The isolation layers this machine grants, found by running a trivial program in the sandbox."""
    from .ranking import Query

    class _Tiny:
        n_docs = 1

    q = Query("q", "", (), np.zeros(0, dtype=np.int64), np.zeros(0))
    src = "def score(query, index, state):\n    return [0.0]\n"
    res = run_sandboxed(src, index if index is not None else _Tiny(), [q], 1, Limits(timeout_s=10))
    missing = [layer for layer in LAYERS if layer not in res.layers and layer != "userns"]
    if missing:
        _warn_once("layers", f"sandbox: isolation layers not available here: {', '.join(missing)} "
                             "(see docs/sandbox.md)")
    return res.layers
