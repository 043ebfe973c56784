"""The queue in PostgreSQL (``backend = "postgresql://..."``): locks from the database, boards
booted on their own lab hosts.

``sem``, ``status``, ``history`` and the rest run the PostgreSQL engine in this
process (``mq.pgengine.PgEngine``, behind the same in-process agent as the
local lab), so the wait sleeps on the database connection (``LISTEN``), with
no SSH at all. ``run`` takes the board's lock from the database first (a
``run`` lock, bound to this process's connection: if this process dies the
lock counts as dead), then opens its one SSH connection to the lab host of the
board it got (the system's ``host`` in the inventory, else the configured
``host``), uploads the images there and runs the job with the system's
definition and no lock of the host's own (``system`` in the job: a *bare*
job). The board's health verdict comes back with the result and is counted
in the database; then the lock is released.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mq.engine.core.health import Failure, note_line
from mq.engine.core.interface import LockEngine
from mq.engine.core.inventory import System
from mq.engine.host.agent import LOCAL_PROGRESS_TICK, Agent
from mq.settings.config import Config
from mq.settings.errors import ConfigError

from .base import LOCK_LOST, EventHandler, HostError, LockLostRelay, Progress, Transport

if TYPE_CHECKING:
    from .keyboard import Keyboard


RIDE_OUT = 60.0  # seconds the first connection keeps trying through a restart or failover
RIDE_OUT_ENV = "MQ_DB_RETRY"  # ... unless this says otherwise (seconds; 0: fail at once)


def ride_out() -> float:
    try:
        return max(0.0, float(os.environ.get(RIDE_OUT_ENV, RIDE_OUT)))
    except ValueError:
        return RIDE_OUT


def connect(conninfo: str) -> Any:
    """An autocommit connection to the queue database (``mq admin``, the stored inventory);
    a missing psycopg is a configuration error (exit 6), an unreachable database exit 10."""
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError("backend", "", f"the PostgreSQL backend needs psycopg 3 ({exc}): "
                                         "pip install 'mq[pg]'") from None
    from mq.pgengine import session
    from mq.pgengine.session import transient

    patience = ride_out()
    deadline = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            return psycopg.connect(session.conninfo(conninfo), autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise HostError(f"cannot reach the queue database: {_first_line(exc)}") from None
            if delay == 0.05:  # said once: a restart or failover is ridden out
                sys.stderr.write(f"mq: the queue database does not answer ({_first_line(exc)}); "
                                 f"trying again for up to {patience:.0f} s\n")
                sys.stderr.flush()
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def open_engine(conninfo: str, on_reconnect: Callable[[str], None] | None = None) -> LockEngine:
    """A ``PgEngine`` on the database's stored inventory, on the connection that fetched it (one
    connection per command; a connection dropped while it is read: read again, as a restart is
    ridden out)."""
    import psycopg

    for _ in range(3):
        try:
            return _open_engine(conninfo, on_reconnect)
        except psycopg.OperationalError:
            continue
    return _open_engine(conninfo, on_reconnect)


def _open_engine(conninfo: str, on_reconnect: Callable[[str], None] | None) -> LockEngine:
    import psycopg

    from mq.engine.core.errors import LockDirError
    from mq.engine.core.names import user_name
    from mq.pgengine import schema
    from mq.pgengine.engine import PgEngine
    from mq.pgengine.inventory_store import from_hello
    from mq.pgengine.link import where

    conn = connect(conninfo)
    try:
        try:
            hello = conn.execute("SELECT mq_hello(%s)", (user_name(os.getuid()),)).fetchone()[0]
        except psycopg.errors.UndefinedFunction:
            raise ConfigError("backend", "", "the database has no mq schema of this version: run mq admin init") \
                from None
        except psycopg.errors.InsufficientPrivilege:
            role = conn.execute("SELECT session_user").fetchone()[0]
            raise LockDirError(where(conninfo), f"the database role {role} may not use this queue: ask an admin "
                                                f"to run mq admin grant-user {role}") from None
        schema.check_hello(hello, where(conninfo))
        inventory = from_hello(hello)
        if inventory is None:
            raise ConfigError("backend", "", "the database holds no inventory: run mq admin load-inventory LAB.toml")
        return PgEngine(conninfo, inventory, on_reconnect=on_reconnect, conn=conn, hello=hello)
    except BaseException:
        conn.close()
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


READ_OPS = frozenset({"hello", "inventory", "info", "dumpall", "events", "status"})


def open_reader(conninfo: str) -> LockEngine | None:
    """The read-only engine on libpq itself (no psycopg to load; its one connection rides out a
    restart as ``connect`` does), or None where there is no libpq to load, or where psycopg's
    path says what is missing (no schema, no inventory)."""
    from mq.pgengine import libpq, reader, session

    try:
        libpq.library()
    except libpq.Unavailable:
        return None
    patience = ride_out()
    deadline = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            connection = libpq.Connection(conninfo, session.defaults())
            break
        except libpq.Error as exc:
            if not session.transient(exc) or time.monotonic() + delay > deadline:
                raise HostError(f"cannot reach the queue database: {exc.primary}") from None
            if delay == 0.05:
                sys.stderr.write(f"mq: the queue database does not answer ({exc.primary}); "
                                 f"trying again for up to {patience:.0f} s\n")
                sys.stderr.flush()
            time.sleep(delay)
            delay = min(2.0, delay * 2)
    try:
        engine: LockEngine = reader.open_reader(connection, session.describe(conninfo))  # type: ignore[assignment]
    except (reader.NoSchema, reader.NoInventory):
        return None
    return engine


class _PgAgent(Agent):
    """The in-process agent, with the PostgreSQL engine instead of a lock directory's: a command
    that only looks (``READ_OPS``) reads through libpq alone (``reader``); the first request that
    changes the queue opens ``PgEngine`` (psycopg) in its place."""

    def __init__(self, opener: Callable[[], LockEngine], reader: Callable[[], LockEngine | None]) -> None:
        super().__init__("", None, out_fd=-1, in_fd=-1)
        self._opener = opener
        self._reader = reader
        self._reading = False
        self._read_only: LockEngine | None = None

    def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        self._reading = op in READ_OPS
        if not self._reading:
            self._leave_read_only()
        return super().dispatch(op, args)

    def _leave_read_only(self) -> None:
        if self._engine is not None and self._engine is self._read_only:
            self.close()  # from here on, the full engine
            self._engine = self._read_only = None

    def full_engine(self) -> LockEngine:
        """``PgEngine`` (a running job's lock needs it), whatever was read before."""
        self._reading = False
        self._leave_read_only()
        return self.engine()

    def engine(self) -> LockEngine:
        if self._engine is None and self._reading:
            self._engine = self._read_only = self._reader()
        if self._engine is None:
            self._engine = self._opener()
        return self._engine

    def close(self) -> None:
        """Close the engine's connection, if one was opened (its waits and run locks end with it)."""
        close = getattr(self._engine, "close", None)
        if close is not None:
            close()


class PostgresTransport:
    host = "postgresql"

    def __init__(self, config: Config, open_host: Callable[[Config], Transport]) -> None:
        """``open_host``: how to reach a system's own lab host for its jobs (``open_transport``,
        passed in: this module is one of the transports it chooses from)."""
        self.config = config
        self._open_host = open_host
        self._agent = _PgAgent(lambda: open_engine(config.backend, self._reconnecting),
                               lambda: open_reader(config.backend))
        self._relay = LockLostRelay()  # the running job's

    @staticmethod
    def _reconnecting(message: str) -> None:
        """The database went away (a restart, the network) and comes back: the user is told, on
        stderr, as the wait goes on (stdout stays the command's own)."""
        sys.stderr.write(f"mq: {message}\n")
        sys.stderr.flush()

    @property
    def engine(self) -> LockEngine:
        return self._agent.full_engine()

    def call(self, op: str, on_event: EventHandler | None = None, **args: Any) -> Any:
        self._agent.on_event = on_event
        try:
            return self._agent.dispatch(op, args)
        finally:
            self._agent.on_event = None

    def upload(self, path: str, name: str, progress: Progress | None = None) -> str:
        """Deferred: the board, and so its host, is known only once the lock is taken (``run_job``
        then uploads, its progress told as ``upload`` events)."""
        return os.path.abspath(path)

    def run_job(self, spec: dict[str, Any], on_event: EventHandler, keyboard: Keyboard | None) -> dict[str, Any]:
        from mq.pgengine.engine import PgEngine

        engine = self.engine
        assert isinstance(engine, PgEngine)
        board, grant = self._take(engine, spec, on_event)
        try:
            # From here until the job ends, the lock is looked after by its watch (kept alive
            # through database restarts; the job stopped if it goes): the job makes no calls.
            self._relay = relay = LockLostRelay()
            watch = engine.watch_run_lock(board, spec["key"], grant, lambda loss: relay.tell(loss.taken_by))
            try:
                result = self._job(engine.inventory.systems[board], spec, on_event, keyboard, relay, grant)
            finally:
                loss = watch.stop()
            if loss is not None and result.get("outcome") == LOCK_LOST:
                result["lost_why"] = loss.why
            verdict = result.pop("health", None)
            if isinstance(verdict, dict):
                self._note_health(engine, board, verdict, result["notes"])
            result["board"] = board
            return result
        finally:
            if grant is not None:
                engine.end_session_lock(board, spec["key"], reason="run ended")

    def _job(self, system: System, spec: dict[str, Any], on_event: EventHandler, keyboard: Keyboard | None,
             relay: LockLostRelay, grant: int | None) -> dict[str, Any]:
        """The bare job on ``system``'s own lab host: one connection there, the uploads, the job."""
        host = system.host or self.config.host
        on_event("board", b"", {"board": system.name, "grant": grant is not None, "host": host})
        remote = self._open_host(dataclasses.replace(self.config, host=host, backend=""))
        try:
            relay.attach(remote.lock_lost)
            total = sum(os.path.getsize(spec[k]) for k in ("dtb", "bitstream") if spec.get(k)) \
                + sum(os.path.getsize(p) for p in spec["files"])

            def progress(sent: int) -> None:  # the client's progress bar, as for an upload before the job
                on_event("upload", b"", {"sent": sent, "total": total})

            files = [remote.upload(p, os.path.basename(p), progress) for p in spec["files"]]
            extra = {k: remote.upload(spec[k], os.path.basename(spec[k]), progress) for k in ("dtb", "bitstream")
                     if spec.get(k)}
            job = {**spec, "target": system.name, "boards": [system.name], "files": files, **extra,
                   "system": dataclasses.asdict(system), "budget": 0}
            job.pop("priority", None)

            def relay_events(event: str, data: bytes, fields: dict[str, Any]) -> None:
                if event != "board":  # said above, with the host
                    on_event(event, data, fields)

            return remote.run_job(job, relay_events, keyboard)
        finally:
            remote.close()

    def lock_lost(self, taken_by: str | None) -> None:
        """The running job's lock is gone (its watch says so itself; this is for anyone else who knows)."""
        self._relay.tell(taken_by)

    def _take(self, engine: LockEngine, spec: dict[str, Any], on_event: EventHandler) -> tuple[str, int | None]:
        """The board and the number of the grant that locked it for the job (None: ``-n``, held already)."""
        if spec["mode"] == "held":
            return engine.check_held(spec["target"], spec["key"], spec["boards"]), None
        from mq.engine.core.waitinfo import queue_event

        def progress(position: int, total: int) -> None:
            event = queue_event(engine, spec["target"], spec["key"], position, total)
            if event is not None:
                on_event("queue", b"", event)

        grant = engine.wait(spec["target"], key=spec["key"], budget=spec.get("budget"), boards=spec["boards"],
                            session=True, on_tick=lambda: LOCAL_PROGRESS_TICK, on_progress=progress,
                            priority=spec.get("priority"))
        return grant.board, grant.grant

    @staticmethod
    def _note_health(engine: LockEngine, board: str, verdict: dict[str, Any], notes: list[str]) -> None:
        failure = Failure(str(verdict["kind"]), str(verdict["detail"])) if verdict.get("kind") else None
        count, offline = engine.note_health(board, failure)
        line = note_line(board, failure, count, engine.inventory.systems[board].health_limit, offline)
        if line:
            notes.append(line)

    def close(self) -> None:
        self._agent.close()


__all__ = ["PostgresTransport", "open_engine"]
