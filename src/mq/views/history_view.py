"""``mq history``: the audit log's events as one line each, or as ``history`` JSON objects.

Every event becomes the same fields (``history_json``): ``time``, ``event``, ``board``
(the board, or the board or pool a wait that got none was for), ``user`` (who did it),
``key``, ``grant``, ``pool`` (a grant asked for by a pool's name), ``waited`` /
``held`` (seconds: a wait or a hold the event ends), ``holder`` (whose lock a release,
force, reclaim or take-over ended) and ``detail`` (what else there is to say, or null).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mq.engine.core.errors import safe_text

from .render import duration

# The field that holds the key, and whose lock it was, by event (default: "key", none).
_KEY_FIELD = {"release": "holder_key", "force": "holder_key", "reclaim": "previous_key", "taken-over": "holder_key"}
_HOLDER_FIELD = {"release": "holder", "force": "holder", "reclaim": "previous_user", "taken-over": "holder",
                 "dead-waiter": "waiter"}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _detail(entry: Mapping[str, Any]) -> str | None:
    kind = entry.get("event")
    reason = _text(entry.get("reason"))
    if kind in ("release", "force"):
        outcome = entry.get("outcome", "released")
        if outcome == "changed":
            return "the lock changed meanwhile: nothing released"
        if outcome == "gone":
            return "already gone" + (f" ({reason})" if reason else "")
        return reason
    if kind == "reclaim":
        if reason == "expired":
            return f"its -T {entry.get('timeout')} had passed"
        return "its mq run had died" if reason == "dead-session" else reason
    if kind in ("taken-over", "lock-lost"):
        by = _text(entry.get("taken_by"))
        return f"lock taken by {by}" if by else "lock removed by another tool"
    if kind == "cancel":
        return "wait cancelled"
    if kind == "timeout":
        return "wait budget ran out"
    if kind == "ticket-lost":
        return "its place in the queue was removed"
    if kind == "dead-waiter":
        return f"waiter gone (pid {entry.get('pid')}): its ticket was cleared"
    if kind == "counter-recovered":
        return f"counter {entry.get('counter')} restarted at {entry.get('restarted_at')}"
    return reason


def history_json(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One audit record as ``mq history --json`` gives it (the same keys for every event)."""
    kind = str(entry.get("event", "?"))
    grant = entry.get("grant")
    held_field = "age" if kind == "reclaim" else "held"
    return {
        "time": _seconds(entry.get("time")),
        "event": kind,
        "board": _text(entry.get("board", entry.get("target"))),
        "user": _text(entry.get("user")),
        "key": _text(entry.get(_KEY_FIELD.get(kind, "key"), entry.get("key"))),
        "grant": grant if isinstance(grant, int) and not isinstance(grant, bool) else None,
        "pool": _text(entry.get("pool")) or None,
        "waited": _seconds(entry.get("waited")),
        "held": _seconds(entry.get(held_field)),
        "holder": _text(entry.get(_HOLDER_FIELD[kind])) if kind in _HOLDER_FIELD else None,
        "detail": _detail(entry),
    }


def span_text(seconds: float) -> str:
    """A wait or a hold: tenths of a second under 10 s (a hand-off takes milliseconds), else ``12m``, ``3h05m``."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    return duration(seconds)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):  # a hand-edited time out of the calendar's range
        return "?"


def _cells(event: Mapping[str, Any]) -> list[str]:
    key = event["key"]
    extra = []
    if event["pool"]:
        extra.append(f"via {event['pool']}")
    if event["holder"] and event["holder"] != event["user"]:
        extra.append(f"{event['holder']}'s " + ("wait" if event["event"] == "dead-waiter" else "lock"))
    if event["detail"]:
        extra.append(event["detail"])
    span = ""
    if event["waited"] is not None:
        span = f"waited {span_text(event['waited'])}"
    elif event["held"] is not None:
        span = f"held {span_text(event['held'])}"
    return [_when(event["time"]), event["event"], event["board"] or "-", event["user"] or "-",
            "-" if key is None else f"key '{key}'", "" if event["grant"] is None else f"#{event['grant']}",
            span, "; ".join(extra)]


def history_lines(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """One aligned line per event (from ``history_json``): time, event, board, user, key, grant,
    the wait or hold it ends, and the rest. Text from the log is shown with control characters escaped."""
    rows = [[safe_text(cell, 256) for cell in _cells(event)] for event in events]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


__all__ = ["history_json", "history_lines", "span_text"]
