"""``mq stats``: figures over the audit log's events (pure functions: no I/O, no CLI).

A *hold* is one span a board was locked: from a ``grant`` to the event that ends it
(``release``/``force`` that released it, ``reclaim``, ``taken-over``, ``lock-lost``),
whose ``held`` (``age`` for a reclaim) dates its start, so a hold that began before
the period still counts from the period's start. A grant with no end in the log yet
is held up to now; so is a board the lab says is held now (``held_now``) for a lock
taken before the period (or by another tool), which the log's period does not show.

Per board: grants in the period, utilization (the held part of the period),
the median and 90th percentile of the waits of its grants and of the holds that
ended in the period, and grants by hour of day (local time). A pool's figures are
its members' taken together (every grant of a member, however it was asked for;
``via_pool`` counts those asked for by the pool's name); its utilization is the
mean of its members'.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ENDS = ("release", "force", "reclaim", "taken-over", "lock-lost")
HOURS = 24
TOP_HOURS = 3


@dataclass(frozen=True)
class Hold:
    """One span ``board`` was held; ``end`` None: still held."""

    board: str
    start: float
    end: float | None
    grant: int | None = None


@dataclass
class Figures:
    """What is counted for one board, or a pool's members together."""

    name: str
    grants: int = 0
    via_pool: int = 0
    utilization: float = 0.0
    held: float = 0.0  # seconds held within the period
    waits: list[float] = field(default_factory=list)
    holds: list[float] = field(default_factory=list)
    hours: list[int] = field(default_factory=lambda: [0] * HOURS)

    def add(self, other: Figures) -> None:
        self.grants += other.grants
        self.held += other.held
        self.waits += other.waits
        self.holds += other.holds
        self.hours = [a + b for a, b in zip(self.hours, other.hours, strict=True)]


@dataclass
class Report:
    since: float
    until: float
    boards: list[Figures]
    pools: list[tuple[Figures, tuple[str, ...]]]
    hours: list[int]

    @property
    def period(self) -> float:
        return self.until - self.since


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (``statistics.quantiles``' inclusive
    method, numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _grant_no(entry: Mapping[str, Any]) -> int | None:
    value = entry.get("grant")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ends_hold(entry: Mapping[str, Any]) -> bool:
    kind = entry.get("event")
    if kind in ("release", "force"):
        return bool(entry.get("outcome", "released") == "released")
    return kind in ENDS


def holds(events: Iterable[Mapping[str, Any]], held_now: Mapping[str, float] | None = None) -> list[Hold]:
    """The holds the events show (oldest first), then those still open (``end`` None).

    ``held_now``: board -> since when its lock is held, as the lab says now; a board held
    now with no open grant in ``events`` gets a hold from then on.
    """
    found: list[Hold] = []
    open_grants: dict[str, Hold] = {}  # board -> its grant not ended yet
    closed: set[int] = set()
    last_end: dict[str, float] = {}
    for entry in events:
        board, when = entry.get("board"), _number(entry.get("time"))
        if not isinstance(board, str) or when is None:
            continue
        number = _grant_no(entry)
        if entry.get("event") == "grant":
            previous = open_grants.pop(board, None)
            if previous is not None:  # its end is not in the log: it ended by this grant at the latest
                found.append(Hold(board, previous.start, max(previous.start, when), previous.grant))
            open_grants[board] = Hold(board, when, None, number)
        elif _ends_hold(entry) and (number is None or number not in closed):
            current = open_grants.get(board)
            if current is not None and (number is None or current.grant == number):
                del open_grants[board]
            held = _number(entry.get("age" if entry.get("event") == "reclaim" else "held"))
            if held is not None:
                start = when - max(0.0, held)
            elif current is not None and current.grant == number:
                start = current.start
            else:
                continue  # nothing says when it began
            if number is None and start < last_end.get(board, -math.inf):
                continue  # the hold an earlier record ended (a reclaim after a take-over noticed)
            last_end[board] = when
            if number is not None:
                closed.add(number)
            found.append(Hold(board, start, when, number))
    found += open_grants.values()
    for board, since in (held_now or {}).items():
        if board not in open_grants:
            found.append(Hold(board, since, None))
    return found


def _union_length(spans: list[tuple[float, float]]) -> float:
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def held_within(spans: Iterable[Hold], since: float, until: float) -> float:
    """Seconds within [since, until] covered by ``spans`` (overlaps counted once)."""
    clipped = [(max(h.start, since), min(until if h.end is None else h.end, until)) for h in spans]
    return _union_length([(a, b) for a, b in clipped if b > a])


def hour_of(when: float) -> int:
    return time.localtime(when).tm_hour


def busiest(hours: Sequence[int], top: int = TOP_HOURS) -> list[int]:
    """The hours of day with the most grants, most first (ties: the earlier hour)."""
    ranked = sorted((h for h in range(HOURS) if hours[h]), key=lambda h: (-hours[h], h))
    return ranked[:top]


def _grants(events: Iterable[Mapping[str, Any]], since: float, until: float) -> dict[str, list[Mapping[str, Any]]]:
    """The period's grant events, by board."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for entry in events:
        when, board = _number(entry.get("time")), entry.get("board")
        if entry.get("event") == "grant" and isinstance(board, str) and when is not None and since <= when <= until:
            found.setdefault(board, []).append(entry)
    return found


def _board_figures(name: str, grants: Sequence[Mapping[str, Any]], spans: Sequence[Hold], since: float,
                   until: float) -> Figures:
    figures = Figures(name, grants=len(grants))
    for entry in grants:
        figures.hours[hour_of(float(entry["time"]))] += 1
        waited = _number(entry.get("waited"))
        if waited is not None:
            figures.waits.append(max(0.0, waited))
    figures.holds = [h.end - h.start for h in spans if h.end is not None and since <= h.end <= until]
    figures.held = held_within(spans, since, until)
    period = until - since
    figures.utilization = min(1.0, figures.held / period) if period > 0 else 0.0
    return figures


def compute(events: Sequence[Mapping[str, Any]], since: float, until: float, boards: Sequence[str] = (),
            pools: Mapping[str, Sequence[str]] | None = None,
            held_now: Mapping[str, float] | None = None) -> Report:
    """The report for [since, until]: ``boards`` (the inventory's, in its order; boards the
    log names besides are added after them) and ``pools`` (name -> members)."""
    grants = _grants(events, since, until)
    spans: dict[str, list[Hold]] = {}
    for hold in holds(events, held_now):
        spans.setdefault(hold.board, []).append(hold)
    names = list(dict.fromkeys(boards))
    names += sorted((set(grants) | set(spans)) - set(names))
    per_board = {name: _board_figures(name, grants.get(name, []), spans.get(name, []), since, until)
                 for name in names}
    pool_rows = []
    for pool, members in (pools or {}).items():
        figures = Figures(pool)
        member_rows = [per_board[m] for m in dict.fromkeys(members) if m in per_board]
        for row in member_rows:
            figures.add(row)
        figures.via_pool = sum(1 for m in dict.fromkeys(members) for e in grants.get(m, []) if e.get("pool") == pool)
        figures.utilization = sum(f.utilization for f in member_rows) / len(member_rows) if member_rows else 0.0
        pool_rows.append((figures, tuple(members)))
    lab_hours = [sum(f.hours[h] for f in per_board.values()) for h in range(HOURS)]
    return Report(since, until, list(per_board.values()), pool_rows, lab_hours)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def figures_json(figures: Figures) -> dict[str, Any]:
    return {"grants": figures.grants, "utilization": round(figures.utilization, 4),
            "held": round(figures.held, 3),
            "wait_p50": _seconds(percentile(figures.waits, 0.5)), "wait_p90": _seconds(percentile(figures.waits, 0.9)),
            "hold_p50": _seconds(percentile(figures.holds, 0.5)), "hold_p90": _seconds(percentile(figures.holds, 0.9)),
            "busiest_hours": busiest(figures.hours), "hours": list(figures.hours)}


def report_json(report: Report) -> dict[str, Any]:
    """The ``stats`` JSON: the period, a row per board and per pool, grants by hour of day."""
    return {"since": round(report.since, 3), "until": round(report.until, 3), "period": round(report.period, 3),
            "timezone": time.strftime("%z", time.localtime(report.until)),
            "boards": [{"board": f.name, **figures_json(f)} for f in report.boards],
            "pools": [{"pool": f.name, "members": list(members), "via_pool": f.via_pool, **figures_json(f)}
                      for f, members in report.pools],
            "hours": list(report.hours)}


__all__ = ["Figures", "Hold", "Report", "busiest", "compute", "held_within", "holds", "percentile", "report_json"]
