"""A ``run`` lock's watch in the database while its job runs on a lab host.

The job (a bare job on the board's host) makes no database calls for as long as
it runs, so without this nothing would look after its lock in the meantime:

* **Keep it alive.** A database restart or a network cut drops the connection
  that holds the lock's owner lock. Other clients then count the run as lost and,
  after the grace period, as dead: they would clear its lock and hand the board on
  while the job still uses it. The watch sleeps on the connection's socket, sees
  the drop at once, reconnects with back-off and takes the owner lock back well
  within the grace period.
* **Notice a loss.** If the lock is taken away anyway (``sem -signal -f``, or
  cleared after an outage longer than the grace period), the job must stop, as
  the file engine's ``lockwatch`` stops a job whose lock file was broken. The
  watch looks at the lock on every queue notification (a release or a
  force-release sends one), after every reconnect and every ``CHECK_INTERVAL``
  seconds, and calls ``on_lost`` once with what it found.

It runs in its own thread and uses the engine's connection alone: the caller
starts it once the lock is taken and stops it before it uses the engine again.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import psycopg

from mq.engine.core.errors import LockDirError

from . import session
from .link import LOST_PAST_GRACE, Link, PlaceLost
from .rows import lock_from_json

CHECK_INTERVAL = 5.0  # seconds between two looks at the lock with no notification


@dataclass(frozen=True)
class RunLockLoss:
    """The job's lock is gone: ``taken_by`` holds the board now (None: nobody); ``why`` in words."""

    board: str
    taken_by: Optional[str]
    why: str


class _Stopped(Exception):
    """``stop()`` was called while the watch was reconnecting."""


class RunLockWatch:
    """Watches the lock ``user`` holds on ``board`` with ``key`` (grant ``grant``; None: a lock
    taken before the job, ``run -n``) through ``link``; see the module's text."""

    def __init__(self, link: Link, board: str, key: str, user: str, grant: Optional[int],
                 on_lost: Callable[[RunLockLoss], None]) -> None:
        self.link = link
        self.board = board
        self.key = key
        self.user = user
        self.grant = grant
        self.on_lost = on_lost
        self.loss: Optional[RunLockLoss] = None
        self._stop_read, self._stop_write = os.pipe()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mq-runwatch-{board}", daemon=True)

    def start(self) -> RunLockWatch:
        self._thread.start()
        return self

    def stop(self) -> Optional[RunLockLoss]:
        """End the watch (at once, even in the middle of reconnecting); the loss it found, if any."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._stop_write, b"x")
        self._thread.join()
        os.close(self._stop_read)
        os.close(self._stop_write)
        return self.loss

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._reconnecting(lambda _conn: self.link.listen())
            beat_at = time.monotonic() + session.HEARTBEAT
            while not self._stopping.is_set() and self._still_ours():
                timeout = max(0.0, min(CHECK_INTERVAL, beat_at - time.monotonic()))
                ready, _, _ = select.select([self.link.conn.fileno(), self._stop_read], [], [], timeout)
                if self._stop_read in ready:
                    break
                if time.monotonic() >= beat_at:  # the others know this job lives; it knows its connection does
                    beat_at = time.monotonic() + session.HEARTBEAT
                    self._reconnecting(lambda _conn: self.link.beat())
                self._reconnecting(lambda _conn: self.link.received())  # drained: any notification means "look"
                # (a drop: the reconnect's ``_reclaim`` may have found the lock cleared; the look says)
        except _Stopped:
            pass
        except PlaceLost:  # cut off while the server stayed up: to the others this client died, and its lock went
            self._lost(None, "this client's connection to the queue database dropped while the server stayed up")
        except LockDirError as exc:  # the database refuses (not a dropped connection): the lock cannot be vouched for
            self._lost(None, f"the queue database could not be reached ({exc.detail})")
        except Exception as exc:  # a bug: say so; the job goes on, its lock no longer looked after
            self.link.tell(f"warning: the watch on the lock for {self.board} ended: {exc!r}")
        finally:
            with contextlib.suppress(psycopg.Error, LockDirError, _Stopped):
                self.link.unlisten()

    def _reconnecting(self, action: Callable[[Any], Any]) -> Any:
        """``action(conn)`` until it is done: a dropped connection is made again (re-claiming the
        lock's owner) in between, for as long as it takes."""
        return self.link.run(action, self._pause, patient=True)

    def _pause(self, seconds: float) -> None:
        ready, _, _ = select.select([self._stop_read], [], [], seconds)
        if ready or self._stopping.is_set():
            raise _Stopped()

    def _still_ours(self) -> bool:
        """Look at the lock: False (and ``on_lost`` told) when it is no longer the job's."""
        # (after a reconnect: that re-claimed, or lost, the owner)
        found = self._reconnecting(lambda conn: self.link.call(
            "mq_lock_of", self.board, conn=conn))
        if found["lock"] is None:
            self._lost(None, self._why_gone(found["last"]))
            return False
        lock = lock_from_json(found["lock"])
        ours = lock.user == self.user and lock.key == self.key and (self.grant is None or lock.grant == self.grant)
        if ours and self.grant is not None:
            ours = lock.session_owner is not None and lock.session_owner == self.link.owner
        if not ours:
            self._lost(lock.user, self._why_gone(found["last"]))
            return False
        return True

    def _why_gone(self, last: Optional[List[Any]]) -> str:
        """The audit log's last word on the end of the board's lock, in words."""
        if last is not None:
            event, user, reason = last
            if event == "force":
                return f"released by {user} with sem -signal -f"
            if event == "reclaim" and reason == "expired":
                return f"its -T timeout passed and {user} reclaimed it"
            if event == "reclaim" or reason == LOST_PAST_GRACE:
                return (f"this client was cut off from the queue database for longer than the grace period "
                        f"({self.link.grace:g} s)")
            if reason:
                return str(reason)
        return "the queue database no longer has it as this job's"

    def _lost(self, taken_by: Optional[str], why: str) -> None:
        if self.loss is None:
            self.loss = RunLockLoss(self.board, taken_by, why)
            self.on_lost(self.loss)


__all__ = ["CHECK_INTERVAL", "RunLockLoss", "RunLockWatch"]
