"""Reading the audit log back: the events of a period, for some boards or all.

``audit.jsonl`` is append-only, one JSON object per line, in the order things
happened (records are written inside the lab mutex). A line that is not a JSON
object (a torn write after a full disk, a hand edit) is skipped, and counted.
"""

from __future__ import annotations

import json
import os
from typing import Any, Collection, Dict, List, Optional, Tuple

MAX_EVENTS = 200_000  # the newest this many, at most, in one answer


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
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return [], 0
    with handle:
        if tail is not None:
            size = os.fstat(handle.fileno()).st_size
            if size > tail:
                handle.seek(size - tail)
                handle.readline()  # the rest of a line cut in two
        for raw in handle:
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


__all__ = ["MAX_EVENTS", "read_events"]
