"""When will each waiter get a board? The queue walked forward in time, as the engine serves it.

The planner idea (``shared/seeds``): keep a complete projection of when every
queued wait will be served. Each board has a time it is expected to be free:

* now, when it is free;
* its holder's ``-T`` expiry, when the lock has one (the next waiter may take
  it over then; an expiry already past: now);
* else its holder's start plus the median hold time of that board (or of
  the pool it was taken for, or any pool it is in) from the audit log;
* never known, for an offline board or one with no hold history.

The waiters are then served in queue order (``policy.order``: arrival order
under FIFO; a virtual arrival time under the priority policy, which does not
change while they wait, so the projection needs no future re-ordering), each taking the board of its
own that frees first, as the engine does (a freed board goes to the earliest
waiter that can use it), and holding it for that board's median hold time.
A waiter's estimate rests on the steps that led to it (``basis``); one unknown
step makes every later estimate on that board unknown.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import policy
from .inventory import Inventory
from .results import BoardState, Ticket

HOLD_SAMPLE = 200  # the most recent releases per board (and per pool) a median is taken over


HOLD_HISTORY = 30 * 86400.0  # the releases of the last 30 days give the median hold times...
HOLD_TAIL = 2 << 20  # ... as far as the last 2 MiB of the audit log (some 10000 events) reach

@dataclass(frozen=True)
class Estimate:
    """One waiter's projected start: ``eta`` (Unix seconds) or None, and what it rests on."""

    ticket: str
    board: Optional[str]  # the board it is expected to get (None: unknown)
    eta: Optional[float]
    basis: str


@dataclass(frozen=True)
class HoldTimes:
    """Median hold times (seconds) from the audit log's releases, per board and per pool."""

    boards: Mapping[str, Tuple[float, int]]  # board -> (median, releases counted)
    pools: Mapping[str, Tuple[float, int]]

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> HoldTimes:
        per_board: Dict[str, List[float]] = {}
        per_pool: Dict[str, List[float]] = {}
        for event in events:
            if event.get("event") not in ("release", "force") or event.get("outcome") != "released":
                continue
            held = event.get("held")
            board = event.get("board")
            if not isinstance(held, (int, float)) or held < 0 or not isinstance(board, str):
                continue
            per_board.setdefault(board, []).append(float(held))
            pool = event.get("pool")
            if isinstance(pool, str) and pool:
                per_pool.setdefault(pool, []).append(float(held))
        return cls(_medians(per_board), _medians(per_pool))

    def for_board(self, board: str, inventory: Inventory, via: str = "") -> Optional[Tuple[float, str]]:
        """(median hold, where it comes from) for ``board`` (taken via pool ``via``), or None."""
        if board in self.boards:
            median, count = self.boards[board]
            return median, f"median hold of {board} ({count} grants)"
        for pool in ([via] if via else []) + list(inventory.pools_of(board)):
            if pool in self.pools:
                median, count = self.pools[pool]
                return median, f"median hold in pool {pool} ({count} grants)"
        return None


def _medians(samples: Mapping[str, List[float]]) -> Dict[str, Tuple[float, int]]:
    return {name: (statistics.median(values[-HOLD_SAMPLE:]), len(values[-HOLD_SAMPLE:]))
            for name, values in samples.items()}


def _frees_at(state: BoardState, holds: HoldTimes, inventory: Inventory, now: float
              ) -> Tuple[Optional[float], str]:
    """When ``state``'s board is expected to be free, and why."""
    if state.offline is not None:
        return None, f"{state.board} is offline"
    holder = state.holder
    if holder is None:
        return now, f"{state.board} is free"
    if holder.session == "dead":
        return now, f"{state.board}'s run has ended: the next waiter takes it over"
    since = holder.since_ns / 1e9
    if holder.timeout:
        return max(now, since + holder.timeout), f"-T {holder.timeout} of {holder.user}'s lock on {state.board}"
    hold = holds.for_board(state.board, inventory, holder.pool)
    if hold is None:
        return None, f"no hold history for {state.board}"
    median, why = hold
    return max(now, since + median), why


def project(states: Sequence[BoardState], inventory: Inventory, holds: HoldTimes, now: float) -> List[Estimate]:
    """An estimate for every live waiter in ``states`` (each ticket once), in queue order."""
    free_at: Dict[str, Tuple[Optional[float], str]] = {}
    tickets: Dict[str, Ticket] = {}
    for state in states:
        free_at[state.board] = _frees_at(state, holds, inventory, now)
        for ticket in state.waiters:
            tickets[ticket.name] = ticket
    estimates: List[Estimate] = []
    for ticket in policy.order(tickets.values(), inventory):
        known = [(free_at[b][0], b) for b in ticket.boards if b in free_at and free_at[b][0] is not None]
        if not known:
            reasons = sorted({free_at[b][1] for b in ticket.boards if b in free_at})
            estimates.append(Estimate(ticket.name, None, None, "; ".join(reasons) or "no board known"))
            continue
        start, board = min(known, key=lambda pair: (pair[0], ticket.boards.index(pair[1])))
        assert start is not None
        basis = free_at[board][1]
        estimates.append(Estimate(ticket.name, board, start, basis))
        hold = holds.for_board(board, inventory, ticket.target if ticket.target != board else "")
        if hold is None:
            free_at[board] = (None, f"no hold history for {board} (after {ticket.user}'s turn)")
        else:
            free_at[board] = (start + hold[0], f"{hold[1]}, after the waiters ahead")
    return estimates


def estimates_by_ticket(estimates: Iterable[Estimate]) -> Dict[str, Estimate]:
    return {e.ticket: e for e in estimates}


__all__ = ["Estimate", "HoldTimes", "estimates_by_ticket", "project"]
