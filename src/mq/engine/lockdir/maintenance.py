"""Boards out of service: ``mq offline BOARD --reason TEXT`` and ``mq online BOARD``.

An offline board has a mark (``offline_marks``: why, by whom, since when) and,
whenever nothing else holds it, a *maintenance lock*: an ordinary lock file
(``O_CREAT|O_EXCL``, content ``0``, key ``offline: REASON``) so ``lockfile(1)``
and ``mq.sh`` cannot take it and their ``-info`` shows why. To ``mq`` the mark
is what counts: pools skip the board, a new wait for it alone fails at once
(``BoardOfflineError``), ``run`` refuses it, while a waiter already queued for it
keeps its place until the board is back.

A board held when it goes offline keeps its holder; the holder's release puts
the maintenance lock in its place (``release``), and so does a waiter that
finds the holder's lock past its ``-T`` or its ``run`` dead, or the lock gone
(``settle``): the board is never handed to a waiter while it is offline.
``mq online`` removes the maintenance lock (only that very file) and the mark;
the lock's removal wakes the waiters as a release does.

Everything happens under the lab mutex and is written to the audit log
(``offline``, ``online``, ``maintenance-lock``, and ``reclaim`` with
``maintenance`` for a lock the maintenance lock replaced).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Optional

from mq.engine.core.arguments import KEY_PREFIX, MAX_REASON, check_reason
from mq.engine.core.errors import BadInputError, LockDirError
from mq.engine.core.results import Holder, Offline
from mq.engine.core.signals import GUARD

from . import boardlock, health_rows, offline_marks
from .fsutil import os_error
from .offline_marks import Mark

if TYPE_CHECKING:
    from mq.engine.core.inventory import Inventory

    from .labdir import LabDir
    from .lockstate import LockState

def lock_key(reason: str) -> str:
    """The maintenance lock's key: what ``-info`` of ``mq`` and ``mq.sh`` shows with the lock."""
    return KEY_PREFIX + reason


def _board(inventory: Inventory, name: str, verb: str) -> str:
    """``name`` as a board of the inventory (UnknownTargetError; a pool is refused)."""
    members = inventory.members(name)
    if inventory.is_pool(name):
        raise BadInputError(f"mq {verb} takes a board, not a pool: {name} is a pool of {' '.join(members)}")
    return name


def set_offline(lab: LabDir, inventory: Inventory, state: LockState, board: str, reason: str) -> Offline:
    """Take ``board`` out of service (see the module); again on an offline board: a new reason."""
    _board(inventory, board, "offline")
    reason = check_reason(reason)
    lab.ensure()
    with GUARD.deferred(), lab.mutex():
        previous = offline_marks.read(lab, board)
        holder = boardlock.read_holder(lab.base, board)
        state.close_taken_over(board, holder, "offline")
        since = previous.since if previous is not None else round(time.time(), 3)
        renew = holder is not None and previous is not None and previous.holds(holder)
        # a mark names only a lock of its writer's (``offline_marks.read``): another's is renewed below
        kept = previous.lock if renew and previous and holder is not None and holder.uid == lab.uid else None
        mark = Mark(reason=reason, user=lab.user, since=since, lock=kept)
        offline_marks.write(lab, board, mark)  # from here on: new waits refused, pools skip it
        if renew and holder is not None:
            mark = _renew(lab, mark, holder)
        else:
            mark = settle(lab, state, board, audited=False) or mark
        current = boardlock.read_holder(lab.base, board)
        lab.audit.record("offline", board=board, reason=reason, since=since,
                         state="locked" if mark.holds(current) else "pending",
                         holder=None if current is None or mark.holds(current) else current.user,
                         previous_reason=previous.reason if previous is not None else None,
                         previous_user=previous.user if previous is not None else None)
    GUARD.raise_pending()
    return mark.offline(current)


def _renew(lab: LabDir, mark: Mark, holder: Holder) -> Mark:
    """Offline again: the maintenance lock gets the new reason as its key (and becomes this user's,
    as a key file counts only with a lock of the same owner)."""
    if holder.uid == lab.uid:
        try:
            boardlock.write_key(lab.base, holder.board, lock_key(mark.reason), lab.read_mode)
        except OSError as exc:
            raise os_error(exc, boardlock.key_path(lab.base, holder.board), "store the new reason") from None
        return mark
    try:
        _removed, st = boardlock.replace_checked(lab.base, holder, 0)
    except OSError as exc:
        raise os_error(exc, boardlock.lock_path(lab.base, holder.board), "renew the maintenance lock") from None
    return mark if st is None else _adopt(lab, holder.board, mark, st)


def settle(lab: LabDir, state: LockState, board: str, audited: bool = True) -> Optional[Mark]:
    """Mutex held: if ``board`` is offline and its lock is missing, past its ``-T``, or a dead
    ``run``'s, put the maintenance lock in its place (``audited``: a ``maintenance-lock`` record
    says so). The mark (with the lock) when it is in place now or was already, else None (not
    offline, or someone else holds the board)."""
    mark = offline_marks.read(lab, board)
    if mark is None:
        return None
    holder = boardlock.read_holder(lab.base, board)
    if mark.holds(holder):
        return mark
    base = lab.base
    if holder is None:
        try:
            st = boardlock.try_create(base, board, 0)
        except OSError as exc:
            raise os_error(exc, boardlock.lock_path(base, board), "create the maintenance lock") from None
        return None if st is None else _adopt(lab, board, mark, st, "restored" if audited else "")
    dead = state.dead_session(holder)
    if holder.kind != "file" or not (dead or holder.expired(time.time())):
        return None
    record = state.record_for(holder)
    why = "dead-session" if dead else "expired"
    try:
        removed, st = boardlock.replace_checked(base, holder, 0)
    except PermissionError:
        raise LockDirError(boardlock.lock_path(base, board), f"permission denied replacing the lock of "
                                                             f"{holder.user} (is the lock directory sticky?)") from None
    except OSError as exc:
        raise os_error(exc, boardlock.lock_path(base, board), "replace the lock") from None
    if removed:
        boardlock.drop_key(base, board, holder.key)
        if record is not None:
            lab.records.drop(board)
        lab.audit.record("reclaim", reason=why, board=board, previous_user=holder.user,
                         previous_key=holder.key, grant=record.get("grant") if record else None,
                         timeout=holder.timeout, age=round(time.time() - holder.since_ns / 1e9, 3),
                         maintenance=True)
    return None if st is None else _adopt(lab, board, mark, st, why if audited else "")


def after_release(lab: LabDir, board: str, mark: Mark, st: Optional[os.stat_result]) -> None:
    """Mutex held: a holder's release swapped its lock for the maintenance lock ``st`` (None: another
    tool took the board in between, and it stays theirs)."""
    if st is not None:
        _adopt(lab, board, mark, st, "release")


def _adopt(lab: LabDir, board: str, mark: Mark, st: os.stat_result, after: str = "") -> Mark:
    """The maintenance lock ``st`` is in place: its key, and its identity in the mark; ``after``
    (what it replaced: ``release``, ``expired``, ``dead-session``, ``restored``), if given, is audited."""
    placed = Mark(reason=mark.reason, user=mark.user, since=mark.since,
                  lock=(st.st_dev, st.st_ino, st.st_uid, st.st_mtime_ns))
    with contextlib.suppress(OSError):  # without it the lock stops other tools all the same
        boardlock.write_key(lab.base, board, lock_key(mark.reason), lab.read_mode)
    offline_marks.write(lab, board, placed)
    if after:
        lab.audit.record("maintenance-lock", board=board, reason=mark.reason, offline_by=mark.user, after=after)
    return placed


def set_online(lab: LabDir, inventory: Inventory, board: str) -> Optional[Offline]:
    """Put ``board`` back in service: its maintenance lock (that very file) and its mark go; what
    it was offline for, or None when it was not (nothing changes)."""
    _board(inventory, board, "online")
    lab.ensure()
    with GUARD.deferred(), lab.mutex():
        was = _online(lab, board)
        health_rows.reset(lab, board)  # its row of board failures (health_limit) starts again
    GUARD.raise_pending()
    return was


def _online(lab: LabDir, board: str) -> Optional[Offline]:
    """Mutex held: the maintenance lock first (if it fails, nothing has changed), then the mark.
    A waiter woken by the lock's removal finds the board offline a moment longer, so it watches
    the mark and is woken again by its removal."""
    mark = offline_marks.read(lab, board)
    if mark is None:
        return None
    holder = boardlock.read_holder(lab.base, board)
    locked = mark.holds(holder)
    if holder is not None and locked:
        path = boardlock.lock_path(lab.base, board)
        try:
            boardlock.remove_checked(lab.base, holder)
        except PermissionError:
            raise LockDirError(path, f"permission denied removing the maintenance lock of {holder.user} "
                                     "(is the lock directory sticky?)") from None
        except OSError as exc:
            raise os_error(exc, path, "remove the maintenance lock") from None
        boardlock.drop_key(lab.base, board, holder.key)
    offline_marks.drop(lab, board)
    lab.audit.record("online", board=board, reason=mark.reason, offline_by=mark.user, offline_since=mark.since,
                     offline_for=round(time.time() - mark.since, 3),
                     holder=None if holder is None or locked else holder.user)
    return mark.offline(holder)


__all__ = ["KEY_PREFIX", "MAX_REASON", "after_release", "check_reason", "lock_key", "set_offline", "set_online",
           "settle"]
