"""One engine's connection to the database: its owner id and liveness lock, the mutex,
LISTEN, and reconnecting with back-off when the connection drops or the server restarts.

The *owner* is registered the first time the engine queues a ticket or takes a
``run`` lock: an id from ``mq_owner_ids`` whose session advisory lock this
connection holds for as long as it lives (the server drops it when the connection
dies). After a reconnect the engine takes that same lock again and so re-claims its
tickets and ``run`` locks, unless another look found it gone for longer than the grace
period: then they are dead, and what is left of them is cleared here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import psycopg

from mq.engine.errors import EngineError, ExitCode, LockDirError

from . import audit, session
from .rows import MUTEX, OWNER_CLASS, incarnation

CHANNEL = "mq_queue"
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
STILL_TRYING = 60.0  # seconds between two "still trying" of a patient reconnect
LOST_PAST_GRACE = "connection lost past the grace period"  # the audit reason of a run lock cleared so
RECLAIM_TRIES = 50  # tries to take the owner lock back (a stale backend may still hold it for a moment)
REGISTER = ("INSERT INTO mq_owners (id, username, pid, host, backend_pid, server_start, incarnation) "
            "VALUES (%s, %s, %s, %s, pg_backend_pid(), %s, %s)")
STUCK_MUTEX = 15.0  # seconds one backend may keep the queue lock (mq's transactions take milliseconds)
MUTEX_HOLDER = f"""
    SELECT a.pid, coalesce(a.usename, '?') || '@' || coalesce(host(a.client_addr), 'local'),
           extract(epoch FROM coalesce(a.xact_start, a.backend_start))::float8
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {MUTEX[0]} AND l.objid = {MUTEX[1]}
      AND l.objsubid = 2 LIMIT 1"""  # noqa: S608

BEAT = ("INSERT INTO mq_beats (owner, seen_at) VALUES (%s, clock_timestamp()) "
        "ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at")

Pause = Callable[[float], None]

# This engine's own earlier backend, if it still holds the owner lock (a connection dropped on
# the client's side that the server has not noticed yet).
TERMINATE_STALE = f"""
    SELECT pg_terminate_backend(o.backend_pid) FROM mq_owners o
    WHERE o.id = %s AND o.backend_pid <> pg_backend_pid() AND EXISTS (
        SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = {OWNER_CLASS}
        AND l.objsubid = 2 AND l.objid::bigint = o.id AND l.pid = o.backend_pid)"""  # noqa: S608


class PlaceLost(EngineError):
    """This client's connection dropped while the server stayed up: to the others it died, so its
    place in the queue and its ``run`` locks are gone (as with a dropped SSH session)."""

    exit_code = ExitCode.SSH
    wire_fields = ("message",)

    def __init__(self, database: str, why: str = "") -> None:
        super().__init__(f"the connection to the {database} dropped while the server stayed up: this client "
                         "counts as gone, and its place in the queue and its run locks were let go" if not why
                         else f"the {database}: {why}")


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


_FINAL = ("password authentication failed", "does not exist", "no pg_hba.conf entry", "permission denied",
          "invalid", "SSL", "certificate")
FULL = ("the server has no connection left (max_connections, or the role's CONNECTION LIMIT, is used up; each "
        "waiting mq client uses at most 2): raise max_connections in postgresql.conf")


def transient(exc: BaseException) -> bool:
    """A connection failure that a restart or failover explains (try again), not a refusal."""
    text = str(exc)
    return not any(word in text for word in _FINAL)


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
                 on_reconnect: Optional[Callable[[str], None]] = None, give_up: float = 60.0) -> None:
        self.conninfo = conninfo
        self.user = user
        self.grace = grace
        self.on_reconnect = on_reconnect
        self.give_up = give_up  # seconds of failed reconnects after which an operation fails
        self.owner: Optional[int] = None
        self.server_start: Any = None  # (start time, incarnation) of the server the owner registered with
        self.listening = False
        self._conn: Optional[psycopg.Connection[Any]] = None

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
            if self.owner is not None:
                self._reclaim(conn, self.owner)
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

    @contextlib.contextmanager
    def mutex(self, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
        """A transaction holding the queue mutex (walks, grants and releases one at a time).

        The mutex is waited for in rounds of the session's ``lock_timeout``: after the first,
        the user is told who holds it (a holder stopped inside its transaction loses it to
        ``idle_in_transaction_session_timeout`` within seconds; one stuck longer than
        ``STUCK_MUTEX`` is ended, audited)."""
        with conn.transaction():
            started = time.monotonic()
            said = False
            while True:
                try:
                    with conn.transaction():  # a savepoint: a round that times out is rolled back alone
                        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MUTEX)
                    break
                except psycopg.errors.LockNotAvailable:
                    holder = conn.execute(MUTEX_HOLDER).fetchone()
                    if not said and holder is not None:
                        said = True
                        self.tell(f"the queue is locked by pid {holder[0]} ({holder[1]}, since "
                                  f"{time.strftime('%H:%M:%S', time.localtime(holder[2]))}); waiting")
                    if holder is not None and time.monotonic() - started > STUCK_MUTEX:
                        conn.execute("SELECT pg_terminate_backend(%s)", (holder[0],))
                        audit.record(conn, self.user, "force", reason="queue lock stuck", pid=holder[0],
                                     holder=holder[1], held=round(time.time() - holder[2], 3))
            yield conn

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
        """The payloads that came (without waiting); OperationalError when the connection dropped."""
        conn = self.conn
        return [n.payload for n in conn.notifies(timeout=0) if n.channel == CHANNEL]

    def seen(self, conn: psycopg.Connection[Any]) -> None:
        """Inside the caller's transaction: this owner's beat, as it takes a place (an engine idle
        since its last wait did not beat meanwhile)."""
        if self.owner is not None:
            conn.execute(BEAT, (self.owner,))

    def beat(self) -> None:
        """Tell the server this client lives (its row of ``mq_beats``), and so find out that the
        connection does: with no reply in ``BEAT_TIMEOUT`` the connection is shut, and the
        OperationalError raised says so (the caller reconnects)."""
        if self.owner is None:
            return
        conn = self.conn
        with _Deadline(conn, session.BEAT_TIMEOUT) as deadline:
            try:
                conn.execute(BEAT, (self.owner,))
            except psycopg.OperationalError:
                if deadline.passed:
                    raise psycopg.OperationalError(f"no reply from the server in {session.BEAT_TIMEOUT:g} s") from None
                raise

    # -- the owner ---------------------------------------------------------------------------
    def ensure_owner(self) -> int:
        """This engine's owner id, registered (and its liveness lock taken) on first use."""
        if self.owner is None:
            conn = self.conn
            owner = int(conn.execute("SELECT nextval('mq_owner_ids')").fetchone()[0])  # type: ignore[index]
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (OWNER_CLASS, owner))
            self.server_start = incarnation(conn)
            conn.execute(REGISTER, (owner, self.user, os.getpid(), socket.gethostname(), *self.server_start))
            conn.execute(BEAT, (owner,))
            self.owner = owner
        return self.owner

    def _reclaim(self, conn: psycopg.Connection[Any], owner: int) -> None:
        """Take the owner lock back on a new connection (ending this engine's own stale backend
        if it still holds it); past the grace period, clear what is left of the owner's."""
        stale = False  # this engine's own earlier backend still held it: nobody could find it dead
        for _ in range(RECLAIM_TRIES):
            if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (OWNER_CLASS, owner)).fetchone()[0]:  # type: ignore[index]
                break
            stale = True
            conn.execute(TERMINATE_STALE, (owner,))
            time.sleep(0.05)
        else:
            raise LockDirError(where(self.conninfo), "cannot take this engine's liveness lock back")
        started = incarnation(conn)
        died = not stale and started == self.server_start  # dropped while the server stayed up: a death
        self.server_start = started
        with self.mutex(conn):
            row = conn.execute("SELECT lost_at IS NOT NULL AND lost_at < clock_timestamp() - "
                               "make_interval(secs => %s) FROM mq_owners WHERE id = %s", (self.grace, owner)).fetchone()
            if row is None or row[0] or died:
                self._clear_dead_self(conn, owner)
            conn.execute("UPDATE mq_owners SET lost_at = NULL, backend_pid = pg_backend_pid(), server_start = %s, "
                         "incarnation = %s WHERE id = %s", (*started, owner))
            conn.execute(BEAT, (owner,))
        if died:
            raise PlaceLost(where(self.conninfo))

    def _clear_dead_self(self, conn: psycopg.Connection[Any], owner: int) -> None:
        """Gone longer than the grace period: this engine's tickets and ``run`` locks are dead."""
        for seq, target, key in conn.execute("DELETE FROM mq_tickets WHERE owner = %s RETURNING seq, target, key",
                                             (owner,)).fetchall():
            audit.record(conn, self.user, "ticket-lost", target=target, key=key)
            self.notify(conn, f"gone {seq}")
        for board, key, grant, pool, since_ns in conn.execute(
                "DELETE FROM mq_locks WHERE session_owner = %s RETURNING board, key, grant_no, pool, since_ns",
                (owner,)).fetchall():
            audit.record(conn, self.user, "release", board=board, key=key, holder=self.user, holder_key=key,
                         held=round(time.time() - since_ns / 1e9, 3), grant=grant, pool=pool,
                         reason=LOST_PAST_GRACE, outcome="released")
            self.notify(conn, f"free {board}")
        if conn.execute("SELECT 1 FROM mq_owners WHERE id = %s", (owner,)).fetchone() is None:
            conn.execute(REGISTER, (owner, self.user, os.getpid(), socket.gethostname(), *self.server_start))


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
