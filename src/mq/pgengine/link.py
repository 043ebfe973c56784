"""One engine's connection to the database: its owner id and liveness lock, the calls of the
queue's functions (``queue.sql``), LISTEN, and reconnecting with back-off when the connection
drops or the server restarts.

The *owner* is an id the engine picks (``Link.owner``), registered on the server by its
first wait (``mq_take``): the session advisory lock (``OWNER_CLASS``, owner id) its
connection holds for as long as it lives (the server drops it when the connection dies).
After a reconnect the engine takes that same lock again and re-binds the owner to the new
session (``mq_reclaim_owner``), which keeps its tickets and ``run`` locks unless the
connection dropped while the server stayed up, or it was lost for longer than the grace
period: then they are gone.

Every step is one call (``Link.call``): a function of the server's that takes the queue
mutex itself, so no transaction of mq's ever waits on the client. A call that finds the
mutex held past the session's ``lock_timeout`` is tried again, saying who holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import psycopg

from mq.engine.core.errors import (
    AlreadyHeldError,
    BoardOfflineError,
    EngineError,
    ExitCode,
    LockDirError,
    NotHolderError,
)

from . import session
from .rows import MUTEX, OWNER_CLASS
from .session import transient

CHANNEL = "mq_queue"
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
STILL_TRYING = 60.0  # seconds between two "still trying" of a patient reconnect
LOST_PAST_GRACE = "connection lost past the grace period"  # the audit reason of a run lock cleared so
RECLAIM_TRIES = 50  # tries to take the owner lock back (a stale backend may still hold it for a moment)
REFUSALS = ("42883", "42501")  # undefined_function, insufficient_privilege: said as mq's refusals
STUCK_MUTEX = 15.0  # seconds one backend may keep the queue lock (mq's transactions take milliseconds)
MUTEX_HOLDER = f"""
    SELECT a.pid, coalesce(a.usename, '?') || '@' || coalesce(host(a.client_addr), 'local'),
           extract(epoch FROM coalesce(a.xact_start, a.backend_start))::float8
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {MUTEX[0]} AND l.objid = {MUTEX[1]}
      AND l.objsubid = 2 LIMIT 1"""  # noqa: S608


Pause = Callable[[float], None]

class PlaceLost(EngineError):
    """This client's connection dropped while the server stayed up: to the others it died, so its
    place in the queue and its ``run`` locks are gone (as with a dropped SSH session)."""

    exit_code = ExitCode.SSH
    wire_fields = ("message",)

    def __init__(self, database: str, why: str = "") -> None:
        super().__init__(f"the connection to the {database} dropped while the server stayed up: this client "
                         "counts as gone, and its place in the queue and its run locks were let go" if not why
                         else f"the {database}: {why}")


class OwnerTaken(Exception):
    """The owner id this engine drew is another client's (a new one is drawn)."""


DROPPED = (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout)


def dropped(exc: BaseException, link: Link) -> bool:
    """The connection is gone: dropped, or ended by the server (a session kept idle inside its
    transaction, e.g. a client stopped there, is ended by ``idle_in_transaction_session_timeout``:
    an InternalError, not an OperationalError)."""
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        link.drop()
        return True
    return link.broken()


class CannotConnect(LockDirError):
    """No connection for now (the server is starting, stopping or away): worth trying again.
    A refusal that will not change (a password, a database that does not exist) is a plain
    ``LockDirError``, said at once."""


FULL = ("the server has no connection left (max_connections, or the role's CONNECTION LIMIT, is used up; each "
        "waiting mq client uses at most 2): raise max_connections in postgresql.conf")


def where(conninfo: str) -> str:
    """The database a conninfo names, for messages (never its password)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "postgresql database"
    host = str(params.get("host") or "localhost")
    return f"postgresql database {params.get('dbname') or params.get('user') or ''} on {host}".strip()


class Link:
    """The connection (autocommit; transactions are explicit) and what is bound to it."""

    def __init__(self, conninfo: str, user: str, grace: float,
                 on_reconnect: Optional[Callable[[str], None]] = None, give_up: float = 60.0,
                 conn: Optional[psycopg.Connection[Any]] = None) -> None:
        self.conninfo = conninfo
        self.user = user
        self.grace = grace
        self.on_reconnect = on_reconnect
        self.give_up = give_up  # seconds of failed reconnects after which an operation fails
        self.owner = new_owner_id()  # registered by the first wait (mq_take); see ``registered``
        self.registered = False  # the server may know the owner (a call that registers it was sent)
        self.listening = False
        self._conn: Optional[psycopg.Connection[Any]] = conn  # a connection made already (the CLI's first)

    # -- the connection -------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._open()
        return self._conn

    def _open(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(session.conninfo(self.conninfo), autocommit=True)
        except psycopg.OperationalError as exc:
            error = CannotConnect if transient(exc) else LockDirError
            full = any(words in str(exc) for words in ("too many connections", "connection slots are reserved"))
            why = FULL if full else _first_line(exc)
            raise error(where(self.conninfo), f"cannot connect ({why})") from None
        try:
            if self.registered:
                self._reclaim(conn)
            if self.listening:
                conn.execute(f"LISTEN {CHANNEL}")
        except DROPPED as exc:  # dropped again at once (a server still recovering): try again, as for a connect
            conn.close()
            raise CannotConnect(where(self.conninfo), f"cannot connect ({_first_line(exc)})") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def broken(self) -> bool:
        return self._conn is None or self._conn.closed or self._conn.broken

    def drop(self) -> None:
        """Forget a connection found broken (the next use reconnects)."""
        self.close()

    def reconnect(self, why: BaseException, pause: Pause, deadline: Optional[float] = None,
                  patient: bool = False) -> None:
        """Connect again with back-off (``pause`` sleeps, watching what the caller watches), telling
        ``on_reconnect``; ``LockDirError`` once ``give_up`` seconds (or ``deadline``) pass without
        success. ``patient`` (a wait, a running job's lock: they keep their place only by coming
        back): until ``deadline`` (None: for as long as it takes), saying so every ``STILL_TRYING`` s."""
        self.drop()
        started = time.monotonic()
        delay = BACKOFF_FIRST
        said = started
        self.tell(f"lost the database connection ({_first_line(why)}); reconnecting")
        while True:
            try:
                self.conn  # noqa: B018 - connects (and re-claims the owner)
            except CannotConnect as exc:
                now = time.monotonic()
                limit = deadline if patient else started + self.give_up if deadline is None \
                    else min(deadline, started + self.give_up)
                if limit is not None and now + delay > limit:
                    self.tell(f"could not reconnect: {exc.detail}")
                    raise
                if now - said >= STILL_TRYING:
                    said = now
                    self.tell(f"no database for {now - started:.0f} s ({exc.detail}); still trying")
                pause(delay)
                delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, self.grace / 4), delay * 2)  # tries well within the grace
                continue
            self.tell(f"reconnected after {time.monotonic() - started:.1f} s")
            return

    def tell(self, message: str) -> None:
        """Say ``message`` to the user (through ``on_reconnect``), if anyone listens."""
        if self.on_reconnect is not None:
            self.on_reconnect(message)

    def run(self, operation: Callable[[psycopg.Connection[Any]], Any], pause: Pause = time.sleep,
            patient: bool = False) -> Any:
        """``operation(conn)``; when the connection is found dropped, again after reconnecting (see
        ``reconnect``): once, or (``patient``) until it is done. Any other failure: ``LockDirError``."""
        retried = False
        while True:
            try:
                return operation(self.conn)
            except CannotConnect as exc:  # no server yet (restarting, failing over): tried up to give_up
                if retried and not patient:
                    raise
                self.reconnect(exc, pause, patient=patient)
                retried = True
            except DROPPED as exc:
                if not dropped(exc, self) or (retried and not patient):
                    raise LockDirError(where(self.conninfo), _first_line(exc)) from None
                self.reconnect(exc, pause, patient=patient)
                retried = True

    def call(self, function: str, *args: Any, conn: Optional[psycopg.Connection[Any]] = None) -> Any:
        """``SELECT function(args)`` (one transaction on the server), its value. The queue mutex
        the function takes is waited for in rounds of the session's ``lock_timeout``: after the
        first, the user is told who holds it; a session that keeps it longer than
        ``STUCK_MUTEX`` is ended (audited). Errors of mq's (``MQ...``) become engine errors."""
        conn = conn or self.conn
        query = f"SELECT {function}({', '.join(['%s'] * len(args))})"
        started = time.monotonic()
        said = False
        while True:
            try:
                row = conn.execute(query, args).fetchone()
                return None if row is None else row[0]
            except psycopg.errors.LockNotAvailable:
                holder = conn.execute(MUTEX_HOLDER).fetchone()
                if holder is None:
                    continue
                if not said:
                    said = True
                    self.tell(f"the queue is locked by pid {holder[0]} ({holder[1]}, since "
                              f"{time.strftime('%H:%M:%S', time.localtime(holder[2]))}); waiting")
                if time.monotonic() - started > STUCK_MUTEX:
                    conn.execute("SELECT mq_end_stuck(%s, %s, %s)", (self.user, holder[0], STUCK_MUTEX))
            except psycopg.Error as exc:
                if exc.sqlstate == "MQ005":
                    raise OwnerTaken() from None
                if exc.sqlstate is None or not (exc.sqlstate.startswith("MQ") or exc.sqlstate in REFUSALS):
                    raise
                raise self.refusal(exc) from None

    def refusal(self, exc: psycopg.Error) -> EngineError:
        """An error of mq's functions (or the server's refusal of a right) as the engine's."""
        message = exc.diag.message_primary or str(exc)
        detail: Dict[str, Any] = {}
        with contextlib.suppress(ValueError, TypeError):
            detail = json.loads(exc.diag.message_detail or "{}")
        if exc.sqlstate == "MQ001":
            return NotHolderError(str(detail.get("board", "")), message,
                                  NotHolderError.WRONG_KEY if detail.get("kind") == "wrong-key"
                                  else NotHolderError.NOT_HELD)
        if exc.sqlstate == "MQ002":
            return BoardOfflineError(str(detail["board"]), str(detail["reason"]), str(detail["user"]),
                                     float(detail["since"]))
        if exc.sqlstate == "MQ006":
            return AlreadyHeldError(str(detail["board"]), str(detail["held_key"]), str(detail["asked_key"]))
        if exc.sqlstate == "42883":  # undefined_function: a schema from before the functions
            return LockDirError(where(self.conninfo), "the database's mq schema is older than this mq: "
                                                      "run mq admin init")
        if exc.sqlstate == "42501":  # insufficient_privilege: a role the lab has not let in
            role = self._role()
            return LockDirError(where(self.conninfo), f"the database role {role} may not use this queue: ask an "
                                                      f"admin to run mq admin grant-user {role}")
        return LockDirError(where(self.conninfo), message)

    def _role(self) -> str:
        with contextlib.suppress(psycopg.Error):
            row = self.conn.execute("SELECT session_user").fetchone()
            if row is not None:
                return str(row[0])
        return "?"

    def notify(self, conn: psycopg.Connection[Any], payload: str) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    def listen(self) -> None:
        """LISTEN on the queue's channel, now and on every connection made from here on (so a
        connection that drops before its LISTEN is answered listens again once remade)."""
        if not self.listening:
            self.listening = True
            self.conn.execute(f"LISTEN {CHANNEL}")

    def unlisten(self) -> None:
        if self.listening:
            self.listening = False
            if not self.broken():
                with contextlib.suppress(psycopg.Error):
                    self.conn.execute(f"UNLISTEN {CHANNEL}")
                    list(self.conn.notifies(timeout=0))  # drop what came before the UNLISTEN

    def received(self) -> List[str]:
        """The payloads that came (without waiting); OperationalError when the connection dropped.

        Two places: psycopg's (what came during a query, and what the socket has now) and
        libpq's buffer, which ``notifies()`` does not read unless the socket has more: a
        notification that came in the same read as the reply to the last query (a grant made
        right after this client's look) would wait there, unseen, until the next one came."""
        conn = self.conn
        payloads = [n.payload for n in conn.notifies(timeout=0) if n.channel == CHANNEL]
        encoding = conn.info.encoding
        while (buffered := conn.pgconn.notifies()) is not None:
            if buffered.relname.decode(encoding, "replace") == CHANNEL:
                payloads.append(buffered.extra.decode(encoding, "replace"))
        return payloads

    def beat(self) -> None:
        """Tell the server this client lives (its row of ``mq_beats``), and so find out that the
        connection does: with no reply in ``BEAT_TIMEOUT`` the connection is shut, and the
        OperationalError raised says so (the caller reconnects)."""
        if not self.registered:
            return
        conn = self.conn
        with _Deadline(conn, session.BEAT_TIMEOUT) as deadline:
            try:
                conn.execute("SELECT mq_beat(%s)", (self.owner,))
            except psycopg.OperationalError:
                if deadline.passed:
                    raise psycopg.OperationalError(f"no reply from the server in {session.BEAT_TIMEOUT:g} s") from None
                raise

    # -- the owner ---------------------------------------------------------------------------
    def _reclaim(self, conn: psycopg.Connection[Any]) -> None:
        """Take the owner's liveness lock back on a new connection (ending this engine's own stale
        backend if it still holds it), and re-bind the owner to it (``mq_reclaim_owner``)."""
        stale = False  # this engine's own earlier backend still held it: nobody could find it dead
        for _ in range(RECLAIM_TRIES):
            if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (OWNER_CLASS, self.owner)).fetchone()[0]:  # type: ignore[index]
                break
            stale = True
            conn.execute("SELECT pg_terminate_backend(mq_stale_backend(%s))", (self.owner,))
            time.sleep(0.05)
        else:
            raise LockDirError(where(self.conninfo), "cannot take this engine's liveness lock back")
        outcome = self.call("mq_reclaim_owner", self.owner, self.user, self.grace, stale, conn=conn)
        if outcome == "none":  # cleared as dead meanwhile: a wait finds its ticket gone
            self.registered = False
        elif outcome == "died":
            raise PlaceLost(where(self.conninfo))


def new_owner_id() -> int:
    """A random owner id (the server refuses one that is taken, ``MQ005``: a new one is drawn)."""
    return secrets.randbelow(2**31 - 2) + 1


class _Deadline:
    """Shuts ``conn``'s socket if the statement run inside is not done in ``seconds`` (a reply
    that never comes: a link stalled above TCP, where no keepalive can see it)."""

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self.fd = conn.fileno()
        self.passed = False
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._shut)
        self._timer.daemon = True

    def _shut(self) -> None:
        with self._lock:
            if self._done:
                return
            self.passed = True
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self.fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns: "connection closed"

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["CHANNEL", "LOST_PAST_GRACE", "Link", "Pause", "where"]
