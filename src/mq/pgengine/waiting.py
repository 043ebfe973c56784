"""One waiter's sleep-and-look loop: asleep in ``select`` on its connection (LISTEN), never polling.

The waiter looks again (``taking.Taker.look``, one call) only when its turn may have
come (any client's call may have handed it a board already: it then only fetches it):

* ``grant SEQ`` for its own ticket;
* ``free BOARD`` for a board it is at the head for (no ticket ahead wants it);
* ``gone SEQ`` or ``grant SEQ`` for the nearest ticket ahead on one of its boards (a
  waiter further back only moves up a place, counted without a query);
* ``cancel SEQ`` for its own ticket;
* a timer: the next ``-T`` expiry of a board it is at the head for, the end of the
  grace period of a lost owner ahead of it or holding such a board, the budget, the
  agent's tick;
* the death of the live ``run`` holder of such a board, or of the one ticket it is
  directly behind on a board: a second connection waits for that owner's liveness
  lock (``pg_advisory_lock_shared``), which the server grants when the owner's
  connection dies (``DeathWatch``; so only the waiters next in line keep one);
* the caller's ``extra_fds`` and the signal guard's wake-up descriptor.

A dropped connection (or a server restart) is reconnected with back-off, the owner
lock taken back (``link``), and the ticket is still there: the waiter keeps its place.
Every ``HEARTBEAT`` seconds it beats (``Link.beat``): so the others know it lives, and it
knows its connection does (a reply that does not come is a cut connection).
"""

from __future__ import annotations

import contextlib
import select
import time
from typing import Dict, List, Optional, Sequence

import psycopg
from psycopg import pq

from mq.engine.core.errors import NotAcquiredError
from mq.engine.core.results import Grant
from mq.engine.core.signals import GUARD
from mq.engine.core.waits import Hooks

from . import session
from .link import DROPPED, CannotConnect, Link, dropped
from .rows import OWNER_CLASS, QueuedTicket
from .taking import Look, Outlook, Request, Taker

MAX_WATCHES = 1  # death watches (extra connections) one waiter keeps at most: 2 connections per waiter


class DeathWatch:
    """Connections blocked in ``pg_advisory_lock_shared`` on the liveness locks of live ``run`` holders:
    each becomes readable when its holder's connection dies (or when its own does)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.watching: Dict[int, pq.abc.PGconn] = {}

    def arm(self, owners: Sequence[int]) -> None:
        for owner in [o for o in self.watching if o not in owners]:
            self._end(owner)
        for owner in owners:
            if owner not in self.watching and len(self.watching) < MAX_WATCHES:
                pgconn = pq.PGconn.connect(session.conninfo(self.conninfo, watch=True).encode())
                try:
                    if pgconn.status != pq.ConnStatus.OK:
                        raise psycopg.OperationalError("cannot connect")
                    pgconn.send_query(f"SELECT pg_advisory_lock_shared({OWNER_CLASS}, {int(owner)})".encode())
                except psycopg.Error:
                    pgconn.finish()
                    continue  # the main connection's troubles are found and handled there
                pgconn.nonblocking = 1
                self.watching[owner] = pgconn

    def fds(self) -> List[int]:
        return [pgconn.socket for pgconn in self.watching.values()]

    def fired(self, ready: Sequence[int]) -> bool:
        """Whether a watched holder died (its watch is then ended)."""
        fired = False
        for owner, pgconn in list(self.watching.items()):
            if pgconn.socket not in ready:
                continue
            try:
                pgconn.consume_input()
                busy = pgconn.is_busy()
            except psycopg.OperationalError:
                busy = False
            if not busy:
                self._end(owner)
                fired = True
        return fired

    def _end(self, owner: int) -> None:
        pgconn = self.watching.pop(owner)
        with contextlib.suppress(Exception):
            pgconn.finish()  # lets go of the shared lock if it was granted

    def close(self) -> None:
        for owner in list(self.watching):
            self._end(owner)


def _shortest(*delays: Optional[float]) -> Optional[float]:
    present = [max(0.0, d) for d in delays if d is not None]
    return min(present) if present else None


class Waiter:
    def __init__(self, link: Link, taker: Taker, me: QueuedTicket, request: Request, deadline: Optional[float],
                 hooks: Hooks) -> None:
        self.link = link
        self.taker = taker
        self.me = me
        self.request = request
        self.deadline = deadline
        self.hooks = hooks
        self.boards = me.ticket.boards
        self.outlook = Outlook()
        self.watch = DeathWatch(link.conninfo)
        self.wake_at: Optional[float] = None  # monotonic time of the next look by a timer (-T, a grace period)
        self.beat_at = time.monotonic() + session.HEARTBEAT  # of the next beat
        self.left = ""  # what leaving said, once the wait left the queue itself
        self._progress: Optional[tuple[int, int]] = None

    # -- one look, through reconnects --------------------------------------------------
    def _look(self, look: Optional[Look] = None, peek: bool = False) -> Optional[Grant]:
        while look is None:
            try:
                look = self.taker.look(self.me, self.request, peek)
            except DROPPED as exc:
                self._reconnect(exc)
                peek = False
        if look.grant is not None:
            return look.grant
        assert look.snapshot is not None
        self.outlook = self.taker.outlook(look.snapshot, self.me)
        wake_in = self.outlook.wake_in  # an expiry or a grace period: a deadline, computed once
        self.wake_at = None if wake_in is None else time.monotonic() + wake_in
        self._tell_progress(self.outlook.position, self.outlook.total)
        return None

    def _reconnect(self, why: BaseException) -> None:
        """Connect again, for as long as the wait lasts: a waiter keeps its place only by coming back
        (it is kept for it through a restart; ``PlaceLost`` when the server stayed up, or when it was
        cleared as silent meanwhile)."""
        if not dropped(why, self.link):
            raise why
        try:
            self.link.reconnect(why, self._pause, self.deadline, patient=True)
        except CannotConnect:
            raise NotAcquiredError(self.me.ticket.target, "no connection to the queue database") from None

    def _beat(self) -> bool:
        """A beat (``Link.beat``) when one is due; False: the connection was cut and made again."""
        if time.monotonic() < self.beat_at:
            return True
        self.beat_at = time.monotonic() + session.HEARTBEAT
        try:
            self.link.beat()
        except DROPPED as exc:
            self._reconnect(exc)
            return False
        return True

    def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds between reconnects, still answering the caller's descriptors."""
        fds = [*self.hooks.extra_fds, *GUARD.wake_fds]
        ready = select.select(fds, [], [], delay)[0] if fds else []
        if not fds:
            time.sleep(delay)
        GUARD.check()
        self._extra(ready)

    def _extra(self, ready: Sequence[int]) -> None:
        for fd in ready:
            if self.hooks.on_extra is not None and fd in self.hooks.extra_fds:
                self.hooks.on_extra(fd)

    def _tell_progress(self, position: int, total: int) -> None:
        if self.hooks.on_progress is not None and (position, total) != self._progress:
            self._progress = (position, total)
            self.hooks.on_progress(position, total)

    # -- what a notification means to this waiter -----------------------------------------
    def _relevant(self, payloads: List[str]) -> Optional[str]:
        """What the notifications call for: None (nothing), "peek" (only tickets ahead were granted
        boards: the walks that did it walked the whole queue) or "look"."""
        look, peek = False, False
        for payload in payloads:
            what, _, arg = payload.partition(" ")
            if what == "free":
                look = look or arg in self.outlook.head
            elif what in ("cancel", "grant") and arg == str(self.me.seq):
                look = True
            elif what in ("gone", "cancel", "grant") and arg.isdigit() and int(arg) in self.outlook.ahead \
                    and self._departed(int(arg)):
                # a ticket ahead left, or was cancelled (it no longer counts, even while its owner is stopped)
                look = look or what != "grant"
                peek = peek or what == "grant"
        return "look" if look else "peek" if peek else None

    def _departed(self, seq: int) -> bool:
        """A ticket ahead left: look only if that makes this waiter the head for another board."""
        before = set(self.outlook.nearest(self.boards))
        del self.outlook.ahead[seq]
        after = set(self.outlook.nearest(self.boards))
        self.outlook.head = [b for b in self.boards if b not in after]
        self.outlook.position = max(1, self.outlook.position - 1)
        self.outlook.total = max(self.outlook.position, self.outlook.total - 1)
        self._tell_progress(self.outlook.position, self.outlook.total)
        return after != before

    def _received(self) -> Optional[List[str]]:
        """The notifications that came (None: the connection dropped and was made again)."""
        try:
            return self.link.received()
        except DROPPED as exc:
            self._reconnect(exc)
            return None

    # -- the loop ---------------------------------------------------------------------------
    def run(self, first: Look) -> Grant:
        """Wait from ``first`` (what queueing the ticket sent back) until the ticket has a board."""
        GUARD.check()
        try:
            self.link.listen()
        except DROPPED as exc:  # dropped between the enqueue and the LISTEN: the reconnect listens
            self._reconnect(exc)
        try:
            return self._loop(first)
        finally:
            self.watch.close()

    def _loop(self, first: Look) -> Grant:
        grant = self._look(first)
        if grant is None and not first.listening:  # what came between the call and the LISTEN: look again
            grant = self._look()
        while grant is None:
            GUARD.check()
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                self._time_out(now)
            payloads = self._received()  # (those that came during the look)
            wanted = "look" if payloads is None else self._relevant(payloads)
            if wanted:
                grant = self._look(peek=wanted == "peek")
                continue
            self.watch.arm(sorted(self.outlook.watch | self.outlook.predecessors(self.boards)))
            tick = self.hooks.on_tick() if self.hooks.on_tick else None
            sleep = _shortest(None if self.wake_at is None else self.wake_at - now,
                              None if self.deadline is None else self.deadline - now, tick, self.beat_at - now)
            conn_fd = self.link.conn.fileno()
            fds = [conn_fd, *self.watch.fds(), *self.hooks.extra_fds, *GUARD.wake_fds]
            ready = select.select(fds, [], [], sleep)[0]
            GUARD.check()  # safe point: nothing is half done here
            woken = time.monotonic()
            # a timer (-T, a grace period, the caller's tick): a look whatever woke it; a beat alone is no reason
            look = any(at is not None and woken >= at for at in (self.wake_at, None if tick is None else now + tick))
            wanted = "look" if look else None
            if conn_fd in ready:
                payloads = self._received()
                wanted = "look" if payloads is None else (wanted or self._relevant(payloads))
            if self.watch.fired(ready) or not self._beat():
                wanted = "look"
            self._extra(ready)
            if wanted:
                grant = self._look(peek=wanted == "peek")
        return grant

    def _time_out(self, now: float) -> None:
        """The budget ran out: the ticket leaves the queue, logged (a grant made for it meanwhile
        is given back)."""
        with contextlib.suppress(*DROPPED):
            self.left = self.taker.leave(self.me.seq, "timeout", now - self.request.started)
        raise NotAcquiredError(self.me.ticket.target)


__all__ = ["DeathWatch", "Waiter"]
