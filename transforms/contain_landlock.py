"""Landlock for the decoder child: which files it may read and write, and what else it may touch.

Landlock is an unprivileged Linux security module: a process restricts itself,
for good, to the paths it names. The decoder child names its code, the one
input it decodes and a private folder; TCP bind and connect (ABI 4), abstract
UNIX sockets and signals to processes outside its domain (ABI 6) are refused
outright. The three system calls are called through ctypes: the ``landlock``
package on PyPI (1.0.0.dev5) knows neither network rules nor scopes, and reads
``errno`` after calls that succeeded.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from typing import Iterable

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same numbers on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# Filesystem access rights, and the ABI version that introduced the later ones.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_DIR_CHANGES = sum(1 << bit for bit in range(4, 13))  # remove and make files, dirs, links, devices ...
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

READ = READ_FILE | READ_DIR
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | _TRUNCATE | _IOCTL_DEV  # all a rule on a file may grant


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The kernel's Landlock ABI version; raises ``OSError`` where Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "Landlock is Linux only")
    version = _syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    if version < 0:
        _raise("landlock_create_ruleset")
    return int(version)


def restrict(read: Iterable[str], write: Iterable[str], read_fds: Iterable[int] = ()) -> str:
    """Restrict this thread, and every thread and process it starts, to the rights below.

    ``read``: paths whose files and folders may be read (missing ones are
    skipped); ``write``: folders where anything but executing is allowed;
    ``read_fds``: open files that may be opened again for reading. Nothing may be
    executed. Needs ``PR_SET_NO_NEW_PRIVS`` (or CAP_SYS_ADMIN) and a single
    thread. Returns what was restricted, for the record; raises ``OSError``.
    """
    abi = abi_version()
    handled = EXECUTE | WRITE_FILE | READ | _DIR_CHANGES
    handled |= (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    attr = _RulesetAttr(handled, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as this ABI knows it
    ruleset = _syscall(_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        _raise("landlock_create_ruleset")
    read = list(read)
    try:
        for path in read:
            _allow_path(ruleset, path, READ & handled)
        for path in write:
            _allow_path(ruleset, path, handled & ~EXECUTE)
        for fd in read_fds:
            _allow(ruleset, fd, READ_FILE)
        if _syscall(_RESTRICT_SELF, ruleset, 0) < 0:
            _raise("landlock_restrict_self")
    finally:
        os.close(ruleset)
    done = [f"ABI {abi}: reads {len(read)} code paths and the input, writes its folder, executes nothing"]
    done += ["no TCP"] if abi >= 4 else []
    done += ["no signals or abstract sockets out of it"] if abi >= 6 else []
    return "; ".join(done)


def _allow_path(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        _allow(ruleset, fd, rights if stat.S_ISDIR(os.fstat(fd).st_mode) else rights & FILE_RIGHTS)
    finally:
        os.close(fd)


def _allow(ruleset: int, fd: int, rights: int) -> None:
    rule = _PathBeneathAttr(rights, fd)
    if _syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0:
        _raise("landlock_add_rule")


def _syscall(number: int, *args) -> int:
    """``syscall(2)`` with every integer passed as a C ``long``, as the variadic call reads them."""
    return _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def _raise(call: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{call}: {os.strerror(err)}")
