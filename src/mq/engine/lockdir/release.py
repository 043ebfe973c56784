"""Releasing locks: ``sem -signal`` (with ``-f``), a grant given back, a ``run`` job's lock.

A lock is removed only after re-checking it is the one read (device, inode,
owner, mtime: ``boardlock.remove_checked``), under the mutex; its key and
grant record go with it, and the release is written to the audit log.
"""

from __future__ import annotations

import contextlib
import time
from typing import List, Optional

from mq.engine.core.errors import BoardOfflineError, DiskError, LockDirError, NotHolderError
from mq.engine.core.inventory import Inventory
from mq.engine.core.names import NO_KEY, check_key
from mq.engine.core.results import Holder, Released
from mq.engine.core.signals import GUARD

from . import boardlock, maintenance, offline_marks
from .fsutil import os_error
from .labdir import LabDir
from .lockstate import LockState


class Releaser:
    def __init__(self, lab: LabDir, inventory: Inventory, state: LockState) -> None:
        self.lab = lab
        self.inventory = inventory
        self.state = state

    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        """Release ``name`` (a board), or the caller's locks in a pool (all with ``force``)."""
        boards = self.inventory.members(name)
        check_key(key)
        self.lab.check(writable=True)
        for board in boards:
            self.state.notice_taken_over(board, "signal")
        if not self.inventory.is_pool(name):
            return [self._release_one(name, key, force)]
        released: List[Released] = []
        for board in boards:
            holder = boardlock.read_holder(self.lab.base, board)
            if holder is None or self._maintenance(holder) is not None:
                continue
            if force or (holder.uid == self.lab.uid and holder.shown_key == key):
                released.append(self._release_one(board, key, force))
        if not released:
            raise NotHolderError(name, f"You hold no lock in pool {name} with key '{key}'")
        return released

    def _release_one(self, board: str, key: str, force: bool) -> Released:
        holder = boardlock.read_holder(self.lab.base, board)
        if holder is None:
            raise NotHolderError(board, f"Lock for {board} is not held; nothing released")
        mark = self._maintenance(holder)
        if mark is not None:  # only `mq online` ends it (old tools can, as they can any lock)
            raise BoardOfflineError(board, mark.reason, mark.user, mark.since)
        if not force:
            if holder.uid != self.lab.uid:
                raise NotHolderError(board, f"Lock for {board} is held by {holder.user}, not {self.lab.user}; "
                                            "nothing released (use -f to force)", NotHolderError.NOT_HELD)
            if holder.shown_key != key:
                raise NotHolderError(board, f"Lock for {board} is held with a different key; nothing released",
                                     NotHolderError.WRONG_KEY)
        with GUARD.deferred():
            self.remove(holder, key, forced=force, reason="")
        GUARD.raise_pending()
        return Released(board=board, holder=holder, forced=force)

    def _maintenance(self, holder: Holder) -> Optional[offline_marks.Mark]:
        """The board's offline mark, if ``holder`` is its maintenance lock."""
        mark = offline_marks.read(self.lab, holder.board)
        return mark if mark is not None and mark.holds(holder) else None

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        """Give back a grant the caller could not report (a signal raced it, the client went)."""
        holder = self.state.holder(board)
        if holder is None or holder.grant != grant or holder.uid != self.lab.uid:
            return False
        with GUARD.deferred():
            self.remove(holder, key, forced=False, reason=reason)
        self.lab.sessions.end(board)
        return True

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        """Release a lock this process took for a ``run`` (if it is still ours: the very file
        its grant made, not one another tool put there since with the same owner and key file)."""
        holder = boardlock.read_holder(self.lab.base, board)
        if holder is None or holder.uid != self.lab.uid or holder.shown_key != key \
                or self.state.record_for(holder) is None:
            self.lab.sessions.end(board)
            self._log_gone(board, key, reason)
            return False
        with GUARD.deferred():
            self.remove(holder, key, forced=False, reason=reason)
        return True

    def _log_gone(self, board: str, key: str, reason: str) -> None:
        """A ``run``'s lock was already gone (broken, reclaimed): logged under the mutex, so
        after whatever took it and before any later grant."""
        with contextlib.suppress(LockDirError, DiskError), self.lab.mutex():  # best effort, as the log is
            self.lab.audit.record("release", board=board, key=key, reason=reason, outcome="gone")

    def remove(self, holder: Holder, key: str, forced: bool, reason: str) -> None:
        """Remove exactly the lock ``holder`` describes, with its key and grant record; on a
        board taken offline meanwhile, the maintenance lock takes its place at once."""
        base = self.lab.base
        path = boardlock.lock_path(base, holder.board)
        with self.lab.mutex():
            record = self.state.record_for(holder)
            mark = offline_marks.read(self.lab, holder.board)
            placed = None
            try:
                if mark is None:
                    removed = boardlock.remove_checked(base, holder)
                else:
                    removed, placed = boardlock.replace_checked(base, holder, 0)
            except PermissionError:
                raise LockDirError(path, "permission denied removing the lock") from None
            except OSError as exc:
                raise os_error(exc, path, "remove lock") from None
            if not removed:
                self.lab.audit.record("force" if forced else "release", board=holder.board, key=key,
                                      holder=holder.user, outcome="changed")
                raise NotHolderError(holder.board, f"Lock for {holder.board} changed while releasing; "
                                                   "nothing removed", NotHolderError.CHANGED)
            boardlock.drop_key(base, holder.board, holder.key)
            if record is not None:
                self.lab.records.drop(holder.board)
            self.lab.sessions.end(holder.board)
            # Logged before the mutex goes: the next grant is logged after this release.
            held = round(time.time() - holder.since_ns / 1e9, 3)
            self.lab.audit.record("force" if forced else "release", board=holder.board, key=key,
                                  holder=holder.user, holder_key=holder.key, held=held,
                                  grant=record.get("grant") if record else None,
                                  pool=record.get("pool", "") if record else "", reason=reason or None,
                                  outcome="released")
            if mark is not None:
                maintenance.after_release(self.lab, holder.board, mark, placed)


__all__ = ["Releaser"]
