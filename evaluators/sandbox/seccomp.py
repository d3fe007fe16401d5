"""The seccomp filter of the jail (x86_64): which system calls a candidate may not make.

Refused with EPERM: new processes (``fork``, ``vfork``, and ``clone`` without ``CLONE_THREAD``, so
threads still work), SysV and POSIX IPC (``shm*``, ``sem*``, ``msg*``, ``mq_*``) and ``memfd_create``,
sockets, exec, ptrace and cross-process memory access, mounts and namespaces, kernel keys, bpf,
perf, io_uring and the like. ``clone3`` answers ENOSYS, so that libc falls back to ``clone`` for
threads (whose flags the filter can inspect; ``clone3`` passes them in memory, which it cannot).
Calls from foreign ABIs are refused (x32) or kill the process (i386). On other machines there is
no filter (``build_filter`` returns None) and the layer is reported missing.
"""
from __future__ import annotations

import ctypes
import errno
import os

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# x86_64 system calls a ranking program has no use for and that widen the kernel attack surface (EPERM).
_SECCOMP_DENY_X86_64 = (
    41, 42, 43, 49, 50, 53, 288,  # socket connect accept bind listen socketpair accept4
    59, 322,  # execve execveat
    57, 58,  # fork vfork (clone is allowed for threads only, below)
    101, 310, 311, 312,  # ptrace process_vm_readv/writev kcmp
    165, 166, 155, 161, 272, 308,  # mount umount2 pivot_root chroot unshare setns
    428, 429, 430, 431, 432, 433, 442,  # open_tree move_mount fsopen fsconfig fsmount fspick mount_setattr
    248, 249, 250, 321, 298, 323,  # add_key request_key keyctl bpf perf_event_open userfaultfd
    246, 320, 175, 313, 176, 169, 167, 168, 163, 172, 173,  # kexec modules reboot swap acct iopl ioperm
    303, 304, 179, 135, 425, 426, 427, 300, 212, 133, 259, 134, 153, 103,  # handles quotactl personality
    # io_uring fanotify lookup_dcookie mknod mknodat uselib vhangup syslog
    159, 164, 227, 170, 171,  # adjtimex settimeofday clock_settime sethostname setdomainname
    29, 30, 31, 67,  # shmget shmat shmctl shmdt
    64, 65, 66, 220,  # semget semop semctl semtimedop
    68, 69, 70, 71,  # msgget msgsnd msgrcv msgctl
    240, 241, 242, 243, 244, 245,  # mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr
    319,  # memfd_create
)
_NR_CLONE, _NR_CLONE3 = 56, 435
_CLONE_THREAD = 0x00010000
_AUDIT_ARCH_X86_64 = 0xC000003E
_MACHINE = os.uname().machine


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


# classic BPF opcodes and seccomp return values
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def _assemble(program: list[tuple]) -> list[tuple[int, int, int, int]]:
    """Classic BPF from ``(label,)`` markers and ``(op, k, true_label, false_label)`` instructions, where a
    label of None means the next instruction; returns (code, jt, jf, k) tuples."""
    labels, pos = {}, 0
    for ins in program:
        if len(ins) == 1:
            labels[ins[0]] = pos
        else:
            pos += 1
    out = []
    for ins in program:
        if len(ins) == 1:
            continue
        op, k, jt, jf = ins
        here = len(out)
        rel = [0 if lab is None else labels[lab] - here - 1 for lab in (jt, jf)]
        if any(not 0 <= r <= 255 for r in rel):  # pragma: no cover - a bug in the program above
            raise ValueError(f"BPF jump out of range at {here}")
        out.append((op, rel[0], rel[1], k))
    return out


def build_filter():
    """The filter described in the module docstring (x86_64); foreign ABIs (x32, i386) are refused or killed.
    None on other machines."""
    if _MACHINE not in ("x86_64", "AMD64"):
        return None
    prog = [
        (_LD_ABS, 4, None, None),  # seccomp_data.arch
        (_JEQ, _AUDIT_ARCH_X86_64, None, "kill"),
        (_LD_ABS, 0, None, None),  # seccomp_data.nr
        (_JGE, 0x40000000, "eperm", None),  # x32 ABI
        (_JEQ, _NR_CLONE, "clone", None),
        (_JEQ, _NR_CLONE3, "enosys", None),
        *[(_JEQ, nr, "eperm", None) for nr in _SECCOMP_DENY_X86_64],
        (_RET, _RET_ALLOW, None, None),
        ("clone",),
        (_LD_ABS, 16, None, None),  # low 32 bits of args[0]: the clone flags
        (_JSET, _CLONE_THREAD, "allow", "eperm"),
        ("allow",), (_RET, _RET_ALLOW, None, None),
        ("eperm",), (_RET, _RET_ERRNO | errno.EPERM, None, None),
        ("enosys",), (_RET, _RET_ERRNO | errno.ENOSYS, None, None),
        ("kill",), (_RET, _RET_KILL_PROCESS, None, None),
    ]
    code = _assemble(prog)
    arr = (_SockFilter * len(code))(*[_SockFilter(*p) for p in code])
    return _SockFprog(len(code), arr), arr


def install(filter_) -> bool:
    """Install a filter from ``build_filter`` on the calling thread (after no_new_privs); True on success."""
    fprog = filter_[0]
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                      ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
