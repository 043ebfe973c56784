"""Waiting and granting: a ticket in the queue, a sleep until its turn, the board taken.

A wait queues a ticket, and a ``Waiter`` sleeps until the ticket's turn
may have come; then, under the mutex, the queue is walked again and the
board taken: a free one, or one whose lock may be reclaimed (its ``-T``
timeout passed, or the ``run`` job holding it died). ``sem -cancel`` asks
waits to end.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, List, Optional, Sequence

from mq.engine.core import policy
from mq.engine.core.errors import (
    AlreadyHeldError,
    BadInputError,
    BoardOfflineError,
    DiskError,
    EngineError,
    LockDirError,
)
from mq.engine.core.inventory import Inventory
from mq.engine.core.names import NO_KEY, check_key
from mq.engine.core.results import Grant, Holder
from mq.engine.core.signals import GUARD
from mq.engine.core.waits import Hooks, Request

from . import boardlock, legacy, maintenance, notify, offline_marks
from .doorbell import Doorbell
from .fsutil import os_error
from .labdir import LabDir
from .legacy_waiters import Turns
from .lockstate import LockState
from .queue import OwnTicket, Queue, Ticket, walk_queue
from .waiter import Waiter


class Granter:
    def __init__(self, lab: LabDir, inventory: Inventory, queue: Queue, state: LockState) -> None:
        self.lab = lab
        self.inventory = inventory
        self.queue = queue
        self.state = state
        self._watcher: notify.InotifyWatcher | notify.PollWatcher | None = None
        self._doorbell: Optional[Doorbell] = None
        self.turns = Turns(state.legacy)  # mq.sh's waiters, owed their turn on a free board

    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
             hooks: Hooks = Hooks(), session: bool = False, boards: Optional[Sequence[str]] = None,
             priority: Optional[int] = None) -> Grant:
        """Take a board (or the first free pool member) in the queue's order
        (see ``interface.LockEngine.wait``)."""
        boards = self.inventory.narrowed(name, boards)
        check_key(key)
        try:
            rank = policy.check_priority(self.inventory.queue.priority_for(self.lab.user, key, priority))
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        self.lab.ensure()
        if not self.inventory.is_pool(name):
            mark = offline_marks.read(self.lab, name)
            if mark is not None:  # a pool skips it; a wait for it alone would never end
                raise BoardOfflineError(name, mark.reason, mark.user, mark.since)
            held = boardlock.read_holder(self.lab.base, name)
            if held is not None and held.kind == "file" and held.uid == self.lab.uid \
                    and key in (NO_KEY, held.key) and not held.expired(time.time()) \
                    and not self.state.dead_session(held):
                raise AlreadyHeldError(name, held.shown_key, key)
        started = time.monotonic()
        deadline = None if budget is None else started + max(0.0, budget)
        with GUARD.deferred():  # signals are taken at the waiter's safe points only
            return self._wait_deferred(name, boards, key, timeout, session, started, deadline, hooks, rank)

    def _wait_deferred(self, name: str, boards: Sequence[str], key: str, timeout: int, session: bool,
                       started: float, deadline: Optional[float], hooks: Hooks, rank: int) -> Grant:
        with self.lab.mutex():
            own = self.queue.enqueue(name, boards, key, rank)
        try:

            request = Request(name=name, key=key, timeout=timeout, session=session, started=started)

            def take(alive: Optional[Callable[[Ticket], bool]]) -> Optional[Grant]:
                return self._try(own, request, alive)

            waiter = Waiter(self, own, take, deadline, hooks)
            try:
                return waiter.run(started)
            finally:
                waiter.close()
        finally:
            own.close()

    def cancel(self, name: str, key: str = NO_KEY, force: bool = False) -> int:
        """Ask the caller's waits for ``name`` with ``key`` to end (each exits 2), and end the
        caller's ``mq.sh`` waiters for it on this host (see ``legacy``); ``force``: any user's
        waits with ``key`` too (an operator's), each audited as ``force``."""
        boards = self.inventory.members(name)
        check_key(key)
        self.lab.ensure()
        count = 0
        for ticket in self.queue.tickets():
            if (ticket.uid != self.lab.uid and not force) or ticket.key != key:
                continue
            if name != ticket.target and name not in ticket.boards:
                continue
            if self.queue.is_alive(ticket):
                self.queue.request_cancel(ticket)
                if ticket.uid != self.lab.uid:
                    self.lab.audit.record("force", target=ticket.target, key=key, waiter=ticket.user,
                                          what="cancel")
                count += 1
        return count + legacy.end_waiters(self.lab.base, boards, key)

    # -- what a waiter uses (waiter.WaitSite) ----------------------------------------
    def watcher(self) -> notify.InotifyWatcher | notify.PollWatcher:
        """This engine's inotify watcher (made when a waiter first reaches the head, then kept:
        closing one costs milliseconds); the waiter adds and removes its watches."""
        if self._watcher is None:
            self._watcher = notify.watch({})
        else:
            self._watcher.read_events()  # drop what happened between waits
        return self._watcher

    def doorbell(self) -> Doorbell:
        if self._doorbell is None:
            self._doorbell = Doorbell()
        return self._doorbell

    def available(self, board: str) -> bool:
        """In service, and free, past its ``-T`` timeout, or held by a ``run`` whose process died."""
        if offline_marks.exists(self.lab, board):
            return False
        if boardlock.availability(self.lab.base, board, time.time())[0]:
            return True
        holder = boardlock.read_holder(self.lab.base, board) if self.lab.sessions.has_file(board) else None
        if holder is not None and self.state.dead_session(holder):
            return True
        self.turns.held(board)
        return False

    def turn_ends(self, boards: Sequence[str]) -> Optional[float]:
        """Seconds until an mq.sh waiter's turn on one of ``boards`` ends (``legacy_waiters``)."""
        return self.turns.ends_in(boards)

    def turn_running(self, board: str) -> bool:
        return self.turns.running(board)

    def settle(self, boards: Sequence[str]) -> None:
        """The offline boards among ``boards`` whose lock is gone, past its ``-T`` or a dead ``run``'s
        get their maintenance lock in its place (``maintenance.settle``); best effort, as a waiter
        must keep waiting whatever happens here."""
        for board in boards:
            if offline_marks.exists(self.lab, board) and self._unsettled(board):
                with contextlib.suppress(LockDirError, DiskError, OSError), self.lab.mutex():
                    maintenance.settle(self.lab, self.state, board)

    def _unsettled(self, board: str) -> bool:
        mark = offline_marks.read(self.lab, board)
        holder = boardlock.read_holder(self.lab.base, board)
        if mark is None or mark.holds(holder):
            return False
        return holder is None or holder.expired(time.time()) or self.state.dead_session(holder)

    def ordered(self) -> List[Ticket]:
        """The queue in serving order, without the tickets marked cancelled (by ``-cancel -f``: the
        waiter may be stopped and not see it yet, but it no longer holds anyone up)."""
        tickets = self.queue.tickets()
        return policy.order([t for t in tickets if t.name not in self.queue.cancelled], self.inventory)

    def clear_dead(self, ticket: Ticket) -> None:
        """A dead waiter's ticket goes, logged first: a walker killed in between leaves the record
        (the next walker may log it again), never a ticket gone without one."""
        if self.queue.is_alive(ticket):
            return
        self.lab.audit.record("dead-waiter", target=ticket.target, key=ticket.key, waiter=ticket.user,
                              pid=ticket.pid)
        self.queue.clear_dead(ticket)

    # -- taking the board ------------------------------------------------------------
    def _walk(self, own: OwnTicket, alive: Optional[Callable[[Ticket], bool]] = None) -> Optional[str]:
        choice, dead = walk_queue(self.ordered(), own.ticket.name, self.available,
                                  alive or self.queue.is_alive, self.lab.base, owed=self.turns.owed)
        for ticket in dead:
            self.clear_dead(ticket)
        return choice

    def _try(self, own: OwnTicket, request: Request,
             alive: Optional[Callable[[Ticket], bool]] = None) -> Optional[Grant]:
        """Walk again under the mutex and, if this ticket's turn has come, take the board."""
        with GUARD.deferred(), self.lab.mutex():
            board = self._walk(own, alive)
            return None if board is None else self._take(board, own, request)

    def _take(self, board: str, own: OwnTicket, request: Request) -> Optional[Grant]:
        """Create the lock for ``board`` (mutex held); None if a legacy tool won the race."""
        base = self.lab.base
        holder = boardlock.read_holder(base, board)
        self.state.close_taken_over(board, holder, "wait")  # before this grant's record replaces it
        reclaimed, reclaimed_timeout = "", 0
        if holder is not None:
            dead = self.state.dead_session(holder)
            if not dead and not holder.expired(time.time()):
                return None
            self._reclaim(holder, "dead-session" if dead else "expired")
            reclaimed, reclaimed_timeout = holder.user, 0 if dead else (holder.timeout or 0)
        path = boardlock.lock_path(base, board)
        try:
            st = boardlock.try_create(base, board, request.timeout)
        except OSError as exc:
            raise os_error(exc, path, "create lock") from None
        if st is None:
            return None
        pool = request.name if request.name != board else ""
        try:
            boardlock.write_key(base, board, request.key, self.lab.read_mode)
            if request.session:
                self.lab.sessions.hold(board)
            number = self.lab.counters.next_number("grants")
            self.lab.records.write(board, {"grant": number, "dev": st.st_dev, "ino": st.st_ino,
                                           "mtime_ns": st.st_mtime_ns, "user": self.lab.user,
                                           "key": request.key, "pool": pool, "pid": os.getpid(),
                                           "session": request.session, "time": time.time(),
                                           "session_file": self.lab.sessions.identity(board) if request.session
                                           else None})
        except (OSError, EngineError) as exc:
            self._undo_create(board, st, request.key)
            if isinstance(exc, EngineError):
                raise
            raise os_error(exc, boardlock.key_path(base, board), "store key") from None
        own.close()
        waited = round(time.monotonic() - request.started, 3)
        self.lab.audit.record("grant", board=board, pool=pool, key=request.key, grant=number,
                              timeout=request.timeout, waited=waited, session=request.session or None,
                              priority=own.ticket.priority or None)
        return Grant(board=board, target=request.name, key=request.key, timeout=request.timeout, grant=number,
                     waited=waited, reclaimed_from=reclaimed, reclaimed_timeout=reclaimed_timeout)

    def _undo_create(self, board: str, st: os.stat_result, key: str) -> None:
        mine = boardlock.read_holder(self.lab.base, board)
        if mine is not None and mine.same_file(st):
            boardlock.remove_checked(self.lab.base, mine)
        boardlock.drop_key(self.lab.base, board, key)
        self.lab.sessions.end(board)

    def _reclaim(self, holder: Holder, why: str) -> None:
        record = self.state.record_for(holder)
        try:
            removed = boardlock.remove_checked(self.lab.base, holder)
        except PermissionError:
            raise LockDirError(boardlock.lock_path(self.lab.base, holder.board),
                               f"permission denied reclaiming the expired lock of {holder.user} "
                               "(is the lock directory sticky?)") from None
        except OSError as exc:
            raise os_error(exc, boardlock.lock_path(self.lab.base, holder.board), "reclaim lock") from None
        if removed:
            boardlock.drop_key(self.lab.base, holder.board, holder.key)
            self.lab.records.drop(holder.board)
            self.lab.audit.record("reclaim", reason=why, board=holder.board, previous_user=holder.user,
                                  previous_key=holder.key, grant=record.get("grant") if record else None,
                                  timeout=holder.timeout, age=round(time.time() - holder.since_ns / 1e9, 3))


__all__ = ["Granter", "Request"]
