"""The decoder child's system-call filter: no network, no new programs, no new processes, no tracing.

Built with libseccomp through its ctypes bindings (``pyseccomp``), not
hand-written BPF. Everything a decoder needs stays allowed (files it may
open, memory, its own threads); the calls below fail with ``EPERM``, so a
decoder that tries one gets an error rather than a dead process to debug.
Threads are ``clone`` with ``CLONE_THREAD``: FFmpeg's and decord's decoding
threads keep working, ``fork`` does not. ``clone3`` hides its flags from the
filter, so it answers ``ENOSYS`` and the C library falls back to ``clone``.
"""
from __future__ import annotations

import errno

_CLONE_THREAD = 0x00010000

REFUSED = (
    # the network, and sockets of any kind: the child talks to the worker over inherited pipes
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # other programs and other processes
    "execve", "execveat", "fork", "vfork",
    # reading or steering other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # kernel interfaces an unprivileged process can still reach, each a known route to kernel bugs
    # or around the other layers (io_uring runs its operations outside this filter)
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf", "perf_event_open",
    "userfaultfd", "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "open_by_handle_at", "name_to_handle_at", "personality",
)


def load() -> str:
    """Install the filter on this thread and those it starts; returns what it refuses, for the record.

    Raises ``ImportError`` without ``pyseccomp`` (or libseccomp) and ``OSError``
    where the kernel refuses the filter.
    """
    import pyseccomp as seccomp

    refuse = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    skipped = []
    for name in REFUSED:
        try:
            rules.add_rule(refuse, name)
        except (OSError, RuntimeError):  # a call this architecture does not have (fork on arm64)
            skipped.append(name)
    rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.load()
    return f"{len(REFUSED) - len(skipped) + 1} calls refused (network, exec, fork, ptrace, namespaces, io_uring)"
