"""``mq check --host`` on the lab host: is the lock directory usable, does ``lockfile(1)`` agree with mq?

Each check leaves nothing behind: its probe files have names of their own
(``.mq-check-PID-RANDOM``, hidden from ``*.lock`` listings) and are removed,
by this process, whatever happens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from typing import Any, Dict, Optional

from mq.engine.core.names import user_name
from mq.engine.lockdir import boardlock
from mq.engine.lockdir.labpaths import STATE_DIR

LOCKFILE_TIMEOUT = 10.0  # seconds a `lockfile -r0` may take (it never waits)
OK, FAIL, SKIPPED = "ok", "fail", "skipped"


def check_host(base: str, lab: Optional[str] = None) -> Dict[str, Any]:
    """Who and where this is, and the result of each check: ``{"check", "status", "detail"}``."""
    user = user_name(os.getuid())
    lockdir = check_lockdir(base, user)
    if lockdir["status"] == OK:
        interop = check_lockfile(base)
    else:
        interop = _result("lockfile(1)", SKIPPED, "not checked: the lock directory is not usable")
    checks = [lockdir, interop, check_audit_log(base, user), check_forged(base)]
    if lab is not None:
        checks.append(check_inventory_trust(base, lab))
    return {"user": user, "host": socket.gethostname(), "python": ".".join(map(str, sys.version_info[:3])),
            "checks": checks}


def check_audit_log(base: str, user: str) -> Dict[str, Any]:
    """The audit log can take this user's records: a regular file with one name, this user may
    append to it, no one outside the lab may change it (checked without writing a record)."""
    name = "audit log"
    path = os.path.join(base, "audit.jsonl")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return _result(name, OK, f"{path} does not exist yet (the first record makes it)")
    except OSError as exc:
        why = {errno.ELOOP: "a symlink: replaced by someone",
               errno.ENXIO: "a FIFO, not a regular file: replaced by someone"}.get(exc.errno or 0, exc.strerror)
        return _result(name, FAIL, f"{path}: {user} cannot append a record ({why}): records are being lost")
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        return _result(name, FAIL, f"{path}: not a regular file (something else was put there): records are lost")
    if st.st_nlink != 1:
        return _result(name, FAIL, f"{path}: has {st.st_nlink} names (a hard link to a file elsewhere?)")
    if st.st_mode & stat.S_IWOTH:
        return _result(name, FAIL, f"{path}: writable by everyone (mode {st.st_mode & 0o7777:04o})")
    return _result(name, OK, f"{path}: {user} can append records (owned by {user_name(st.st_uid)}, "
                             f"mode {st.st_mode & 0o7777:04o})")


def check_forged(base: str) -> Dict[str, Any]:
    """Records set aside because their contents claimed another owner than their file's (``forged``)."""
    where = os.path.join(base, STATE_DIR, "forged")
    try:
        names = sorted(os.listdir(where))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        return _result("forged records", FAIL, f"{where}: {exc.strerror}")
    if not names:
        return _result("forged records", OK, "no ticket, grant record or offline mark claimed another owner")
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return _result("forged records", FAIL, f"{len(names)} record(s) claimed another owner than their file's and were "
                                           f"set aside in {where} ({shown}); the audit log's forged records say who "
                                           "wrote them. Remove them once looked into")


def check_inventory_trust(base: str, lab: str) -> Dict[str, Any]:
    """Whether ``mq run`` may run the commands of the inventory at ``lab`` (``trust``)."""
    from mq.engine.core.errors import InventoryError
    from mq.engine.core.inventory import read_inventory_file

    from .trust import opened_file_problem, refusal, trusted_owners

    name = "inventory owner"
    try:
        _, st = read_inventory_file(lab)
    except InventoryError as exc:  # the lab file's own check says what is wrong with it
        return _result(name, SKIPPED, f"not checked: {exc}")
    problem = opened_file_problem(lab, st, trusted_owners(base))
    if problem is not None:
        return _result(name, FAIL, f"{lab}: {refusal(problem)}")
    return _result(name, OK, f"{lab}: no one but root, the lab's admin or {user_name(os.getuid())} can change it")


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


__all__ = ["FAIL", "OK", "SKIPPED", "check_audit_log", "check_forged", "check_host", "check_inventory_trust",
           "check_lockdir", "check_lockfile"]
