"""A ``run`` job's watch on its own lock: is it still the very file the job's grant made?

A lock can be taken away behind a job's back: ``lockfile -l`` breaks a lock by
its age, a waiter reclaims one whose ``-T`` has passed, ``sem -signal -f``
removes one. The job must notice within a second, stop, power the board off
and say who took it, and must then never release the lock at the path: it is
the new holder's.

The lock file is watched with inotify (its removal, renaming or re-dating
wakes the job at once) and compared with one ``lstat`` at least every
``CHECK_INTERVAL`` seconds as well, which also covers hosts without inotify
and lock directories on network file systems. Identity is the lock's device,
inode, owner and modification time together, as ``boardlock.remove_checked``
and the grant records compare it.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import List, Optional

from mq.engine.core.errors import EngineError
from mq.engine.core.interface import JobEngine
from mq.engine.core.results import Holder

from . import boardlock, notify
from .semaphore import Engine

CHECK_INTERVAL = 0.5  # seconds between two looks without an inotify event
SUCCESSOR_GRACE = 0.2  # a lock found missing: how long to look for the one replacing it
_EVENTS = notify.IN_ATTRIB | notify.IN_DELETE_SELF | notify.IN_MOVE_SELF


@dataclass(frozen=True)
class LockLoss:
    """What a job found at its lock's path instead of its own lock."""

    board: str
    grant: Optional[int]  # the grant that made the lock (``run -n``: None if mq did not make it)
    taken_by: Optional[str]  # the new holder's user; None: no lock there now
    noticed: float  # time.time() when the job noticed
    new_since: Optional[float]  # when the new lock was made (its mtime), if there is one
    released: bool = False  # no successor: its own holder released it (``sem -signal`` with the right key)


class LockLost(Exception):
    """Raised from a job's watch loop: its lock is gone or is another's now."""

    def __init__(self, loss: LockLoss) -> None:
        super().__init__(f"the lock for {loss.board} was lost")
        self.loss = loss


class LockWatch:
    """Watches one board's lock file for a job (see the module's text)."""

    def __init__(self, engine: Engine, board: str, own: Optional[Holder], grant: Optional[int]) -> None:
        self.engine = engine
        self.board = board
        self.own = own  # None: the lock was not the job's already when the watch began
        self.grant = grant if grant is not None or own is None else own.grant  # -n: the grant mq recorded, if any
        self.path = boardlock.lock_path(engine.lab.base, board)
        self._next = 0.0  # monotonic time of the next look (0: look now)
        self._watcher = notify.watch({})
        if own is not None:
            with contextlib.suppress(OSError):  # gone already (the first look says so), or unwatchable: lstat alone
                self._watcher.add(self.path, _EVENTS)

    @property
    def fds(self) -> List[int]:
        fd = self._watcher.fileno()
        return [fd] if fd >= 0 else []

    def sleep(self) -> float:
        """The longest a watch loop may sleep before the next look."""
        return max(0.0, self._next - time.monotonic())

    def look(self, ready: List[int]) -> None:
        """After a loop's ``select`` (``ready``: its readable fds): raise ``LockLost``
        if the lock is no longer the job's. Costs nothing until an inotify event
        or ``CHECK_INTERVAL`` has passed since the last look."""
        woken = any(fd in ready for fd in self.fds)
        if woken:
            self._watcher.read_events()
        now = time.monotonic()
        if not woken and now < self._next:
            return
        self._next = now + CHECK_INTERVAL
        if not self._still_ours():
            raise LockLost(self._loss())

    def _still_ours(self) -> bool:
        if self.own is None:
            return False
        try:
            return self.own.same_file(os.lstat(self.path))
        except OSError:
            return False

    def _loss(self) -> LockLoss:
        noticed = time.time()
        successor = self._successor()
        return LockLoss(board=self.board, grant=self.grant, taken_by=successor.user if successor else None,
                        noticed=noticed, new_since=successor.since_ns / 1e9 if successor else None,
                        released=successor is None and self._released_by_holder())

    def _released_by_holder(self) -> bool:
        """The lock went by its own holder's plain release (``sem -signal`` with its key, audited
        ``release`` under the lab mutex before the lock went): the job ends quietly, as ``mq.sh``'s
        would (the sddf CI releases a ``run -n`` job's lock, then hangs up on it)."""
        own = self.own
        if own is None:
            return False
        with contextlib.suppress(EngineError, OSError):
            for event in reversed(self.engine.events(self.board, since=own.since_ns / 1e9 - 1)):
                if event.get("board") == self.board and event.get("event") in ("release", "force", "reclaim"):
                    return bool(event.get("event") == "release" and event.get("user") == own.user
                                and event.get("outcome") == "released")
        return False

    def _successor(self) -> Optional[Holder]:
        """Who holds the board now. Read under the lab mutex, so an ``mq`` reclaim (which
        removes the lock and creates its own under it) is seen whole; a lock found missing
        is looked at a little longer (``lockfile -l`` removes, then creates)."""
        deadline = time.monotonic() + SUCCESSOR_GRACE
        while True:
            holder = self._read_holder()
            if holder is not None or time.monotonic() >= deadline:
                return holder
            time.sleep(0.02)

    def _read_holder(self) -> Optional[Holder]:
        base = self.engine.lab.base
        with contextlib.suppress(EngineError, OSError), self.engine.lab.mutex():
            return boardlock.read_holder(base, self.board)
        return boardlock.read_holder(base, self.board)  # the mutex could not be had: read without it

    def settle(self, loss: LockLoss, key: str, mode: str) -> None:
        """The lock is lost: let go of the job's session flock (a new holder's ``run`` takes
        it), close the job's grant record the way every look at the board would
        (``taken-over``), and write ``lock-lost`` to the audit log. The lock at the path
        is never touched: it is the new holder's."""
        lab = self.engine.lab
        self.let_go()
        self.engine.state.notice_taken_over(loss.board, "run")
        after = round(loss.noticed - loss.new_since, 3) if loss.new_since is not None else None
        lab.audit.record("lock-lost", board=loss.board, grant=loss.grant, key=key, mode=mode,
                         taken_by=loss.taken_by, noticed_after=after)

    def let_go(self) -> None:
        """The lock is no longer the job's: let go of the job's session flock (a new holder's
        ``run`` takes it)."""
        self.engine.lab.sessions.end(self.board)

    def close(self) -> None:
        self._watcher.close()


def watch_lock(engine: JobEngine, board: str, grant: Optional[int]) -> Optional[LockWatch]:
    """A watch on the lock a job holds on ``board`` (its grant number ``grant``, or None
    for a lock the caller held before, ``run -n``); None for an engine without lock files.

    With a grant number, the lock at the path must be the one that grant created
    (its grant record says so); else it is the lock there now (``check_held`` has
    just found it to be the caller's).
    """
    if not isinstance(engine, Engine):
        return None
    own = engine.holder(board)
    if own is not None and grant is not None and own.grant != grant:
        own = None
    return LockWatch(engine, board, own, grant)


__all__ = ["CHECK_INTERVAL", "LockLoss", "LockLost", "LockWatch", "watch_lock"]
