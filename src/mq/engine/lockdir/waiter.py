"""One waiter's sleep-and-walk loop: wake only when this waiter might be served.

A waiter keeps ``ahead``: the live tickets served before it (``policy.order``:
those that arrived earlier, under FIFO) that want one of its boards. A board
some ticket ahead also wants is that ticket's business, so:

* for each of its boards the waiter rings a doorbell on the nearest ticket
  ahead that wants it (``doorbell``: a thread blocked in ``flock`` on that
  ticket), and walks the queue when one leaves and a board of its is free;
* only a waiter at the head for some board (no ticket ahead wants it) uses
  inotify, on just the lock files of those boards (released, moved aside,
  re-dated); a ``run`` holder's death rings a doorbell on its session file (a
  thread blocked in ``flock`` on it: inotify's close event comes before the
  kernel drops the flock, so a look on that event could still find it held
  and miss the death); ``-T`` expiries
  are timers. Others need no inotify instance at all, and nobody wakes for
  boards they do not wait for.
* ``sem -cancel`` marks the ticket and nudges the owner (SIGUSR1, or a
  touch of the ticket for a waiter watching it).
* Timeouts: the ``-w``/``-t`` budget, the next ``-T`` expiry of a board it is
  at the head for, and the agent's keepalive tick.
"""

from __future__ import annotations

import os
import select
import time
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from mq.engine.core.errors import LockDirError, NotAcquiredError
from mq.engine.core.results import Grant
from mq.engine.core.signals import GUARD
from mq.engine.core.waits import Hooks

from . import boardlock, notify, offline_marks
from .cancel_sentinel import CancelSentinel
from .doorbell import Doorbell
from .labdir import LabDir
from .queue import OwnTicket, Queue, Ticket, walk_queue

LOCK_EVENTS = notify.IN_ATTRIB | notify.IN_MOVE_SELF | notify.IN_DELETE_SELF
SESSION_BELL = "session:"  # a doorbell name: the ``run`` session flock of this board was let go
MARK_EVENTS = notify.IN_ATTRIB | notify.IN_MOVE_SELF | notify.IN_DELETE_SELF  # an offline mark dropped or replaced
OWN_EVENTS = notify.IN_ATTRIB


class WaitSite(Protocol):
    """What a waiter needs from the engine it waits in (``grant.Granter``)."""

    @property
    def lab(self) -> LabDir: ...

    @property
    def queue(self) -> Queue: ...

    def available(self, board: str) -> bool:
        """The board can be taken now (free, or its lock may be reclaimed)."""
        ...

    def clear_dead(self, ticket: Ticket) -> None: ...

    def ordered(self) -> List[Ticket]:
        """The queue's tickets in the order they are served (``policy.order``)."""
        ...

    def settle(self, boards: Sequence[str]) -> None:
        """Offline boards among ``boards``: the maintenance lock in place of a lock that is gone
        or may be reclaimed (a board is never handed out while offline)."""
        ...

    def doorbell(self) -> Doorbell: ...

    def turn_ends(self, boards: Sequence[str]) -> Optional[float]:
        """Seconds until an ``mq.sh`` waiter's turn on one of ``boards`` ends (None: none runs)."""
        ...

    def turn_running(self, board: str) -> bool: ...

    def watcher(self) -> notify.InotifyWatcher | notify.PollWatcher: ...


Take = Callable[[Optional[Callable[[Ticket], bool]]], Optional[Grant]]


def _shortest(*delays: Optional[float]) -> Optional[float]:
    present = [max(0.0, d) for d in delays if d is not None]
    return min(present) if present else None


class Waiter:
    def __init__(self, site: WaitSite, own: OwnTicket, take: Take, deadline: Optional[float],
                 hooks: Hooks) -> None:
        self.site = site
        self.own = own
        self.take = take
        self.deadline = deadline
        self.hooks = hooks
        self.boards = own.ticket.boards
        self.ahead: Dict[str, Tuple[str, ...]] = {}  # name -> boards, in queue order
        self._alive: Set[str] = set()
        self._lock_names = {b + ".lock": b for b in self.boards}
        self._watcher: Optional[notify.InotifyWatcher | notify.PollWatcher] = None
        self._watched: Set[str] = set()
        self._progress: Optional[Tuple[int, int]] = None
        self._sentinel: Optional[CancelSentinel] = None  # started before the first sleep; ``close`` ends it

    # -- liveness, cached: a live ticket stays live until its doorbell rings --
    def alive(self, ticket: Ticket) -> bool:
        if ticket.name in self._alive:
            return True
        if self.site.queue.is_alive(ticket):
            self._alive.add(ticket.name)
            return True
        return False

    def evaluate(self) -> Optional[Grant]:
        """Refresh ``ahead`` and try for a board in queue order."""
        self.site.settle(self.boards)
        tickets = self.site.ordered()
        place = next((i for i, t in enumerate(tickets) if t.name == self.own.ticket.name), None)
        if place is None:
            self._check_cancel()  # cancelled by someone else (-cancel -f): left out of the order
            self._lost_place()
        mine = set(self.boards)
        ahead: Dict[str, Tuple[str, ...]] = {}
        for ticket in tickets[:place]:
            if mine.intersection(ticket.boards):
                if self.alive(ticket):
                    ahead[ticket.name] = ticket.boards
                else:
                    self.site.clear_dead(ticket)
        self.ahead = ahead
        choice, _ = walk_queue(tickets, self.own.ticket.name, self.site.available, self.alive,
                               self.site.lab.base)
        grant = None if choice is None else self.take(self.alive)
        if grant is None and self.hooks.on_progress is not None:  # still waiting: where, now?
            behind = sum(1 for t in tickets[(place or 0) + 1:] if mine.intersection(t.boards))
            self._tell_progress(len(ahead) + 1, len(ahead) + 1 + behind)
        return grant

    def _tell_progress(self, position: int, total: int) -> None:
        """Position 1: no live waiter ahead wants any board of ours. Waiters behind are counted
        without a liveness look (cheap); a waiter further back learns of a change at its next
        walk: when the ticket directly ahead leaves, or at the agent's keepalive tick."""
        if (position, total) != self._progress and self.hooks.on_progress is not None:
            self._progress = (position, total)
            self.hooks.on_progress(position, total)

    def _nearest(self) -> Dict[str, str]:
        """For each covered board, the nearest ticket ahead that wants it."""
        nearest: Dict[str, str] = {}
        for name, boards in self.ahead.items():  # queue order: later ones overwrite
            for board in boards:
                if board in self.boards:
                    nearest[board] = name
        return nearest

    def _head_boards(self) -> List[str]:
        covered = self._nearest()
        return [b for b in self.boards if b not in covered]

    def _any_available(self) -> bool:
        return any(self.site.available(b) for b in self.boards)

    def _lost_place(self) -> None:
        """Our ticket is gone from the queue (removed by hand, or the lab directory itself)."""
        base = self.site.lab.base
        if not os.path.isdir(base):
            raise LockDirError(base, "the lock directory disappeared while waiting")
        self.site.lab.audit.record("ticket-lost", target=self.own.ticket.target, key=self.own.ticket.key)
        raise NotAcquiredError(self.own.ticket.target, "its place in the queue was removed")

    def _take_nudge(self) -> None:
        """SIGUSR1 from ``sem -cancel`` was seen: look for this ticket's cancel mark."""
        if GUARD.nudged:
            GUARD.nudged = False
            self._check_cancel()

    def _check_cancel(self) -> None:
        if os.path.exists(os.path.join(self.site.lab.queue_dir, self.own.cancel_name)):
            self.site.lab.audit.record("cancel", target=self.own.ticket.target, key=self.own.ticket.key)
            raise NotAcquiredError(self.own.ticket.target, "wait cancelled")

    def _arm(self, head: List[str]) -> bool:
        """Doorbells on the tickets ahead; at the head, inotify on just the lock (and ``run``
        session) files of the boards it waits for. True if the caller must look again."""
        bell = self.site.doorbell()
        for name in set(self._nearest().values()):
            bell.watch(os.path.join(self.site.lab.queue_dir, name), name)
        if not head:
            if self._watcher is not None:
                self._watcher.keep({self.own.path: OWN_EVENTS})
            return False
        newly = False
        if self._watcher is None:  # (its queued events were just dropped: look again)
            self._watcher = self.site.watcher()
            newly = True
        wanted = {self.own.path: OWN_EVENTS}
        for board in head:
            lock = boardlock.lock_path(self.site.lab.base, board)
            mark = offline_marks.path(self.site.lab, board)
            offline = os.path.lexists(mark)
            if offline:
                wanted[mark] = MARK_EVENTS  # `mq online`: the board may be free at once
            if not os.path.lexists(lock):  # freed since the walk: nothing to watch, look again (unless the
                newly = newly or not (offline or self.site.turn_running(board))  # free board is mq.sh's turn)
                continue
            wanted[lock] = LOCK_EVENTS
            session = self.site.lab.sessions.path(board)
            if os.path.lexists(session):
                bell.watch(session, SESSION_BELL + board)
        self._watched = set(wanted) - {self.own.path}
        return not self._watcher.keep(wanted) or newly

    def _relevant(self, events: List[notify.Event]) -> bool:
        walk = False
        for path, mask, _name in events:
            if mask & notify.IN_Q_OVERFLOW:
                self._check_cancel()
                walk = True
            elif path == self.own.path:
                self._check_cancel()
            elif path in self._watched:  # a lock released, moved aside, re-dated; a run's holder gone
                walk = True
        return walk

    def _departed(self, names: List[str]) -> bool:
        if any(n.startswith(SESSION_BELL) for n in names):
            return True  # a run holder ended or died: its lock may be free or reclaimable now
        gone = {n for n in names if n in self.ahead}  # a ticket may ring more than once
        for name in gone:
            del self.ahead[name]
            self._alive.discard(name)
        return bool(gone) and self._any_available()

    def _until_expiry(self, head: List[str]) -> Optional[float]:
        now = time.time()
        soonest: Optional[float] = None
        for board in head:
            _, expires = boardlock.availability(self.site.lab.base, board, now)
            if expires is not None and expires < now and offline_marks.exists(self.site.lab, board):
                continue  # offline: the walk after it passed put the maintenance lock in place, or could not
            if expires is not None:
                # Passed while awake for something else (a keepalive, an unrelated event):
                # look now, or nothing would ever wake this waiter for it.
                delay = max(0.0, expires - now) + 0.01
                soonest = delay if soonest is None else min(soonest, delay)
        return soonest

    def _sentinel_fds(self) -> List[int]:
        """Before the first sleep: the ``mq.sh -cancel`` sentinel (``cancel_sentinel``), watched."""
        if self._sentinel is None:
            ticket = self.own.ticket
            self._sentinel = CancelSentinel.start(self.site.lab.base, [ticket.target, *ticket.boards], ticket.key)
            if self._sentinel is None:
                return []
            os.set_blocking(self._sentinel.fd, False)
        return [self._sentinel.fd]

    def _check_sentinel(self, ready: List[int]) -> None:
        if self._sentinel is not None and self._sentinel.fd in ready and self._sentinel.ended():
            self.site.lab.audit.record("cancel", target=self.own.ticket.target, key=self.own.ticket.key,
                                       by="mq.sh -cancel")
            raise NotAcquiredError(self.own.ticket.target, "wait cancelled")

    def close(self) -> None:
        if self._sentinel is not None:
            self._sentinel.close()
            self._sentinel = None

    def _sleep(self, head: List[str], sleep: Optional[float]) -> Tuple[List[notify.Event], List[int]]:
        fds = [self.site.doorbell().fileno(), *self.hooks.extra_fds, *GUARD.wake_fds, *self._sentinel_fds()]
        watcher = self._watcher
        if watcher is not None and (head or isinstance(watcher, notify.InotifyWatcher)):
            return watcher.wait(sleep, fds)
        ready, _, _ = select.select(fds, [], [], sleep)
        return [], ready

    def run(self, started: float) -> Grant:
        """Wait for the grant; a lock directory removed meanwhile is said as such, whichever
        step (a look, a dead waiter's clearing, the mutex) found its files gone first."""
        try:
            return self._run(started)
        except LockDirError:
            base = self.site.lab.base
            if not os.path.isdir(base):
                raise LockDirError(base, "the lock directory disappeared while waiting") from None
            raise

    def _run(self, started: float) -> Grant:
        GUARD.check()
        grant = self.evaluate()
        if grant is not None:
            return grant
        self.site.doorbell().rung()  # bells of earlier waits
        walk = False
        while True:
            GUARD.check()  # also a safe point when a look is repeated without sleeping
            if walk:
                grant = self.evaluate()
                if grant is not None:
                    return grant
            head = self._head_boards()
            if self._arm(head):
                walk = True  # watches just added: look again before sleeping
                continue
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                self.site.lab.audit.record("timeout", target=self.own.ticket.target, key=self.own.ticket.key,
                                      waited=round(now - started, 3))
                raise NotAcquiredError(self.own.ticket.target)
            sleep = _shortest(self._until_expiry(head), None if self.deadline is None else self.deadline - now,
                              self.hooks.on_tick() if self.hooks.on_tick else None, self.site.turn_ends(self.boards))
            # A cancel's nudge that came before this sleep (its wake-up byte already drained
            # by a safe point) must not be left for after it: the sleep may be endless.
            self._take_nudge()
            events, ready = self._sleep(head, sleep)
            GUARD.check()  # safe point: nothing is half done here
            self._take_nudge()
            self._check_sentinel(ready)
            bell = self.site.doorbell()
            walk = not events and not ready  # a timeout: an expiry or the deadline
            if bell.fileno() in ready:
                walk = self._departed(bell.rung()) or walk
            walk = self._relevant(events) or walk
            for fd in ready:
                if self.hooks.on_extra is not None and fd in self.hooks.extra_fds:
                    self.hooks.on_extra(fd)
