"""Looking at locks: who holds a board (with mq's grant record), board states, listings.

Also the bookkeeping of locks another tool took over: when ``lockfile -l``
broke a grant's lock or ``mq.sh -signal -f`` removed it, mq's grant record
no longer describes the lock at the path; the first look that notices closes
that grant in the audit log.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mq.engine.core import policy
from mq.engine.core.errors import BoardOfflineError, DiskError, LockDirError, not_held
from mq.engine.core.inventory import Inventory
from mq.engine.core.names import NO_KEY, check_key, valid_name
from mq.engine.core.results import BoardState, Holder, Offline, Ticket

from . import boardlock, forged, legacy_waiters, offline_marks
from .fsutil import os_error
from .grant_records import OWNER, STAT
from .labdir import LabDir
from .labpaths import LabPaths
from .queue import Queue

Record = Dict[str, Any]


def with_legacy(tickets: List[Ticket], legacy: List[legacy_waiters.LegacyWaiter]) -> List[Ticket]:
    """A board's waiters with mq.sh's among them, each before the first that came after it
    (as the engine serves them: ``legacy_waiters.Turns``)."""
    merged = list(tickets)
    for waiter in legacy:
        at = next((i for i, t in enumerate(merged) if t.tool == "mq" and t.created > waiter.arrived), len(merged))
        merged.insert(at, Ticket(name=f"mq.sh-{waiter.pid}", seq=0, uid=waiter.uid, user=waiter.user,
                                 pid=waiter.pid, host="", key=waiter.key, target=waiter.board, boards=(waiter.board,),
                                 created=waiter.since, tool="mq.sh"))
    return merged


class LockState:
    def __init__(self, lab: LabDir, inventory: Inventory, queue: Queue) -> None:
        self.lab = lab
        self.inventory = inventory
        self.queue = queue
        self.legacy = legacy_waiters.Scan(lab.base)  # mq.sh's waiters; kept: a process is read once

    def holder(self, board: str) -> Optional[Holder]:
        """The board's holder, with its grant number, pool and ``run`` session from mq's record."""
        holder = boardlock.read_holder(self.lab.base, board)
        record = self._record(board, holder)
        if record is not None and not same_lock(record, holder):
            self.notice_taken_over(board, "info", holder, record)
            record = None
        if holder is None or record is None:
            return holder
        grant = record.get("grant")
        session = ("live" if self.lab.sessions.alive(board) else "dead") if record.get("session") else ""
        return Holder(**{**holder.__dict__, "grant": grant if isinstance(grant, int) else None,
                         "pool": str(record.get("pool", "")), "session": session})

    def info(self, name: str) -> List[BoardState]:
        """Each board's holder and live waiters. What of mq's state this user cannot read (a
        ``.mq`` made private before the directory was shared) is left out and named in
        ``BoardState.unread``: the locks themselves are still shown."""
        boards = self.inventory.members(name)
        self.lab.check(writable=False)
        unread = Unread.probe(self.lab)
        waiting: List[Ticket] = []
        if unread.queue is None:
            try:
                waiting = policy.annotate([t for t in policy.order(self.queue.tickets(), self.inventory)
                                           if self.queue.is_alive(t)], self.inventory, time.time())
            except LockDirError as exc:  # denied after all (ACLs, a change since the probe)
                unread = Unread((exc.path, exc.detail), unread.records)
        legacy = self.legacy.waiters(boards)
        states = []
        for board in boards:
            holder = self.holder(board)
            queued = with_legacy([t for t in waiting if board in t.boards], [w for w in legacy if w.board == board])
            states.append(BoardState(board, holder, tuple(queued), unread.notice(), self.offline(board, holder)))
        return states

    def dumpall(self, order: str = "inventory") -> List[BoardState]:
        """Every held board. ``order="directory"``: as mq.sh lists them, every ``*.lock``
        in the lock directory (systems not in the inventory too) in directory order."""
        self.lab.check(writable=False)
        boards = list(self.inventory.systems) if order != "directory" else self._locks_in_directory_order()
        notice = Unread(None, Unread.probe(self.lab).records).notice()  # dumpall shows no waiters
        states = []
        for board in boards:
            holder = self.holder(board)
            if holder is not None:
                states.append(BoardState(board, holder, unread=notice, offline=self.offline(board, holder)))
        return states

    def offline(self, board: str, holder: Optional[Holder]) -> Optional[Offline]:
        """Whether ``board`` is out of service (``mq offline``), and if ``holder`` is its maintenance lock."""
        mark = offline_marks.read(self.lab, board)
        return None if mark is None else mark.offline(holder)

    def _locks_in_directory_order(self) -> List[str]:
        try:
            with os.scandir(self.lab.base) as entries:
                names = [e.name[:-len(".lock")] for e in entries if e.name.endswith(".lock")]
        except OSError as exc:
            raise os_error(exc, self.lab.base, "list lock directory") from None
        return [n for n in names if valid_name(n)]

    def check_held(self, name: str, key: Optional[str] = NO_KEY, boards: Optional[Sequence[str]] = None) -> str:
        """For ``run -n``: the board (or first pool member) the caller holds with ``key``.

        ``boards`` narrows a pool to the members that suit the job.
        """
        members = self.inventory.members(name)
        boards = members if boards is None else [b for b in members if b in set(boards)]
        if key is not None:
            check_key(key)
        self.lab.check(writable=False)
        if not self.inventory.is_pool(name):
            mark = offline_marks.read(self.lab, name)
            if mark is not None:
                raise BoardOfflineError(name, mark.reason, mark.user, mark.since)
        for board in boards:
            if offline_marks.exists(self.lab, board):
                continue  # a pool's offline member: skipped, as a wait skips it
            holder = boardlock.read_holder(self.lab.base, board)
            if holder is not None and holder.kind == "file" and holder.uid == self.lab.uid \
                    and key in (None, holder.shown_key):
                return board
        raise not_held(name, key)

    # -- grant records ---------------------------------------------------------------
    def record_for(self, holder: Holder) -> Optional[Record]:
        """mq's grant record for the lock ``holder`` was read from (None: not one mq made)."""
        record = self._record(holder.board, holder)
        return record if record and same_lock(record, holder) else None

    def _record(self, board: str, holder: Optional[Holder]) -> Optional[Record]:
        """The board's grant record, unless it is forged: a record for the lock at the path
        (same file) written by another user than the lock's owner, set aside (``forged``)."""
        record = self.lab.records.read(board)
        if record is not None and holder is not None and same_file(record, holder) \
                and record[OWNER] != holder.uid:
            forged.set_aside(self.lab, self.lab.records.path(board), record[STAT], "grant-record",
                             f"the grant record of {holder.user}'s lock, written by {record['user']}")
            return None
        return record

    def dead_session(self, holder: Holder) -> bool:
        """A ``run`` lock whose holding process has died: its session flock is free, on the
        very session file the grant recorded (one put in its place proves nothing)."""
        record = self.record_for(holder)
        if not (record and record.get("session")):
            return False
        recorded = record.get("session_file")
        if recorded is not None and list(recorded) != self.lab.sessions.identity(holder.board):
            return False  # replaced or gone: its holder may well be alive
        return not self.lab.sessions.alive(holder.board)

    # -- locks taken over by another tool ------------------------------------------
    def notice_taken_over(self, board: str, noticed: str, holder: Optional[Holder] = None,
                          record: Optional[Record] = None) -> None:
        """If mq's grant record for ``board`` no longer describes its lock (``lockfile -l``
        broke it, ``mq.sh -signal -f`` removed it), close that grant in the audit log.

        Call without the mutex; it is taken only when the record looks stale. Best
        effort: in a directory this user cannot change, nothing happens.
        """
        try:
            if record is None:
                holder = boardlock.read_holder(self.lab.base, board)
                record = self._record(board, holder)
                if record is None:
                    return
            if same_lock(record, holder):
                return
            with self.lab.mutex():
                self.close_taken_over(board, boardlock.read_holder(self.lab.base, board), noticed)
        except (LockDirError, DiskError, OSError):
            return

    def close_taken_over(self, board: str, holder: Optional[Holder], noticed: str) -> None:
        """Mutex held, ``holder`` read under it: record and drop a stale grant record (once:
        the record is dropped first, and nothing is written if it cannot be)."""
        record = self._record(board, holder)
        if record is None or same_lock(record, holder):
            return
        try:
            os.unlink(self.lab.records.path(board))
        except OSError:
            return  # gone (someone else closed it) or not ours to drop: no second record
        since = record.get("time")
        held = round(time.time() - since, 3) if isinstance(since, (int, float)) else None
        self.lab.audit.record("taken-over", board=board, grant=record.get("grant"), holder=record.get("user"),
                              holder_key=record.get("key"), pool=record.get("pool", ""),
                              taken_by=holder.user if holder is not None else None, noticed=noticed, held=held)


Denied = Tuple[str, str]  # (the directory that cannot be read, why)


@dataclass(frozen=True)
class Unread:
    """The parts of mq's state in the lock directory this user cannot read: the queue
    (waiters) and the grant records (grant numbers, pools, ``run`` sessions)."""

    queue: Optional[Denied]
    records: Optional[Denied]

    @classmethod
    def probe(cls, lab: LabPaths) -> Unread:
        return cls(_denied(lab, lab.queue_dir, os.R_OK | os.X_OK), _denied(lab, lab.holders_dir, os.X_OK))

    def notice(self) -> str:
        """One line for the user ('' when everything could be read)."""
        parts = [(what, shown, denied) for what, shown, denied in (
            ("the queue", "waiters", self.queue), ("the grant records", "grant numbers", self.records)) if denied]
        if not parts:
            return ""
        missing = " and ".join(shown for _, shown, _ in parts)
        if len({denied for _, _, denied in parts}) == 1:
            path, why = parts[0][2]
            return f"cannot read {' and '.join(w for w, _, _ in parts)} in {path} ({why}): {missing} not shown"
        places = " and ".join(f"{what} in {denied[0]} ({denied[1]})" for what, _, denied in parts)
        return f"cannot read {places}: {missing} not shown"


def _denied(lab: LabPaths, path: str, mode: int) -> Optional[Denied]:
    """The first directory from ``.mq`` down to ``path`` this user may not read as ``mode``
    asks of ``path`` (search only for ``.mq`` itself), with why; None when it can, or when
    it is not there (nothing was ever queued or granted)."""
    for directory, needed in ((lab.state, os.X_OK), (path, mode)):
        try:
            os.stat(directory)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return directory, _why(exc.errno)
        if not os.access(directory, needed):
            return directory, _why(errno.EACCES)
    return None


def _why(number: Optional[int]) -> str:
    text = os.strerror(number or errno.EIO)
    return text[:1].lower() + text[1:]


def same_file(record: Record, holder: Optional[Holder]) -> bool:
    """The grant record names the lock file ``holder`` was read from (whoever wrote it)."""
    return holder is not None and (record.get("ino"), record.get("dev"), record.get("mtime_ns")) == \
        (holder.ino, holder.dev, holder.since_ns)


def same_lock(record: Record, holder: Optional[Holder]) -> bool:
    """The grant record describes the lock ``holder`` now at the path, and was written by its owner."""
    return same_file(record, holder) and holder is not None and record.get(OWNER) == holder.uid


__all__ = ["LockState", "Unread", "same_lock"]
