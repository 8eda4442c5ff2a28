"""Containing the decoder child: what a decoder taken over by a hostile file can still reach.

The child process (``transforms.sandbox_child``) already turns a crash, a hang
or runaway memory into one row. Containment is for the worse case, a file that
gets code execution in a decoder: the code then runs with whatever the child
has. In layers, each applied after the child's imports and before it reads
the first byte of an input:

- ``environment``: the child starts with an allow-listed environment
  (``child_environment``): no cloud credentials, tokens or configuration.
- ``core_dumps``: none (``RLIMIT_CORE`` 0).
- ``network_namespace``: a network of its own with nothing in it.
- ``no_new_privs``: no set-uid program can raise its privileges again.
- ``unprivileged_uid``: ``nobody`` when the worker is root (``contain_privileges``).
- ``landlock``: reads only its code and its one input, writes only a private
  folder, executes nothing; no TCP, no signals out (``contain_landlock``).
- ``seccomp``: no sockets, exec, fork, ptrace or namespaces (``contain_seccomp``).

``decode.containment`` picks how much of this is demanded: ``strict`` refuses
to decode without every layer, ``best_effort`` (the default) applies what the
kernel and the container allow and records the rest, ``off`` applies nothing.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from transforms.media import first_line

logger = logging.getLogger(__name__)

STRICT, BEST_EFFORT, OFF = "strict", "best_effort", "off"
LEVELS = (STRICT, BEST_EFFORT, OFF)
LAYERS = ("environment", "core_dumps", "network_namespace", "no_new_privs", "unprivileged_uid", "landlock",
          "seccomp")

# What the child's environment may hold: where its code is, thread counts, locale, the temporary folder.
# decord's import appends to PATH, so a PATH without secrets in it is set too.
_PASSED_ON = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")
_SET = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
_ALLOWED = set(_PASSED_ON) | set(_SET) | {"PYTHONPATH", "OPENBLAS_NUM_THREADS"}

# Besides the interpreter and the packages: shared libraries, the loader's cache, and two harmless
# reads (the CPU count, random bytes).
_SYSTEM_READS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache",
                 "/sys/devices/system/cpu", "/dev/urandom")


class ContainmentError(RuntimeError):
    """``decode.containment: strict`` and a layer is missing: this worker must not decode."""


@dataclass
class Report:
    """The layers in force (with what each does here) and those missing (with why)."""

    level: str
    active: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def attempt(self, layer: str, apply: Callable[[], Optional[str]]) -> bool:
        """Apply one layer; a failure is recorded, not raised."""
        try:
            self.active[layer] = apply() or "on"
            return True
        except Exception as e:  # OSError from the kernel, ImportError without pyseccomp ...
            self.missing[layer] = first_line(e) or type(e).__name__
            return False

    def merge(self, other: "Report") -> "Report":
        return Report(self.level, {**self.active, **other.active}, {**self.missing, **other.missing})

    def to_dict(self) -> dict:
        """For ``run.json``: ``{"level": ..., "active": {layer: detail}, "missing": {layer: reason}}``."""
        return {"level": self.level, "active": dict(self.active), "missing": dict(self.missing)}

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        return cls(data["level"], dict(data.get("active", {})), dict(data.get("missing", {})))

    def refusal(self) -> Optional[str]:
        """Why a ``strict`` child must not decode, or ``None``."""
        if self.level != STRICT or not self.missing:
            return None
        missing = "; ".join(f"{layer}: {why}" for layer, why in self.missing.items())
        return f"decode.containment is strict and the decoder child lacks {missing}"


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"decode.containment must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


# ---------------------------------------------------------------- the worker's side


def child_environment(level: str, pythonpath: str) -> dict[str, str]:
    """The environment the child starts with: the allow-list, or (``off``) the worker's own.

    OpenBLAS is held to one thread either way: the child forks one process per
    input, and a fork must not happen while a BLAS thread pool is running.
    """
    if level == OFF:
        env = dict(os.environ)
    else:
        env = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
        env.update(_SET)
    env["PYTHONPATH"] = pythonpath
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


# ---------------------------------------------------------------- the child's side


def contain_child(level: str) -> Report:
    """The layers the long-lived child takes once at start-up (the per-input ones: ``contain_input``)."""
    from transforms import contain_privileges as privileges

    report = Report(level)
    if level == OFF:
        return report
    report.attempt("environment", _check_environment)
    report.attempt("core_dumps", privileges.no_core_dumps)
    report.attempt("network_namespace", privileges.new_network_namespace)
    return report


def contain_input(level: str, folder: str, code: Sequence[str], input_fds: Iterable[int] = ()) -> Report:
    """Restrict the process about to decode one input; ``folder`` is its private, writable folder.

    Called in the forked child after its imports and before it reads a byte of
    the input, which it reaches through ``input_fds`` (opened by its parent).
    ``code``: what it may read besides (``code_paths``).
    """
    from transforms import contain_landlock as landlock
    from transforms import contain_privileges as privileges
    from transforms import contain_seccomp as seccomp

    report = Report(level)
    if level == OFF:
        return report
    report.attempt("no_new_privs", privileges.no_new_privileges)
    fds = list(input_fds)
    landlocked = report.attempt(
        "landlock", lambda: landlock.restrict(read=code, write=[folder, "/dev/null"], read_fds=fds)
    )
    if os.geteuid() == 0:
        report.attempt("unprivileged_uid", lambda: privileges.drop_to(*privileges.unprivileged_ids(), landlocked))
    else:
        report.active["unprivileged_uid"] = f"already unprivileged (uid {os.geteuid()})"
    report.attempt("seccomp", seccomp.load)
    return report


def code_paths(modules: Optional[Iterable[str]] = None) -> list[str]:
    """What the child may read besides its input: the interpreter, the installed packages, the modules it
    has loaded from elsewhere (this project's packages) and shared libraries.

    A folder on ``sys.path`` that is not an install location (the worker's
    working directory, a checkout) is not opened whole: only the top-level
    packages of ``modules`` (default: every module loaded) that live in it.
    """
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots = {os.path.realpath(p) for p in prefixes}
    roots |= {os.path.realpath(p) for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    loaded = set()
    for name in set(m.partition(".")[0] for m in (sys.modules if modules is None else modules)):
        module = sys.modules.get(name)
        places = list(getattr(module, "__path__", None) or []) or [getattr(module, "__file__", None)]
        loaded |= {os.path.realpath(p) for p in places if isinstance(p, str)}
    outside = {p for p in loaded if not any(p == r or p.startswith(r + os.sep) for r in roots)}
    return sorted(roots | outside) + [p for p in _SYSTEM_READS if os.path.exists(p)]


def _check_environment() -> str:
    """The environment this process was started with (imports such as cv2's add to ``os.environ`` later)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            names = {item.split(b"=", 1)[0].decode() for item in f.read().split(b"\0") if item}
    except OSError:
        names = set(os.environ)
    inherited = sorted(names - _ALLOWED)
    if inherited:
        raise RuntimeError(f"{len(inherited)} variables inherited from the worker ({', '.join(inherited[:5])} ...)")
    return f"{len(names)} allow-listed variables"
