"""The PostgreSQL engine's own promises, on a real server (``pgserver``), beyond the conformance suite:

* the schema is versioned and ``init`` is idempotent; the inventory (with each system's
  lab host) is stored in the database and read back;
* a waiter sleeps on LISTEN/NOTIFY: while it waits its backend is idle in ClientRead and
  it sends no query at all, and a release wakes it at once;
* a waiter killed with SIGKILL is skipped; a killed ``run`` holder's lock is reclaimed by a
  waiter that was asleep (told by the server's lock manager, not by polling);
* restarts lose nothing: 20 waiters queued on one board, the server restarted under
  them, and the grants afterwards follow the arrival order exactly; a holder's lock
  survives the restart; a ``run`` lock is re-bound when its engine reconnects.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pgserver
from conftest import LAB_TOML, PROMPT, wait_for
from mq.engine.core.errors import LockDirError, NotAcquiredError
from mq.engine.core.inventory import parse_inventory

psycopg = pytest.importorskip("psycopg")

from mq.pgengine import PgEngine, inventory_store, schema  # noqa: E402

pytestmark = pytest.mark.skipif(pgserver.missing(), reason="needs the PostgreSQL server binaries")

INVENTORY = parse_inventory(LAB_TOML, "lab.toml")

# A waiter process: one wait, then its grant as a JSON line, then (on "release" from stdin) its release.
WAITER = """
import json, sys
from mq.engine.core.inventory import parse_inventory
from mq.pgengine import PgEngine
conninfo, toml, name, key, grace, session, give_up = sys.argv[1:8]
engine = PgEngine(conninfo, parse_inventory(toml, "lab.toml"), grace=float(grace), give_up=float(give_up),
                  on_reconnect=lambda message: print("reconnect:", message, file=sys.stderr, flush=True))
print(json.dumps({"queued": True}), flush=True)
try:
    grant = engine.wait(name, key=key, session=session == "1")
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
    raise SystemExit(2)
print(json.dumps({"board": grant.board, "grant": grant.grant, "reclaimed_from": grant.reclaimed_from}), flush=True)
for line in sys.stdin:
    if line.strip() == "release":
        engine.signal(grant.board, key=key)
        print(json.dumps({"released": True}), flush=True)
    elif line.strip() == "check":
        print(json.dumps({"held": engine.check_held(name, key)}), flush=True)
"""


@pytest.fixture(scope="session")
def pg_server() -> pgserver.PgServer:
    """The test run's one real PostgreSQL server (see ``pgserver.shared_server``)."""
    return pgserver.shared_server()


@pytest.fixture
def database(pg_server: pgserver.PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the schema, for one test; its conninfo."""
    name = pgserver.database_for(request.node.nodeid)
    conninfo = pg_server.create_database(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
    yield conninfo
    pg_server.drop_database(name)


REPLY_LIMIT = 120.0  # s: far beyond any wait these tests expect (a reply that never comes fails the test)


class WaiterProcess:
    def __init__(self, conninfo: str, name: str, key: str, grace: float = 30.0, session: bool = False,
                 give_up: float = 60.0) -> None:
        self.key = key
        self.proc = subprocess.Popen([sys.executable, "-c", WAITER, conninfo, LAB_TOML, name, key, str(grace),
                                      "1" if session else "0", str(give_up)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.reply() == {"queued": True}

    def reply(self, timeout: float = REPLY_LIMIT) -> dict[str, Any]:
        """Its next JSON line (a test fails, rather than hangs, on one that never comes)."""
        assert self.proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        assert lines, f"no reply from the waiter {self.key} in {timeout:g} s"
        line = lines[0]
        assert line, f"waiter ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        value: dict[str, Any] = json.loads(line)
        return value

    def send(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def cpu_ticks(self) -> int:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.returncode is None or not self.proc.stdin or not self.proc.stdin.closed:
            self.proc.communicate(timeout=10)


@pytest.fixture
def waiters() -> Iterator[list[WaiterProcess]]:
    started: list[WaiterProcess] = []
    yield started
    for waiter in started:
        waiter.close()


def queued_keys(engine: PgEngine, board: str = "b1") -> list[str]:
    return [t.key for t in engine.info(board)[0].waiters]


def backend_of(conninfo: str, pid: int) -> tuple[Any, ...]:
    """(state, wait_event, state_change) of the backend of the engine in process ``pid``."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT a.state, a.wait_event, a.state_change FROM mq_owners o "
                           "JOIN pg_stat_activity a ON a.pid = o.backend_pid WHERE o.pid = %s", (pid,)).fetchone()
    assert row is not None
    return tuple(row)


# -- the schema and the inventory ---------------------------------------------------------
def test_schema_init_is_versioned_and_idempotent(pg_server: pgserver.PgServer) -> None:
    conninfo = pg_server.create_database("mq_schema_test")
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert schema.version(conn) == 0
            assert schema.init(conn) == list(range(1, schema.VERSION + 1))
            assert schema.init(conn) == []
            assert schema.version(conn) == schema.VERSION
            assert [r[0] for r in conn.execute("SELECT version FROM mq_schema ORDER BY version")] == \
                list(range(1, schema.VERSION + 1))
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'mq_%'")}
            assert {"mq_tickets", "mq_locks", "mq_owners", "mq_offline", "mq_audit", "mq_systems", "mq_pools",
                    "mq_inventory", "mq_schema"} <= tables
    finally:
        pg_server.drop_database("mq_schema_test")


def test_an_engine_refuses_a_database_without_the_schema(pg_server: pgserver.PgServer) -> None:
    conninfo = pg_server.create_database("mq_no_schema")
    try:
        with PgEngine(conninfo, INVENTORY) as engine, pytest.raises(LockDirError, match="mq admin init"):
            engine.info("b1")
    finally:
        pg_server.drop_database("mq_no_schema")


def test_the_inventory_with_its_lab_hosts_is_stored_and_read_back(database: str) -> None:
    toml = LAB_TOML.replace('[systems.b3]\n', '[systems.b3]\nhost = "tftp2"\n')
    inventory = parse_inventory(toml, "lab.toml")
    with psycopg.connect(database, autocommit=True) as conn:
        def hello() -> dict[str, Any]:
            value: dict[str, Any] = conn.execute("SELECT mq_hello('x')").fetchone()[0]  # type: ignore[index]
            return value

        assert inventory_store.from_hello(hello()) is None
        inventory_store.store(conn, inventory, toml)
        inventory_store.store(conn, inventory, toml)  # again: replaced, not doubled
        loaded = inventory_store.from_hello(hello())
        assert loaded is not None and loaded.systems == inventory.systems and loaded.pools == inventory.pools
        assert hello()["hosts"]["b3"] == "tftp2" and hello()["hosts"]["b1"] == ""


def test_a_pool_spanning_two_hosts_gives_the_first_member_that_frees(database: str,
                                                                      waiters: list[WaiterProcess]) -> None:
    """``pair`` = b3 (on tftp2) + solo (on the lab's host): its waiter gets whichever frees first."""
    toml = LAB_TOML.replace('[systems.b3]\n', '[systems.b3]\nhost = "tftp2"\n')
    inventory = parse_inventory(toml, "lab.toml")
    with PgEngine(database, inventory) as engine:
        engine.wait("pair", key="H", budget=0)
        engine.wait("pair", key="H", budget=0)
        waiter = WaiterProcess(database, "pair", "W")
        waiters.append(waiter)
        wait_for(lambda: queued_keys(engine, "b3") == ["W"], what="the waiter queued")
        engine.signal("b3", key="H")
        grant = waiter.reply()
        assert grant["board"] == "b3" and inventory.systems[grant["board"]].host == "tftp2"


# -- sleeping on LISTEN/NOTIFY ----------------------------------------------------------
def test_a_waiter_sleeps_without_polling_and_a_release_wakes_it(database: str,
                                                                 waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY) as engine:
        engine.wait("b1", key="H", budget=0)
        waiter = WaiterProcess(database, "b1", "W")
        waiters.append(waiter)
        wait_for(lambda: queued_keys(engine) == ["W"], what="the waiter queued")
        wait_for(lambda: backend_of(database, waiter.proc.pid)[:2] == ("idle", "ClientRead"),
                 what="the waiter's backend idle")
        before, ticks = backend_of(database, waiter.proc.pid), waiter.cpu_ticks()
        time.sleep(2.0)  # a poller would have queried (state_change moves) and used CPU by now
        assert backend_of(database, waiter.proc.pid) == before
        assert waiter.cpu_ticks() == ticks
        started = time.monotonic()
        engine.signal("b1", key="H")
        assert waiter.reply()["board"] == "b1"
        assert time.monotonic() - started < PROMPT


# -- liveness -----------------------------------------------------------------------------
def test_a_waiter_killed_with_sigkill_is_skipped(database: str, waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY, grace=1.0) as engine:
        engine.wait("b1", key="H", budget=0)
        doomed = WaiterProcess(database, "b1", "doomed", grace=1.0)
        waiters.append(doomed)
        wait_for(lambda: queued_keys(engine) == ["doomed"], what="doomed queued")
        survivor = WaiterProcess(database, "b1", "survivor", grace=1.0)
        waiters.append(survivor)
        wait_for(lambda: queued_keys(engine) == ["doomed", "survivor"], what="survivor queued")
        os.kill(doomed.proc.pid, signal.SIGKILL)
        engine.signal("b1", key="H")  # at once: the dead waiter still holds its place for its grace period
        assert survivor.reply()["board"] == "b1"
        events = engine.events("b1")
        dead = [e["key"] for e in events if e["event"] == "dead-waiter"]
        # (or the release's walk still found it live and granted it b1, which the survivor reclaimed)
        reclaimed = [e["previous_key"] for e in events if e["event"] == "reclaim" and e["reason"] == "unconfirmed"]
        assert dead + reclaimed == ["doomed"], events


def test_a_killed_run_holders_lock_is_reclaimed_by_a_sleeping_waiter(database: str,
                                                                     waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY, grace=1.0) as engine:
        runner = WaiterProcess(database, "b1", "run", grace=1.0, session=True)
        waiters.append(runner)
        assert runner.reply()["board"] == "b1"
        waiter = WaiterProcess(database, "b1", "next", grace=1.0)
        waiters.append(waiter)
        wait_for(lambda: queued_keys(engine) == ["next"], what="the waiter queued")
        holder = engine.info("b1")[0].holder
        assert holder is not None and holder.session == "live"
        killed = time.monotonic()
        os.kill(runner.proc.pid, signal.SIGKILL)
        grant = waiter.reply()  # nobody else looks: the waiter's death watch tells it
        assert (grant["board"], grant["reclaimed_from"]) == ("b1", engine.user)
        assert time.monotonic() - killed < 1.0 + PROMPT  # the grace period, and a little
        reclaims = [e for e in engine.events("b1") if e["event"] == "reclaim"]
        assert [(e["reason"], e["previous_key"]) for e in reclaims] == [("dead-session", "run")]


def test_a_cancel_from_another_process_ends_the_wait(database: str, waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY) as engine:
        engine.wait("b1", key="H", budget=0)
        waiter = WaiterProcess(database, "b1", "C")
        waiters.append(waiter)
        wait_for(lambda: queued_keys(engine) == ["C"], what="the waiter queued")
        with PgEngine(database, INVENTORY) as other:
            assert other.cancel("b1", key="C") == 1
        assert waiter.reply() == {"error": "NotAcquiredError",
                                  "message": "Failed to acquire lock for system (b1): wait cancelled"}
        assert queued_keys(engine) == []
        with pytest.raises(NotAcquiredError):
            engine.wait("b1", key="H2", budget=0.2)


# -- restarts -------------------------------------------------------------------------------
@pytest.fixture
def own_server() -> Iterator[pgserver.PgServer]:
    """A server of this test's own, to restart."""
    server = pgserver.start_server()
    yield server
    server.destroy()


def test_a_restart_under_20_waiters_keeps_their_order_and_the_holders_lock(own_server: pgserver.PgServer,
                                                                          waiters: list[WaiterProcess]) -> None:
    conninfo = own_server.create_database("mq_restart")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
    keys = [f"w{n:02d}" for n in range(20)]
    told: list[str] = []
    with PgEngine(conninfo, INVENTORY, on_reconnect=told.append) as engine:
        engine.wait("b1", key="H", budget=0)
        for key in keys:  # one at a time: the arrival order is the order they were started in
            waiters.append(WaiterProcess(conninfo, "b1", key))
            wait_for(lambda key=key: queued_keys(engine)[-1:] == [key], what=f"{key} queued")
        own_server.restart()
        holder = engine.info("b1")[0].holder  # reconnects: the lock is still there, and the queue
        assert holder is not None and holder.key == "H"
        assert told and told[-1].startswith("reconnected")
        wait_for(lambda: all(w.proc.stderr is not None for w in waiters), what="waiters")
        assert queued_keys(engine) == keys
        engine.signal("b1", key="H")
        order = []
        for waiter in waiters:  # each is granted in turn, and passes the board on
            grant = waiter.reply()
            order.append(waiter.key)
            assert grant["board"] == "b1"
            assert waiter.send("release") == {"released": True}
        grants = [e["key"] for e in engine.events("b1") if e["event"] == "grant"]
        assert order == keys and grants == ["H", *keys]
    for waiter in waiters:
        _, err = waiter.proc.communicate(timeout=10)  # (stdin closed: it ends)
        assert "reconnect: lost the database connection" in err and "reconnect: reconnected" in err


def test_a_run_lock_is_rebound_when_its_engine_reconnects(own_server: pgserver.PgServer,
                                                          waiters: list[WaiterProcess]) -> None:
    conninfo = own_server.create_database("mq_rebind")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
    with PgEngine(conninfo, INVENTORY, grace=2.0) as engine:
        runner = WaiterProcess(conninfo, "b1", "run", grace=2.0, session=True)
        waiters.append(runner)
        assert runner.reply()["board"] == "b1"
        own_server.restart()
        assert runner.send("check") == {"held": "b1"}  # its next call reconnects and takes its lock back
        time.sleep(2.5)  # past the grace period
        holder = engine.info("b1")[0].holder
        assert holder is not None and (holder.key, holder.session) == ("run", "live")
        with pytest.raises(NotAcquiredError):
            engine.wait("b1", key="next", budget=0.5)


def test_waiters_keep_their_places_through_an_outage_longer_than_a_command_tries(
        own_server: pgserver.PgServer, waiters: list[WaiterProcess]) -> None:
    """A command gives up reconnecting after ``give_up`` seconds (exit 7); a wait does not: it
    keeps its place only by coming back, so it tries for as long as it waits."""
    conninfo = own_server.create_database("mq_outage")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
    with PgEngine(conninfo, INVENTORY) as engine:
        engine.wait("b1", key="H", budget=0)
        for key in ("first", "second"):
            waiters.append(WaiterProcess(conninfo, "b1", key, give_up=1.0))
            wait_for(lambda key=key: queued_keys(engine)[-1:] == [key], what=f"{key} queued")
        own_server.stop()
        impatient = PgEngine(conninfo, INVENTORY, give_up=1.0)
        started = time.monotonic()
        with pytest.raises(LockDirError):
            impatient.info("b1")
        assert time.monotonic() - started < 10
        time.sleep(4)  # four times the waiters' give-up
        assert all(w.proc.poll() is None for w in waiters)
        own_server.start()
        engine.signal("b1", key="H")
        for waiter in waiters:
            assert waiter.reply()["board"] == "b1"
            assert waiter.send("release") == {"released": True}
        grants = [e["key"] for e in engine.events("b1") if e["event"] == "grant"]
        assert grants == ["H", "first", "second"]
    for waiter in waiters:
        _, err = waiter.proc.communicate(timeout=10)
        assert "reconnect: lost the database connection" in err and "reconnect: reconnected" in err, err
        assert "could not reconnect" not in err
