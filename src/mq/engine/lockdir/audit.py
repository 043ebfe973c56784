"""The audit log: ``audit.jsonl`` in the lock directory, one JSON object per line, append only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import Any, Dict, Tuple

from mq.engine.core.errors import DiskError, LockDirError

from .fsutil import write_all
from .labpaths import LabPaths


class AuditLog:
    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths
        self.syslog = False  # also send each record to syslog (the inventory's ``audit_syslog``)

    def record(self, event: str, **fields: Any) -> None:
        """Append one JSON line. Never stops what it records (a full disk must not stop a
        release), and never silent: a record that cannot be written is said at once on the
        user's stderr (``LabPaths.notice``), and ``mq check --host`` fails on its cause. A
        record always starts on a line of its own: a partial line left by someone else
        cannot swallow it."""
        entry: Dict[str, Any] = {"time": round(time.time(), 3), "event": event, "user": self.paths.user}
        entry.update(fields)
        try:
            fd, readable = self._open()
        except (LockDirError, DiskError) as exc:  # not Interrupted: a signal is never swallowed here
            self._failed(event, exc.detail)
            if self.syslog:
                _to_syslog(json.dumps(entry, sort_keys=True))
            return
        try:
            size = os.fstat(fd).st_size
            tail = os.pread(fd, TAIL, max(0, size - TAIL)) if readable and size else b""
            entry["time"] = _not_before(entry["time"], tail)
            text = json.dumps(entry, sort_keys=True)
            if self.syslog:
                _to_syslog(text)
            data = (text + "\n").encode()
            if tail and not tail.endswith(b"\n"):
                data = b"\n" + data
            write_all(fd, data)
        except OSError as exc:
            self._failed(event, os.strerror(exc.errno) if exc.errno else str(exc))
        finally:
            os.close(fd)

    def _open(self) -> Tuple[int, bool]:
        """The log open for appending, and whether its last byte can be read."""
        path = self.paths.audit_path
        readable = not os.path.lexists(path) or os.access(path, os.R_OK, follow_symlinks=False)
        return self.paths.open_shared(path, (os.O_RDWR if readable else os.O_WRONLY) | os.O_APPEND), readable

    def _failed(self, event: str, why: str) -> None:
        self.paths.notice(f"the audit log {self.paths.audit_path} could not record this {event} ({why}); "
                          "mq check --host fails until it is fixed")


TAIL = 512  # bytes read back from the log's end: its last record's time
STEP_LIMIT = 5.0  # a wall clock stepped back at most this far is evened out; a forged far-future time is not
_LAST_TIME = re.compile(rb'"time": ([0-9]+(?:\.[0-9]+)?)[,}]')


def _not_before(now: float, tail: bytes) -> float:
    """The record's time, never before the last record's (records are written under the lab
    mutex, so file order is the real order; a wall clock stepped back must not make the log
    say otherwise). A last time more than ``STEP_LIMIT`` ahead is not followed: it is forged,
    or the clock was wrong then, and following it would stamp every later record wrong."""
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    found = _LAST_TIME.search(lines[-1]) if lines[-1] else None
    if found is None:
        return now
    try:
        last = float(found.group(1))
    except ValueError:
        return now
    return last if now < last <= now + STEP_LIMIT else now


def _to_syslog(text: str) -> None:
    """One record to the system log (facility auth, tag ``mq``), where no lab member can edit it."""
    import syslog

    with contextlib.suppress(OSError):
        syslog.openlog("mq", syslog.LOG_PID, syslog.LOG_AUTH)
        syslog.syslog(syslog.LOG_INFO, text)


__all__ = ["AuditLog"]
