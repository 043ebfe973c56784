"""``mq check --host`` on the lab host: is the lock directory usable, does ``lockfile(1)`` agree with mq?

Each check leaves nothing behind: its probe files have names of their own
(``.mq-check-PID-RANDOM``, hidden from ``*.lock`` listings) and are removed,
by this process, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from typing import Any, Dict, Optional

from . import boardlock
from .labpaths import STATE_DIR, user_name

LOCKFILE_TIMEOUT = 10.0  # seconds a `lockfile -r0` may take (it never waits)
OK, FAIL, SKIPPED = "ok", "fail", "skipped"


def check_host(base: str) -> Dict[str, Any]:
    """Who and where this is, and the result of each check: ``{"check", "status", "detail"}``."""
    user = user_name(os.getuid())
    lockdir = check_lockdir(base, user)
    if lockdir["status"] == OK:
        interop = check_lockfile(base)
    else:
        interop = _result("lockfile(1)", SKIPPED, "not checked: the lock directory is not usable")
    return {"user": user, "host": socket.gethostname(), "python": ".".join(map(str, sys.version_info[:3])),
            "checks": [lockdir, interop]}


def _result(check: str, status: str, detail: str) -> Dict[str, Any]:
    return {"check": check, "status": status, "detail": detail}


def _probe_name() -> str:
    return f".mq-check-{os.getpid()}-{os.urandom(4).hex()}"


def check_lockdir(base: str, user: str) -> Dict[str, Any]:
    """The lock directory exists and this user can create (O_CREAT|O_EXCL) and remove files in it
    and in mq's state directories that exist already."""
    name = "lock directory"
    try:
        st = os.stat(base)
    except OSError as exc:
        return _result(name, FAIL, f"{base}: {exc.strerror}")
    if not stat.S_ISDIR(st.st_mode):
        return _result(name, FAIL, f"{base}: not a directory")
    state = os.path.join(base, STATE_DIR)
    places = [base] + [p for p in (state, *(os.path.join(state, d) for d in ("queue", "holders", "sessions")))
                       if os.path.isdir(p)]
    for place in places:
        problem = _probe(place)
        if problem:
            return _result(name, FAIL, f"{place}: {user} cannot create a file there ({problem})")
    shared = " (group-writable: shared)" if st.st_mode & stat.S_IWGRP else ""
    return _result(name, OK, f"{base} is writable by {user}{shared}")


def _probe(directory: str) -> str:
    """'' if a file can be created exclusively in ``directory`` and removed again, else why not."""
    path = os.path.join(directory, _probe_name())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    try:
        os.unlink(path)
    except OSError as exc:
        return f"created, but cannot remove it: {exc.strerror}"
    return ""


def check_lockfile(base: str) -> Dict[str, Any]:
    """A lock ``lockfile -r0`` makes is held for mq (mq's exclusive create refuses it), and
    ``lockfile -r0`` refuses a lock mq made: the two share the directory safely."""
    name = "lockfile(1)"
    program = shutil.which("lockfile")
    if program is None:
        return _result(name, SKIPPED, "lockfile(1) (procmail) is not installed here: mq.sh cannot use this lab")
    probe = _probe_name()
    path = boardlock.lock_path(base, probe)
    try:
        problem = _lockfile_lock_is_held(program, base, probe) or _mq_lock_stops_lockfile(program, base, probe)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    if problem:
        return _result(name, FAIL, problem)
    return _result(name, OK, f"a lock made by {program} -r0 is held for mq, and it refuses mq's locks")


def _lockfile(program: str, path: str) -> Optional[int]:
    """The status of ``lockfile -r0 PATH`` (None: it did not finish in time)."""
    try:
        return subprocess.run([program, "-r0", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=LOCKFILE_TIMEOUT, check=False).returncode
    except subprocess.TimeoutExpired:
        return None
    except OSError:
        return 127


def _lockfile_lock_is_held(program: str, base: str, probe: str) -> str:
    path = boardlock.lock_path(base, probe)
    status = _lockfile(program, path)
    if status != 0:
        how = f"did not finish within {LOCKFILE_TIMEOUT:.0f} s" if status is None else f"exited {status}"
        return f"{program} -r0 {path} {how}"
    holder = boardlock.read_holder(base, probe)
    if holder is None or holder.kind != "file" or holder.uid != os.getuid():
        return f"mq does not see the lock {program} made at {path} as this user's"
    if boardlock.availability(base, probe, time.time())[0]:
        return f"mq would take over the lock {program} made at {path}"
    try:
        if boardlock.try_create(base, probe, 0) is not None:
            return f"mq could create {path} while {program} held it"
    except OSError as exc:
        return f"mq cannot check {path}: {exc.strerror}"
    os.unlink(path)
    return ""


def _mq_lock_stops_lockfile(program: str, base: str, probe: str) -> str:
    path = boardlock.lock_path(base, probe)
    try:
        if boardlock.try_create(base, probe, 0) is None:
            return f"{path} is still there after its removal"
    except OSError as exc:
        return f"mq cannot create {path}: {exc.strerror}"
    status = _lockfile(program, path)
    if status == 0:
        return f"{program} -r0 took {path} although mq held it"
    return ""


__all__ = ["FAIL", "OK", "SKIPPED", "check_host", "check_lockdir", "check_lockfile"]
