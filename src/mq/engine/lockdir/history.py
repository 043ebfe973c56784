"""Reading the audit log back: the events of a period, for some boards or all.

``audit.jsonl`` is append-only, one JSON object per line, in the order things
happened (records are written inside the lab mutex). A line that is not a JSON
object (a torn write after a full disk, a hand edit) is skipped, and counted.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Collection, Dict, List, Optional, Tuple

from mq.engine.core.errors import LockDirError
from mq.engine.core.protocol import MAX_EVENTS

MAX_LINE = 64 << 10  # bytes: a record is a few hundred; a longer line is not one


def _wanted(entry: Dict[str, Any], names: Optional[Collection[str]]) -> bool:
    if names is None:
        return True
    return entry.get("board") in names or entry.get("target") in names


def read_events(path: str, since: Optional[float] = None, names: Optional[Collection[str]] = None,
                limit: int = MAX_EVENTS, tail: Optional[int] = None) -> Tuple[List[Dict[str, Any]], int]:
    """(events from ``since`` on about ``names`` (boards or pools; None: all), oldest first,
    the newest ``limit`` of them; how many lines were unreadable). ``tail``: read only the
    last that many bytes of the log (a waiter's ETA needs recent hold times, not years)."""
    events: List[Dict[str, Any]] = []
    bad = 0
    try:  # never a symlink, never blocking on a FIFO
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise LockDirError(path, f"cannot read the audit log ({os.strerror(exc.errno or 0)})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LockDirError(path, "the audit log is not a regular file (something else was put there)")
        if tail is not None:
            size = os.fstat(handle.fileno()).st_size
            if size > tail:
                handle.seek(size - tail)
                handle.readline(MAX_LINE)  # the rest of a line cut in two
        while True:
            raw = handle.readline(MAX_LINE)
            if not raw:
                break
            if not raw.endswith(b"\n") and len(raw) == MAX_LINE:  # a line no record makes: skip all of it
                while (more := handle.readline(MAX_LINE)) and not more.endswith(b"\n"):
                    pass
                bad += 1
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                bad += 1
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("time"), (int, float)):
                bad += 1
                continue
            if since is not None and entry["time"] < since:
                continue
            if _wanted(entry, names):
                events.append(entry)
                if len(events) > 2 * limit:
                    del events[:-limit]
    return events[-limit:], bad


__all__ = ["MAX_EVENTS", "MAX_LINE", "read_events"]
