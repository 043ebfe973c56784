"""The lock engine: fair waits for boards and pools, releases, cancels, state.

Everything here runs on the lab host with only the standard library. The
CLI (locally) or the JSON-lines agent (over SSH) calls it and renders the
result objects it returns; it never prints.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import boardlock, legacy, notify
from .boardlock import NO_KEY, Holder
from .doorbell import Doorbell
from .errors import (
    AlreadyHeldError,
    BadInputError,
    DiskError,
    EngineError,
    LockDirError,
    NotHolderError,
)
from .fsutil import os_error
from .inventory import Inventory
from .labdir import LabDir
from .names import check_key, valid_name
from .queue import OwnTicket, Queue, Ticket, walk_queue
from .signals import GUARD
from .waiter import Hooks, Waiter


@dataclass(frozen=True)
class Grant:
    board: str
    target: str
    key: str
    timeout: int
    grant: int
    waited: float
    reclaimed_from: str = ""


@dataclass(frozen=True)
class Released:
    board: str
    holder: Holder
    forced: bool


@dataclass(frozen=True)
class BoardState:
    board: str
    holder: Optional[Holder]
    waiters: Tuple[Ticket, ...] = field(default=())


@dataclass(frozen=True)
class Request:
    """What one wait asks for."""

    name: str
    key: str
    timeout: int
    session: bool
    started: float


class Engine:
    """Lock operations on one lock directory with one inventory."""

    def __init__(self, base: str, inventory: Inventory) -> None:
        self.lab = LabDir(base)
        self.inventory = inventory
        self.queue = Queue(self.lab)
        self._watcher: notify.InotifyWatcher | notify.PollWatcher | None = None
        self._doorbell: Optional[Doorbell] = None
        self._sessions: Dict[str, int] = {}  # board -> fd holding its session flock

    # -- waiting -------------------------------------------------------------
    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
             extra_fds: Sequence[int] = (), on_extra: Optional[Callable[[int], None]] = None,
             on_tick: Optional[Callable[[], Optional[float]]] = None, session: bool = False,
             boards: Optional[Sequence[str]] = None) -> Grant:
        """Take a board (or the first free pool member) in first-come, first-served order.

        ``budget`` is the total wait in seconds (None: forever, 0: one try).
        ``extra_fds`` are watched while waiting; ``on_extra(fd)`` may raise to
        abandon the wait (the agent uses it for client EOF and abort).
        ``on_tick()`` runs before every sleep, may raise, and returns the longest
        sleep it allows (the agent's keepalive), or None.
        ``session``: the lock belongs to this process (``run``): it is released
        when the process ends, and counts as dead if the process dies.
        ``boards`` narrows a pool to the members that suit the job.
        """
        members = self.inventory.members(name)
        if boards is None:
            boards = members
        elif not boards or not set(boards) <= set(members):
            raise BadInputError(f"no suitable board in {name}")
        check_key(key)
        self.lab.ensure()
        if not self.inventory.is_pool(name):
            held = boardlock.read_holder(self.lab.base, name)
            if held is not None and held.kind == "file" and held.uid == self.lab.uid \
                    and key in (NO_KEY, held.key) and not held.expired(time.time()) \
                    and not self._dead_session(held):
                raise AlreadyHeldError(name, held.shown_key, key)
        started = time.monotonic()
        deadline = None if budget is None else started + max(0.0, budget)
        with GUARD.deferred():  # signals are taken at the waiter's safe points only
            return self._wait_deferred(name, boards, key, timeout, session, started, deadline,
                                       Hooks(extra_fds, on_extra, on_tick))

    def _wait_deferred(self, name: str, boards: Sequence[str], key: str, timeout: int, session: bool,
                       started: float, deadline: Optional[float], hooks: Hooks) -> Grant:
        with self.lab.mutex():
            own = self.queue.enqueue(name, boards, key)
        try:

            request = Request(name=name, key=key, timeout=timeout, session=session, started=started)

            def take(alive: Optional[Callable[[Ticket], bool]]) -> Optional[Grant]:
                return self._try(own, request, alive)

            return Waiter(self, own, take, deadline, hooks).run(started)
        finally:
            own.close()

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
        """Free, past its ``-T`` timeout, or held by a ``run`` whose process died."""
        if boardlock.availability(self.lab.base, board, time.time())[0]:
            return True
        holder = boardlock.read_holder(self.lab.base, board) if self.lab.has_session_file(board) else None
        return holder is not None and self._dead_session(holder)

    def clear_dead(self, ticket: Ticket) -> None:
        if self.queue.clear_dead(ticket):
            self.lab.audit("dead-waiter", target=ticket.target, key=ticket.key, waiter=ticket.user,
                           pid=ticket.pid)

    def _walk(self, own: OwnTicket, alive: Optional[Callable[[Ticket], bool]] = None) -> Optional[str]:
        choice, dead = walk_queue(self.queue.tickets(), own.ticket.name, self.available,
                                  alive or self.queue.is_alive, self.lab.base)
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
        self._close_taken_over(board, holder, "wait")  # before this grant's meta replaces it
        reclaimed = ""
        if holder is not None:
            dead = self._dead_session(holder)
            if not dead and not holder.expired(time.time()):
                return None
            self._reclaim(holder, "dead-session" if dead else "expired")
            reclaimed = holder.user
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
                self._sessions[board] = self.lab.hold_session(board)
            number = self.lab.next_number("grants")
            self.lab.write_holder_meta(board, {"grant": number, "dev": st.st_dev, "ino": st.st_ino,
                                               "mtime_ns": st.st_mtime_ns, "user": self.lab.user,
                                               "key": request.key, "pool": pool, "pid": os.getpid(),
                                               "session": request.session, "time": time.time()})
        except (OSError, EngineError) as exc:
            self._undo_create(board, st, request.key)
            if isinstance(exc, EngineError):
                raise
            raise os_error(exc, boardlock.key_path(base, board), "store key") from None
        own.close()
        waited = round(time.monotonic() - request.started, 3)
        self.lab.audit("grant", board=board, pool=pool, key=request.key, grant=number, timeout=request.timeout,
                       waited=waited, session=request.session or None)
        return Grant(board=board, target=request.name, key=request.key, timeout=request.timeout, grant=number,
                     waited=waited, reclaimed_from=reclaimed)

    def _undo_create(self, board: str, st: os.stat_result, key: str) -> None:
        mine = boardlock.read_holder(self.lab.base, board)
        if mine is not None and mine.same_file(st):
            boardlock.remove_checked(self.lab.base, mine)
        boardlock.drop_key(self.lab.base, board, key)
        self._end_session(board)

    def _end_session(self, board: str) -> None:
        fd = self._sessions.pop(board, None)
        if fd is not None:
            os.close(fd)

    def _dead_session(self, holder: Holder) -> bool:
        """A ``run`` lock whose holding process has died (its session flock is free)."""
        meta = self._meta_for(holder)
        return bool(meta and meta.get("session")) and not self.lab.session_alive(holder.board)

    def _reclaim(self, holder: Holder, why: str) -> None:
        meta = self._meta_for(holder)
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
            self.lab.drop_holder_meta(holder.board)
            self.lab.audit("reclaim", reason=why, board=holder.board, previous_user=holder.user,
                           previous_key=holder.key, grant=meta.get("grant") if meta else None,
                           timeout=holder.timeout, age=round(time.time() - holder.since_ns / 1e9, 3))

    def _release_own(self, grant: Grant, reason: str = "interrupted") -> None:
        holder = boardlock.read_holder(self.lab.base, grant.board)
        if holder is not None and holder.uid == self.lab.uid:
            self._remove(holder, grant.key, forced=False, reason=reason)
        self._end_session(grant.board)

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        """Give back a grant the caller could not report (a signal raced it, the client went)."""
        holder = self.holder(board)
        if holder is None or holder.grant != grant or holder.uid != self.lab.uid:
            return False
        with GUARD.deferred():
            self._remove(holder, key, forced=False, reason=reason)
        self._end_session(board)
        return True

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        """Release a lock this process took for a ``run`` (if it is still ours)."""
        holder = boardlock.read_holder(self.lab.base, board)
        if holder is None or holder.uid != self.lab.uid or holder.shown_key != key:
            self._end_session(board)
            self.lab.audit("release", board=board, key=key, reason=reason, outcome="gone")
            return False
        with GUARD.deferred():
            self._remove(holder, key, forced=False, reason=reason)
        return True

    def check_held(self, name: str, key: str = NO_KEY, boards: Optional[Sequence[str]] = None) -> str:
        """For ``run -n``: the board (or first pool member) the caller holds with ``key``.

        ``boards`` narrows a pool to the members that suit the job.
        """
        members = self.inventory.members(name)
        boards = members if boards is None else [b for b in members if b in set(boards)]
        check_key(key)
        self.lab.check(writable=False)
        for board in boards:
            holder = boardlock.read_holder(self.lab.base, board)
            if holder is not None and holder.kind == "file" and holder.uid == self.lab.uid \
                    and holder.shown_key == key:
                return board
        raise NotHolderError(name, f"You do not hold {name} with key '{key}' (run -n needs the lock first: "
                                   f"mq sem -wait {name} -k KEY)")

    # -- releasing -----------------------------------------------------------------
    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        """Release ``name`` (a board), or the caller's locks in a pool (all with ``force``)."""
        boards = self.inventory.members(name)
        check_key(key)
        self.lab.check(writable=True)
        for board in boards:
            self._notice_taken_over(board, "signal")
        if not self.inventory.is_pool(name):
            return [self._release_one(name, key, force)]
        released: List[Released] = []
        for board in boards:
            holder = boardlock.read_holder(self.lab.base, board)
            if holder is None:
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
        if not force:
            if holder.uid != self.lab.uid:
                raise NotHolderError(board, f"Lock for {board} is held by {holder.user}, not {self.lab.user}; "
                                            "nothing released (use -f to force)", NotHolderError.NOT_HELD)
            if holder.shown_key != key:
                raise NotHolderError(board, f"Lock for {board} is held with a different key; nothing released",
                                     NotHolderError.WRONG_KEY)
        with GUARD.deferred():
            self._remove(holder, key, forced=force, reason="")
        GUARD.raise_pending()
        return Released(board=board, holder=holder, forced=force)

    def _remove(self, holder: Holder, key: str, forced: bool, reason: str) -> None:
        base = self.lab.base
        path = boardlock.lock_path(base, holder.board)
        with self.lab.mutex():
            meta = self._meta_for(holder)
            try:
                removed = boardlock.remove_checked(base, holder)
            except PermissionError:
                raise LockDirError(path, "permission denied removing the lock") from None
            except OSError as exc:
                raise os_error(exc, path, "remove lock") from None
            if not removed:
                self.lab.audit("force" if forced else "release", board=holder.board, key=key,
                               holder=holder.user, outcome="changed")
                raise NotHolderError(holder.board, f"Lock for {holder.board} changed while releasing; "
                                                   "nothing removed", NotHolderError.CHANGED)
            boardlock.drop_key(base, holder.board, holder.key)
            if meta is not None:
                self.lab.drop_holder_meta(holder.board)
            self._end_session(holder.board)
        held = round(time.time() - holder.since_ns / 1e9, 3)
        self.lab.audit("force" if forced else "release", board=holder.board, key=key, holder=holder.user,
                       holder_key=holder.key, held=held, grant=meta.get("grant") if meta else None,
                       pool=meta.get("pool", "") if meta else "", reason=reason or None, outcome="released")

    def _meta_for(self, holder: Holder) -> Optional[Dict[str, object]]:
        meta = self.lab.read_holder_meta(holder.board)
        if meta and (meta.get("ino"), meta.get("dev"), meta.get("mtime_ns")) == \
                (holder.ino, holder.dev, holder.since_ns):
            return meta
        return None

    # -- looking -------------------------------------------------------------------
    def holder(self, board: str) -> Optional[Holder]:
        holder = boardlock.read_holder(self.lab.base, board)
        meta = self.lab.read_holder_meta(board)
        if meta is not None and not _same_lock(meta, holder):
            self._notice_taken_over(board, "info", holder, meta)
            meta = None
        if holder is None or meta is None:
            return holder
        grant = meta.get("grant")
        session = ("live" if self.lab.session_alive(board) else "dead") if meta.get("session") else ""
        return Holder(**{**holder.__dict__, "grant": grant if isinstance(grant, int) else None,
                         "pool": str(meta.get("pool", "")), "session": session})

    def info(self, name: str) -> List[BoardState]:
        boards = self.inventory.members(name)
        self.lab.check(writable=False)
        waiting = [t for t in self.queue.tickets() if self.queue.is_alive(t)]
        return [BoardState(board, self.holder(board), tuple(t for t in waiting if board in t.boards))
                for board in boards]

    def dumpall(self, order: str = "inventory") -> List[BoardState]:
        """Every held board. ``order="directory"``: as mq.sh lists them, every ``*.lock``
        in the lock directory (systems not in the inventory too) in directory order."""
        self.lab.check(writable=False)
        boards = list(self.inventory.systems) if order != "directory" else self._locks_in_directory_order()
        states = [BoardState(b, self.holder(b)) for b in boards]
        return [s for s in states if s.holder is not None]

    def _locks_in_directory_order(self) -> List[str]:
        try:
            with os.scandir(self.lab.base) as entries:
                names = [e.name[:-len(".lock")] for e in entries if e.name.endswith(".lock")]
        except OSError as exc:
            raise os_error(exc, self.lab.base, "list lock directory") from None
        return [n for n in names if valid_name(n)]

    def cancel(self, name: str, key: str = NO_KEY) -> int:
        """Ask the caller's waits for ``name`` with ``key`` to end (each exits 2), and end the
        caller's ``mq.sh`` waiters for it on this host (see ``legacy``)."""
        boards = self.inventory.members(name)
        check_key(key)
        self.lab.ensure()
        count = 0
        for ticket in self.queue.tickets():
            if ticket.uid != self.lab.uid or ticket.key != key:
                continue
            if name != ticket.target and name not in ticket.boards:
                continue
            if self.queue.is_alive(ticket):
                self.queue.request_cancel(ticket)
                count += 1
        return count + legacy.end_waiters(self.lab.base, boards, key)

    # -- locks taken over by another tool ------------------------------------------
    def _notice_taken_over(self, board: str, noticed: str, holder: Optional[Holder] = None,
                           meta: Optional[Dict[str, object]] = None) -> None:
        """If mq's grant record for ``board`` no longer describes its lock (``lockfile -l``
        broke it, ``mq.sh -signal -f`` removed it), close that grant in the audit log.

        Call without the mutex; it is taken only when the record looks stale. Best
        effort: in a directory this user cannot change, nothing happens.
        """
        try:
            if meta is None:
                meta = self.lab.read_holder_meta(board)
                if meta is None:
                    return
                holder = boardlock.read_holder(self.lab.base, board)
            if _same_lock(meta, holder):
                return
            with self.lab.mutex():
                self._close_taken_over(board, boardlock.read_holder(self.lab.base, board), noticed)
        except (LockDirError, DiskError, OSError):
            return

    def _close_taken_over(self, board: str, holder: Optional[Holder], noticed: str) -> None:
        """Mutex held, ``holder`` read under it: record and drop a stale grant record (once:
        the record is dropped first, and nothing is written if it cannot be)."""
        meta = self.lab.read_holder_meta(board)
        if meta is None or _same_lock(meta, holder):
            return
        try:
            os.unlink(self.lab.holder_path(board))
        except OSError:
            return  # gone (someone else closed it) or not ours to drop: no second record
        since = meta.get("time")
        held = round(time.time() - since, 3) if isinstance(since, (int, float)) else None
        self.lab.audit("taken-over", board=board, grant=meta.get("grant"), holder=meta.get("user"),
                       holder_key=meta.get("key"), pool=meta.get("pool", ""),
                       taken_by=holder.user if holder is not None else None, noticed=noticed, held=held)


def _same_lock(meta: Dict[str, object], holder: Optional[Holder]) -> bool:
    """The grant record ``meta`` describes the lock ``holder`` now at the path."""
    return holder is not None and (meta.get("ino"), meta.get("dev"), meta.get("mtime_ns")) == \
        (holder.ino, holder.dev, holder.since_ns)


__all__ = ["BoardState", "DiskError", "Engine", "Grant", "Released"]
