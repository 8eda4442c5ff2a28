"""The decoder child's identity and the process-level switches: uid, capabilities, prctl, namespaces.

Dataflow runs its workers as root, and a root decoder could read any file,
signal the worker or trace it. The child therefore drops to ``nobody``. It
keeps one capability, CAP_DAC_READ_SEARCH, and only when Landlock already
holds: the staged input is a 0600 copy owned by root and the interpreter may
live under a 0700 home, and Landlock, not the file modes, then decides what
it reads (the capability's one other use, ``open_by_handle_at``, is refused
by the seccomp filter). Without Landlock it keeps nothing.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import resource
import signal

_PR_SET_PDEATHSIG, _PR_SET_KEEPCAPS, _PR_SET_NO_NEW_PRIVS = 1, 8, 38
_CLONE_NEWNET = 0x40000000
_CAP_DAC_READ_SEARCH = 2
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def unprivileged_ids() -> tuple[int, int]:
    """``nobody``'s uid and gid (65534 where the user database has no ``nobody``)."""
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def drop_to(uid: int, gid: int, keep_read_search: bool) -> str:
    """Become ``uid``:``gid`` with no supplementary groups; CAP_DAC_READ_SEARCH stays only if asked."""
    if keep_read_search:
        _prctl(_PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if keep_read_search:
        try:
            _set_capabilities(1 << _CAP_DAC_READ_SEARCH)
            _prctl(_PR_SET_KEEPCAPS, 0)
        except OSError:  # never go on under another uid still holding root's permitted capabilities
            os._exit(1)
    return f"{uid}:{gid}" + (" (reads through Landlock's rules only)" if keep_read_search else "")


def no_new_privileges() -> None:
    """No set-uid binary or file capability can ever raise this process's privileges again."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies (set after any uid change, which clears it)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the setting took
        os._exit(1)


def no_core_dumps() -> None:
    """A crashing decoder leaves no core file holding the input's (or anything else's) bytes."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def new_network_namespace() -> None:
    """Leave the worker's network: the new namespace has only a loopback interface, down."""
    if _libc.unshare(_CLONE_NEWNET) != 0:
        _raise("unshare(CLONE_NEWNET)")


def _set_capabilities(mask: int) -> None:
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(mask, mask, 0), _CapData(0, 0, 0))
    if _libc.capset(ctypes.byref(header), data) != 0:
        _raise("capset")


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        _raise("prctl")


def _raise(call: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{call}: {os.strerror(err)}")
