"""Ways to reach a lock engine, for the conformance suite (test_engine_conformance.py).

Each ``Kind`` opens a ``LockEngine`` on a lab directory: the file engine in
this very process, or the same engine behind the host agent's JSON-lines
protocol (``python3 -m mq.engine.host.agent``, over a pipe as over SSH, or over a
real sshd), reached through ``WireEngine``. A second engine (PostgreSQL) is
one more ``Kind``.

``serve`` runs in a worker process of its own (``Worker`` in the suite): it
opens an engine the same way and calls it as it is told, so a waiter can
sleep, be cancelled or die while the test goes on. Nothing here imports
pytest: a worker starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mq.engine.core import protocol
from mq.engine.core.errors import EngineError
from mq.engine.core.interface import LockEngine
from mq.engine.core.inventory import Inventory, Pool, System, load_inventory
from mq.engine.core.names import NO_KEY
from mq.engine.core.results import BoardState, Grant, Holder, Offline, Released
from mq.engine.lockdir.semaphore import Engine

Call = Callable[..., Any]


@dataclass
class Opened:
    engine: LockEngine
    pid: int  # the process that holds this engine's waiting tickets and session locks


@dataclass(frozen=True)
class Kind:
    name: str
    open: Callable[[str, dict[str, str]], contextlib.AbstractContextManager[Opened]]
    host_side: bool  # check_held / end_session_lock are reachable (over the wire only inside job_run)
    lock_files: bool = True  # its locks are files in the lab directory (the file engine, however reached)


class WireEngine:
    """A ``LockEngine`` reached through the agent's requests: ``call(op, **args)`` sends one
    and returns its wire result (or raises the engine's error, rebuilt)."""

    def __init__(self, call: Call, hello: dict[str, Any]) -> None:
        self._call = call
        self.user = str(hello["user"])
        self._inventory: Inventory | None = None

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            data = self._call("inventory")
            self._inventory = Inventory(
                path=str(data["path"]), systems={s["name"]: System(**s) for s in data["systems"]},
                pools={p["name"]: Pool(name=p["name"], members=tuple(p["members"])) for p in data["pools"]})
        return self._inventory

    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: float | None = None,
             extra_fds: Sequence[int] = (), on_extra: Callable[[int], None] | None = None,
             on_tick: Callable[[], float | None] | None = None, session: bool = False,
             boards: Sequence[str] | None = None, priority: int | None = None) -> Grant:
        assert not extra_fds and on_extra is None and on_tick is None, "the agent watches its own client"
        extra = {} if priority is None else {"priority": priority}
        return Grant(**self._call("wait", name=name, key=key, timeout=timeout, budget=budget, session=session,
                                  boards=None if boards is None else list(boards), **extra))

    def cancel(self, name: str, key: str = NO_KEY) -> int:
        return int(self._call("cancel", name=name, key=key))

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        return bool(self._call("undo_grant", board=board, key=key, grant=grant, reason=reason))

    def check_held(self, name: str, key: str = NO_KEY, boards: Sequence[str] | None = None) -> str:
        raise NotImplementedError("host side only: reached over the wire through job_run")

    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> list[Released]:
        return [Released(board=r["board"], holder=Holder(**r["holder"]), forced=r["forced"])
                for r in self._call("signal", name=name, key=key, force=force)]

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        raise NotImplementedError("host side only: reached over the wire through job_run")

    def info(self, name: str) -> list[BoardState]:
        return [BoardState(*state) for state in protocol.states_from_wire(self._call("info", name=name))]

    def dumpall(self, order: str = "inventory") -> list[BoardState]:
        return [BoardState(*state) for state in protocol.states_from_wire(self._call("dumpall", order=order))]

    def set_offline(self, board: str, reason: str) -> Offline:
        return Offline(**self._call("offline", board=board, reason=reason))

    def set_online(self, board: str) -> Offline | None:
        return protocol.offline_from_wire(self._call("online", board=board))


# -- the kinds ------------------------------------------------------------------------
@contextlib.contextmanager
def open_file_engine(base: str, _env: dict[str, str]) -> Iterator[Opened]:
    """``semaphore.Engine`` in this process."""
    yield Opened(Engine(base, load_inventory(os.path.join(base, "lab.toml"))), os.getpid())


@contextlib.contextmanager
def open_agent(base: str, env: dict[str, str]) -> Iterator[Opened]:
    """The host agent in a child process, spoken to over its stdin/stdout, as ``mq`` does over SSH."""
    from mq.transport.base import AgentClient
    from mq.transport.pipe import PipeStream

    proc = subprocess.Popen([sys.executable, "-m", "mq.engine.host.agent", base], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    client = AgentClient(PipeStream(proc), "agent", keepalive=15.0)
    try:
        hello = client.start()
        yield Opened(WireEngine(client.call, hello), int(hello["pid"]))
    finally:
        client.close()


@contextlib.contextmanager
def open_ssh(base: str, env: dict[str, str]) -> Iterator[Opened]:
    """The host agent over a real SSH connection (``MQ_HOST``, ``MQ_SSH_CONFIG`` in ``env``),
    through the transport ``mq`` itself uses."""
    from mq.settings.config import load_config
    from mq.transport import open_transport

    transport = open_transport(load_config(env=env))
    try:
        client = transport.client  # type: ignore[attr-defined]  # said hello already; again, for the agent's pid
        hello = transport.call("hello", protocol_version=protocol.PROTOCOL, keepalive=client.keepalive,
                               count=client.count)
        yield Opened(WireEngine(transport.call, hello), int(hello["pid"]))
    finally:
        transport.close()


PG_GRACE = 1.0  # the postgresql kind's grace period: a killed worker counts as dead after this long
PG_CREATED = "PGSERVER_CREATED"  # the database the test's own opener made (its workers only connect)


@contextlib.contextmanager
def open_postgresql(base: str, env: dict[str, str]) -> Iterator[Opened]:
    """``PgEngine`` in this process, on a database of its own for the lab ``base`` (made, with
    its schema, by the first opener, which drops it at the end) on the test run's one real
    server (``pgserver``: started by the test process; workers find it in ``env``)."""
    import pgserver
    from mq.pgengine import PgEngine, schema

    server_conninfo = env.get(pgserver.CONNINFO_ENV) or os.environ.get(pgserver.CONNINFO_ENV)
    if server_conninfo is None:
        if pgserver.missing():
            import pytest

            pytest.skip(f"needs the PostgreSQL server binaries ({pgserver.pg_bin()})")
        server_conninfo = pgserver.shared_server().conninfo()
        env[pgserver.CONNINFO_ENV] = server_conninfo
    dbname = pgserver.database_for(base)
    conninfo = pgserver.conninfo_for(server_conninfo, dbname)
    creator = env.get(PG_CREATED) != dbname  # workers inherit the test's env: the database is made
    if creator:
        import psycopg

        with psycopg.connect(server_conninfo, autocommit=True) as admin, \
                contextlib.suppress(psycopg.errors.DuplicateDatabase):
            admin.execute(f'CREATE DATABASE "{dbname}"')
        with psycopg.connect(conninfo, autocommit=True) as conn:
            schema.init(conn)
        env[PG_CREATED] = dbname
    engine = PgEngine(conninfo, load_inventory(os.path.join(base, "lab.toml")), grace=PG_GRACE)
    try:
        yield Opened(engine, os.getpid())
    finally:
        engine.close()
        if creator:
            import psycopg

            with psycopg.connect(server_conninfo, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


KINDS = {kind.name: kind for kind in (
    Kind("engine", open_file_engine, host_side=True),
    Kind("agent", open_agent, host_side=False),
    Kind("ssh", open_ssh, host_side=False),
    Kind("postgresql", open_postgresql, host_side=True, lock_files=False),
)}


# -- a worker process ------------------------------------------------------------------
def serve(kind_name: str, base: str) -> None:
    """Open an engine of ``kind_name`` on ``base`` and call it as told, one JSON line per call:
    ``{"method": ..., "kwargs": {...}}`` in, ``{"ok": true, "result": ...}`` or
    ``{"ok": false, "error": ...}`` out. First line out: ``{"pid": engine process}``."""
    from mq.engine.core.signals import GUARD

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # nothing but replies on the reply stream
    GUARD.install()  # as every command and agent does: a cancel's nudge is a signal
    with KINDS[kind_name].open(base, dict(os.environ)) as opened:
        out.write(json.dumps({"pid": opened.pid}) + "\n")
        for line in sys.stdin:
            request = json.loads(line)
            try:
                result = getattr(opened.engine, request["method"])(**request["kwargs"])
            except EngineError as exc:
                out.write(json.dumps({"ok": False, "error": protocol.error_to_wire(exc)}) + "\n")
            else:
                out.write(json.dumps({"ok": True, "result": protocol.to_wire(result)}) + "\n")
