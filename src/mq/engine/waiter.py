"""One waiter's sleep-and-walk loop: wake only when this waiter might be served.

A waiter sleeps in ``select`` on the engine's inotify descriptor. It keeps
``ahead``: the live tickets that arrived earlier and want one of its boards.

* A lock released on a board that some ticket ahead also wants is that
  ticket's business: the waiter stays asleep (no herd on each release).
* A ticket ahead leaving (granted, cancelled or dead: its descriptor closes)
  is only worth a queue walk if one of the waiter's boards is free now.
* Its own ticket's attributes change when ``sem -cancel`` marks it.
* Timeouts: the ``-w``/``-t`` budget, the next ``-T`` expiry of a held board,
  and the agent's keepalive tick.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

from . import boardlock, notify
from .errors import NotAcquiredError
from .queue import OwnTicket, Ticket, walk_queue
from .signals import GUARD

if TYPE_CHECKING:
    from .semaphore import Engine, Grant

LOCK_EVENTS = notify.IN_DELETE | notify.IN_MOVED_FROM
QUEUE_EVENTS = notify.IN_DELETE | notify.IN_CLOSE_WRITE
OWN_EVENTS = notify.IN_ATTRIB
SESSION_EVENTS = notify.IN_CLOSE_WRITE


@dataclass(frozen=True)
class Hooks:
    """How the agent joins a wait: extra descriptors to watch and a periodic tick."""

    extra_fds: Sequence[int] = ()
    on_extra: Optional[Callable[[int], None]] = None
    on_tick: Optional[Callable[[], Optional[float]]] = None


def _shortest(*delays: Optional[float]) -> Optional[float]:
    present = [max(0.0, d) for d in delays if d is not None]
    return min(present) if present else None


class Waiter:
    def __init__(self, engine: Engine, own: OwnTicket, take: Callable[[Optional[Callable[[Ticket], bool]]],
                 Optional[Grant]], deadline: Optional[float], hooks: Hooks) -> None:
        self.engine = engine
        self.own = own
        self.take = take
        self.deadline = deadline
        self.hooks = hooks
        self.boards = own.ticket.boards
        self.ahead: Dict[str, Tuple[str, ...]] = {}
        self._alive: Set[str] = set()
        self._lock_names = {b + ".lock": b for b in self.boards}

    # -- liveness, cached: a live ticket stays live until its departure event --
    def alive(self, ticket: Ticket) -> bool:
        if ticket.name in self._alive:
            return True
        if self.engine.queue.is_alive(ticket):
            self._alive.add(ticket.name)
            return True
        return False

    def evaluate(self) -> Optional[Grant]:
        """Refresh ``ahead`` and try for a board in arrival order."""
        tickets = self.engine.queue.tickets()
        mine = set(self.boards)
        ahead: Dict[str, Tuple[str, ...]] = {}
        for ticket in tickets:
            if ticket.seq >= self.own.ticket.seq:
                break
            if mine.intersection(ticket.boards):
                if self.alive(ticket):
                    ahead[ticket.name] = ticket.boards
                else:
                    self.engine.clear_dead(ticket)
        self.ahead = ahead
        choice, _ = walk_queue(tickets, self.own.ticket.name, self.engine.available, self.alive)
        if choice is None:
            return None
        return self.take(self.alive)

    def _covered(self, board: str) -> bool:
        return any(board in boards for boards in self.ahead.values())

    def _any_available(self) -> bool:
        return any(self.engine.available(b) for b in self.boards)

    def _cancelled(self) -> bool:
        return os.path.exists(os.path.join(self.engine.lab.queue_dir, self.own.cancel_name))

    def _needs_walk(self, events: List[notify.Event]) -> bool:
        walk = False
        base, queue_dir = self.engine.lab.base, self.engine.lab.queue_dir
        for directory, mask, name in events:
            if mask & notify.IN_Q_OVERFLOW:
                if self._cancelled():
                    self._cancel()
                walk = True
            elif directory == self.own.path:
                if self._cancelled():
                    self._cancel()
            elif directory == base:
                board = self._lock_names.get(name)
                walk = walk or (board is not None and not self._covered(board))
            elif directory == self.engine.lab.sessions_dir:  # a run's holder process ended
                walk = walk or (name in self.boards and not self._covered(name))
            elif directory == queue_dir and name in self.ahead:
                del self.ahead[name]
                self._alive.discard(name)
                walk = walk or self._any_available()
        return walk

    def _cancel(self) -> None:
        self.engine.lab.audit("cancel", target=self.own.ticket.target, key=self.own.ticket.key)
        raise NotAcquiredError(self.own.ticket.target, "wait cancelled")

    def _until_expiry(self) -> Optional[float]:
        now = time.time()
        soonest: Optional[float] = None
        for board in self.boards:
            _, expires = boardlock.availability(self.engine.lab.base, board, now)
            if expires is not None and expires >= now:
                delay = expires - now + 0.01
                soonest = delay if soonest is None else min(soonest, delay)
        return soonest

    def run(self, started: float) -> Grant:
        GUARD.check()
        grant = self.evaluate()
        if grant is not None:
            return grant
        watcher = self.engine.watcher()
        watcher.add(self.own.path, OWN_EVENTS)
        walk = True  # events before the watcher existed were missed: look again
        while True:
            if walk:
                grant = self.evaluate()
                if grant is not None:
                    return grant
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                self.engine.lab.audit("timeout", target=self.own.ticket.target, key=self.own.ticket.key,
                                      waited=round(now - started, 3))
                raise NotAcquiredError(self.own.ticket.target)
            sleep = _shortest(self._until_expiry(), None if self.deadline is None else self.deadline - now,
                              self.hooks.on_tick() if self.hooks.on_tick else None)
            events, ready = watcher.wait(sleep, [*self.hooks.extra_fds, *GUARD.wake_fds])
            GUARD.check()  # safe point: nothing is half done here
            for fd in ready:
                if self.hooks.on_extra is not None and fd not in GUARD.wake_fds:
                    self.hooks.on_extra(fd)
            walk = (not events and not ready) or self._needs_walk(events)
