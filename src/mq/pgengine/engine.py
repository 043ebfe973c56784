"""The PostgreSQL lock engine: one queue and one set of locks in a database, for labs whose
boards hang off several hosts (an ``interface.LockEngine``, held to the same conformance suite
as the file engine).

``PgEngine`` is a facade over parts with one job each: ``link`` (the connection, the
owner's liveness lock, reconnecting), ``taking`` (a look and a grant, one transaction),
``waiting`` (sleeping on LISTEN/NOTIFY), ``releasing``, ``offline``, and ``rows`` (a
consistent snapshot for listings). It never prints: a reconnect is told through
``on_reconnect``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

from mq.engine.core import policy
from mq.engine.core.errors import BadInputError, BoardOfflineError, LockDirError, NotAcquiredError, not_held
from mq.engine.core.health import Failure
from mq.engine.core.inventory import Inventory
from mq.engine.core.names import NO_KEY, check_key, user_name
from mq.engine.core.results import Grant, Offline, Released
from mq.engine.core.signals import GUARD
from mq.engine.core.waits import Hooks

from . import audit, health, offline, schema
from .link import Link, where
from .listings import Listings
from .releasing import Releaser
from .rows import Snapshot, snapshot_from_json
from .runwatch import RunLockLoss, RunLockWatch
from .taking import Request, Taker
from .waiting import Waiter

CONNECTIONS = """
    SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
           (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
           (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mq'),
           (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),
           (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user)"""
GRACE = 30.0  # seconds a lost owner (dropped connection, server restart) keeps its tickets and run locks,
# unless the inventory's ``[queue] grace`` says otherwise
GIVE_UP = 60.0  # seconds a command other than a wait (and a running job's lock) tries to reconnect


class PgEngine(Listings):
    """Lock operations on the queue in one PostgreSQL database, with one inventory."""

    def __init__(self, conninfo: str, inventory: Inventory, user: Optional[str] = None,
                 grace: Optional[float] = None, on_reconnect: Optional[Callable[[str], None]] = None,
                 give_up: float = GIVE_UP, conn: Any = None, hello: Optional[Dict[str, Any]] = None) -> None:
        import os

        self.inventory = inventory
        self.user = user or user_name(os.getuid())
        if grace is None:
            grace = GRACE if inventory.queue.grace is None else inventory.queue.grace
        self.link = Link(conninfo, self.user, grace, on_reconnect, give_up, conn)
        self.hello = hello  # what the server said to the connection ``conn`` (the CLI's first)
        self.taker = Taker(self.link, self.user, inventory)
        self.releases = Releaser(self.link, self.user, inventory)
        self._checked = False

    def close(self) -> None:
        """Close the connection: this engine's waits and ``run`` locks lose their owner."""
        self.link.close()

    def __enter__(self) -> PgEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _conn(self) -> None:
        """The server's hello checked once (through ``Link.run``, so it rides out a restart): the
        schema serves this client, and who the server takes it for (its role, where each member
        has one). Every call after it goes through ``Link.run`` as well."""
        if not self._checked:
            hello = self.hello or self.link.run(lambda conn: self.link.call("mq_hello", self.user, conn=conn))
            schema.check_hello(hello, where(self.link.conninfo))
            self.user = self.link.user = self.taker.user = self.releases.user = str(hello["user"])
            self._checked = True

    def _snapshot(self) -> Snapshot:
        self._conn()
        data = self.link.run(lambda conn: self.link.call("mq_snapshot", self.user, self.link.grace, conn=conn))
        return snapshot_from_json(data)

    # -- taking ---------------------------------------------------------------------------
    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
             extra_fds: Sequence[int] = (), on_extra: Optional[Callable[[int], None]] = None,
             on_tick: Optional[Callable[[], Optional[float]]] = None, session: bool = False,
             boards: Optional[Sequence[str]] = None,
             on_progress: Optional[Callable[[int, int], None]] = None, priority: Optional[int] = None) -> Grant:
        boards = self.inventory.narrowed(name, boards)
        check_key(key)
        self._conn()
        try:
            rank = policy.check_priority(self.inventory.queue.priority_for(self.user, key, priority))
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        requested = priority is not None  # (a priority the lab configured is the server's to check)
        started = time.monotonic()
        deadline = None if budget is None else started + max(0.0, budget)
        request = Request(name=name, key=key, timeout=timeout, session=session, started=started)
        hooks = Hooks(extra_fds, on_extra, on_tick, on_progress)
        with GUARD.deferred():  # signals are taken at the waiter's safe points only
            first = self.taker.take(request, boards, rank, requested, once=deadline is not None and budget == 0)
            if first.grant is not None:
                return first.grant
            assert first.me is not None and first.snapshot is not None
            if first.timed_out:  # where it stood, for the caller's give-up line
                if on_progress is not None:
                    outlook = self.taker.outlook(first.snapshot, first.me)
                    on_progress(outlook.position, outlook.total)
                raise NotAcquiredError(name)
            waiter = Waiter(self.link, self.taker, first.me, request, deadline, hooks)
            granted = False
            try:
                grant = waiter.run(first)
                granted = True
                return grant
            finally:
                if not granted and not waiter.left:
                    self._leave(first.seq)
                self.link.unlisten()

    def _leave(self, seq: int) -> None:
        """After a wait that did not get its board, however it ended: its ticket leaves the queue
        (and a grant made for it meanwhile is given back); with the connection gone, its owner is
        lost and what it had goes with it."""
        if not self.link.broken():
            with contextlib.suppress(Exception):  # best effort, as the file engine's unlink is
                self.taker.leave(seq)

    def connections(self) -> Dict[str, int]:
        """The server's connection budget: ``max_connections``, ``reserved`` (superusers'), ``in_use``
        (client backends), ``by_mq`` (application_name mq), ``role_limit`` (-1: none), ``role_in_use``,
        and ``room``: how many more waiting clients (2 connections each) fit."""
        row = self.link.run(lambda conn: conn.execute(CONNECTIONS).fetchone())
        budget = dict(zip(("max_connections", "reserved", "in_use", "by_mq", "role_limit", "role_in_use"),
                          (int(v) for v in row), strict=True))
        free = budget["max_connections"] - budget["reserved"] - budget["in_use"]
        if budget["role_limit"] >= 0:
            free = min(free, budget["role_limit"] - budget["role_in_use"])
        budget["room"] = max(0, free) // 2
        return budget

    def cancel(self, name: str, key: str = NO_KEY, force: bool = False) -> int:
        self.inventory.members(name)
        check_key(key)

        self._conn()
        return int(self.link.run(lambda conn: self.link.call("mq_cancel", self.user, name, key, force,
                                                             self.link.grace, conn=conn)))

    def confirm(self, board: str, grant: int) -> bool:
        """The client has reported grant ``grant``: the lock no longer goes with its connection
        (a ``run`` lock stays bound). Until then a client killed right after the grant commits
        leaves no lock held by nobody: it goes with the client's session."""
        self._conn()
        return bool(self.link.run(lambda conn: self.link.call("mq_confirm", self.link.owner, board, grant,
                                                              conn=conn)))

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        self._conn()
        return self.releases.undo_grant(board, key, grant, reason)

    def check_held(self, name: str, key: Optional[str] = NO_KEY, boards: Optional[Sequence[str]] = None) -> str:
        members = self.inventory.members(name)
        wanted = members if boards is None else [b for b in members if b in set(boards)]
        if key is not None:
            check_key(key)
        snap = self._snapshot()
        if not self.inventory.is_pool(name) and name in snap.offline:
            mark = snap.offline[name]
            raise BoardOfflineError(name, mark.reason, mark.user, mark.since)
        for board in wanted:
            lock = snap.locks.get(board)
            if board in snap.offline or lock is None or lock.maintenance:
                continue
            if lock.user == self.user and key in (None, lock.key):
                return board
        raise not_held(name, key)

    # -- releasing ------------------------------------------------------------------------
    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        """A release rides out a restart (``Link.run``, up to ``give_up``); one that still cannot
        get through says that the lock may still be held."""
        try:
            self._conn()
            return self.releases.signal(name, key, force)
        except LockDirError as exc:
            raise LockDirError(exc.path, f"{exc.detail}; the lock for {name} may still be held: release it "
                                         "again once the database is back") from None

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        self._conn()
        return self.releases.end_session_lock(board, key, reason)

    def watch_run_lock(self, board: str, key: str, grant: Optional[int],
                       on_lost: Callable[[RunLockLoss], None]) -> RunLockWatch:
        """Start watching this engine's lock on ``board`` while a job runs elsewhere (``runwatch``):
        kept alive through reconnects, ``on_lost`` told (from the watch's thread) if it goes.
        Nothing else may use this engine until ``stop()``."""
        self._conn()
        return RunLockWatch(self.link, board, key, self.user, grant, on_lost).start()

    # -- looking (``Listings``) ---------------------------------------------------------------
    def _read_events(self, since: Optional[float], names: Optional[Collection[str]]) -> List[Dict[str, Any]]:
        self._conn()
        found: List[Dict[str, Any]] = self.link.run(lambda conn: audit.read(conn, since, names))
        return found

    def note_health(self, board: str, failure: Optional[Failure]) -> Tuple[int, Optional[Offline]]:
        """A ``run``'s verdict on ``board`` (``mq.engine.core.health``): counted in ``mq_health``; at the
        system's ``health_limit`` the board is taken offline with the row's reason."""
        self._conn()
        count, full = health.note(self.link, self.user, self.inventory, board, failure)
        if full is None:
            return count, None
        return count, offline.set_offline(self.link, self.user, self.inventory, board, full.reason(),
                                          by_health=self.inventory.systems[board].health_limit)

    def set_offline(self, board: str, reason: str) -> Offline:
        self._conn()
        return offline.set_offline(self.link, self.user, self.inventory, board, reason)

    def set_online(self, board: str) -> Optional[Offline]:
        self._conn()
        return offline.set_online(self.link, self.user, self.inventory, board)


__all__ = ["GIVE_UP", "GRACE", "PgEngine"]
