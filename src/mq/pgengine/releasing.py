"""Releasing locks: ``sem -signal`` (with ``-f``), a grant given back, a ``run`` job's lock.

Each release is one transaction under the mutex: the lock row is read, checked
and deleted together (so it is always exactly the lock that was checked), the
release is logged, and a ``free BOARD`` notification wakes the waiters at commit.
On a board taken offline meanwhile the maintenance lock takes its place at once.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from mq.engine.errors import BoardOfflineError, NotHolderError
from mq.engine.inventory import Inventory
from mq.engine.names import NO_KEY, check_key
from mq.engine.results import Released

from . import audit
from .link import Link
from .rows import LockRow, Snapshot, read_snapshot
from .taking import place_maintenance


class Releaser:
    def __init__(self, link: Link, user: str, inventory: Inventory) -> None:
        self.link = link
        self.user = user
        self.inventory = inventory

    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        """Release ``name`` (a board), or the caller's locks in a pool (all with ``force``)."""
        boards = self.inventory.members(name)
        check_key(key)

        tried: Dict[str, Released] = {}  # what an earlier try was about to release (its COMMIT's reply lost?)

        def release(conn: Any) -> List[Released]:
            with self.link.mutex(conn):
                snap = read_snapshot(conn, self.link.grace)
                done = self._done_before(conn, snap, tried)
                if done:
                    return done  # an earlier try committed; a restart swallowed its reply
                if not self.inventory.is_pool(name):
                    return [self._release_one(conn, snap, name, key, force, tried)]
                released = []
                for board in boards:
                    lock = snap.locks.get(board)
                    if lock is None or lock.maintenance:
                        continue
                    if force or (lock.user == self.user and lock.key == key):
                        released.append(self._release_one(conn, snap, board, key, force, tried))
                if not released:
                    raise NotHolderError(name, f"You hold no lock in pool {name} with key '{key}'")
                return released

        result: List[Released] = self.link.run(release)
        return result

    def _done_before(self, conn: Any, snap: Snapshot, tried: Dict[str, Released]) -> List[Released]:
        """What an earlier try of this release removed, if it committed (its grants are gone from
        the locks and their release is in the audit log, by this user)."""
        done = []
        for board, released in tried.items():
            grant = released.holder.grant
            lock = snap.locks.get(board)
            if grant is None or (lock is not None and lock.grant == grant):
                return []
            row = conn.execute("SELECT 1 FROM mq_audit WHERE board = %s AND username = %s AND event IN "
                               "('release', 'force') AND fields->>'grant' = %s LIMIT 1",
                               (board, self.user, str(grant))).fetchone()
            if row is None:
                return []
            done.append(released)
        return done

    def _release_one(self, conn: Any, snap: Snapshot, board: str, key: str, force: bool,
                     tried: Optional[Dict[str, Released]] = None) -> Released:
        lock = snap.locks.get(board)
        if lock is None:
            raise NotHolderError(board, f"Lock for {board} is not held; nothing released")
        mark = snap.offline.get(board)
        if lock.maintenance and mark is not None:  # only `mq online` ends it
            raise BoardOfflineError(board, mark.reason, mark.user, mark.since)
        if not force:
            if lock.user != self.user:
                raise NotHolderError(board, f"Lock for {board} is held by {lock.user}, not {self.user}; "
                                            "nothing released (use -f to force)", NotHolderError.NOT_HELD)
            if lock.key != key:
                raise NotHolderError(board, f"Lock for {board} is held with a different key; nothing released",
                                     NotHolderError.WRONG_KEY)
        released = Released(board=board, holder=lock.holder(), forced=force)
        if tried is not None:
            tried[board] = released
        self.remove(conn, snap, lock, key, forced=force, reason="")
        return released

    def remove(self, conn: Any, snap: Snapshot, lock: LockRow, key: str, forced: bool, reason: str) -> None:
        """Mutex held: remove the lock, logged; the maintenance lock in its place on an offline board."""
        conn.execute("DELETE FROM mq_locks WHERE board = %s", (lock.board,))
        audit.record(conn, self.user, "force" if forced else "release", board=lock.board, key=key,
                     holder=lock.user, holder_key=lock.key, held=round(snap.now - lock.since_ns / 1e9, 3),
                     grant=lock.grant, pool=lock.pool, reason=reason or None, outcome="released")
        mark = snap.offline.get(lock.board)
        if mark is None:
            self.link.notify(conn, f"free {lock.board}")
            return
        snap.locks[lock.board] = place_maintenance(conn, lock.board, mark.reason, mark.user)
        audit.record(conn, self.user, "maintenance-lock", board=lock.board, reason=mark.reason, offline_by=mark.user,
                     after="release")

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        """Give back a grant the caller could not report (a signal raced it, the client went)."""

        def undo(conn: Any) -> bool:
            with self.link.mutex(conn):
                snap = read_snapshot(conn, self.link.grace)
                lock = snap.locks.get(board)
                if lock is None or lock.grant != grant or lock.user != self.user:
                    return False
                self.remove(conn, snap, lock, key, forced=False, reason=reason)
                return True

        return bool(self.link.run(undo))

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        """Release the lock this engine's ``run`` wait took, if it is still that one (taken by this
        engine's owner with this key), else log that it was gone."""

        def end(conn: Any) -> bool:
            with self.link.mutex(conn):
                snap = read_snapshot(conn, self.link.grace)
                lock: Optional[LockRow] = snap.locks.get(board)
                if lock is None or lock.user != self.user or lock.key != key or not lock.session \
                        or self.link.owner is None or lock.session_owner != self.link.owner:
                    audit.record(conn, self.user, "release", board=board, key=key, reason=reason, outcome="gone")
                    return False
                self.remove(conn, snap, lock, key, forced=False, reason=reason)
                return True

        return bool(self.link.run(end))


__all__ = ["Releaser"]
