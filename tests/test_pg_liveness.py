"""The PostgreSQL queue cannot be stalled by a killed, stopped or cut-off client (issue 20).

* Death is not a restart: a client whose connection ends while the server stays up
  (SIGKILL) is dead at once, whatever the grace period: its place and its ``run``
  lock go, and the next waiter gets the board; a client whose own connection was cut
  while the server stayed up finds its place gone when it reconnects (exit 9).
* Nobody can freeze the lab: a client stopped inside the queue transaction loses the
  queue lock within seconds (``idle_in_transaction_session_timeout``); a foreign
  session that keeps it is ended after ``STUCK_MUTEX``, audited.
* Timers are deadlines: a ``-T`` take-over is not postponed by unrelated traffic.
* Every mq session is durable (``synchronous_commit = on``) and bounded (timeouts).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pgserver
import test_pg_engine
from blackhole import BlackHole
from conftest import LAB_TOML, PROMPT, wait_for
from mq.pgengine import PgEngine, inventory_store, schema, session
from mq.pgengine.link import STUCK_MUTEX, PlaceLost
from mq.pgengine.rows import MUTEX
from test_pg_engine import INVENTORY, WaiterProcess, queued_keys

psycopg = pytest.importorskip("psycopg")
pytestmark = pytest.mark.skipif(pgserver.missing(), reason="needs the PostgreSQL server binaries")

pg_server = test_pg_engine.pg_server  # fixtures: the test run's server, a fresh database, waiter processes
database = test_pg_engine.database
waiters = test_pg_engine.waiters
GRACE = 30.0  # the default: none of these may wait it out


def test_a_killed_head_waiter_does_not_cost_the_grace_period(database: str, waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY, grace=GRACE) as engine:
        engine.wait("b1", key="H", budget=0)
        doomed = WaiterProcess(database, "b1", "doomed", grace=GRACE)
        waiters.append(doomed)
        wait_for(lambda: queued_keys(engine) == ["doomed"], what="doomed queued")
        survivor = WaiterProcess(database, "b1", "survivor", grace=GRACE)
        waiters.append(survivor)
        wait_for(lambda: queued_keys(engine) == ["doomed", "survivor"], what="survivor queued")
        os.kill(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=10)
        wait_for(lambda: queued_keys(engine) == ["survivor"], timeout=PROMPT, what="the dead waiter cleared at once")
        started = time.monotonic()
        engine.signal("b1", key="H")
        assert survivor.reply()["board"] == "b1"
        assert time.monotonic() - started < GRACE / 2  # not the grace period (PROMPT in practice)


def test_a_killed_run_holder_frees_the_board_at_once(database: str, waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY, grace=GRACE) as engine:
        runner = WaiterProcess(database, "b1", "run", grace=GRACE, session=True)
        waiters.append(runner)
        assert runner.reply()["board"] == "b1"
        waiter = WaiterProcess(database, "b1", "next", grace=GRACE)
        waiters.append(waiter)
        wait_for(lambda: queued_keys(engine) == ["next"], what="the waiter queued")
        killed = time.monotonic()
        os.kill(runner.proc.pid, signal.SIGKILL)
        grant = waiter.reply()  # woken by its death watch, reclaimed at once
        assert (grant["board"], grant["reclaimed_from"]) == ("b1", engine.user)
        assert time.monotonic() - killed < GRACE / 2


def test_a_client_cut_off_while_the_server_stays_up_loses_its_place(database: str,
                                                                    waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY, grace=GRACE) as engine:
        engine.wait("b1", key="H", budget=0)
        cut = WaiterProcess(database, "b1", "cut", grace=GRACE)
        waiters.append(cut)
        wait_for(lambda: queued_keys(engine) == ["cut"], what="queued")
        with psycopg.connect(database, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(backend_pid) FROM mq_owners WHERE pid = %s", (cut.proc.pid,))
        reply = cut.reply()
        assert reply["error"] == "PlaceLost", reply
        assert "dropped while the server stayed up" in reply["message"]
        assert cut.proc.wait(timeout=10) == 2
        assert queued_keys(engine) == []


def test_a_client_stopped_inside_the_queue_transaction_loses_the_queue_lock(database: str) -> None:
    """As an mq client stopped (SIGSTOP) between two statements of its transaction."""
    stopped = psycopg.connect(session.conninfo(database), autocommit=True)
    try:
        stopped.execute("BEGIN")
        stopped.execute("SELECT pg_advisory_xact_lock(%s, %s)", MUTEX)
        told: list[str] = []
        with PgEngine(database, INVENTORY, on_reconnect=told.append) as engine:
            started = time.monotonic()
            grant = engine.wait("b1", key="K", budget=0)
            took = time.monotonic() - started
        assert grant.board == "b1"
        assert took < STUCK_MUTEX  # idle_in_transaction_session_timeout ended it, not the stuck-lock rule
        assert any(m.startswith("the queue is locked by pid ") for m in told), told
    finally:
        stopped.close()


@pytest.mark.slow
def test_a_foreign_session_keeping_the_queue_lock_is_ended(database: str) -> None:
    """``BEGIN; SELECT pg_advisory_xact_lock(...)`` from a session without mq's settings (psql)."""
    foreign = psycopg.connect(database, autocommit=True)
    try:
        foreign.execute("BEGIN")
        foreign.execute("SELECT pg_advisory_xact_lock(%s, %s)", MUTEX)
        with PgEngine(database, INVENTORY) as engine:
            assert engine.wait("b1", key="K", budget=0).board == "b1"
            forced = [e for e in engine.events() if e["event"] == "force" and e.get("reason") == "queue lock stuck"]
        assert len(forced) == 1
    finally:
        foreign.close()


def test_a_take_over_is_not_postponed_by_unrelated_traffic(database: str, waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY) as engine:
        engine.wait("b1", key="H", timeout=2, budget=0)
        taker = WaiterProcess(database, "b1", "taker")
        waiters.append(taker)
        wait_for(lambda: queued_keys(engine) == ["taker"], what="the taker queued")
        stop = threading.Event()
        gave_up: list[bool] = []

        def cycle() -> None:  # another board, every 0.2 s: a notification each time, for up to a minute
            ends = time.monotonic() + 60
            with PgEngine(database, INVENTORY) as other:
                while not stop.is_set():
                    if time.monotonic() > ends:
                        gave_up.append(True)  # a postponed timer would wait for the traffic to stop
                        return
                    other.wait("solo", key="cycle", budget=0)
                    other.signal("solo", key="cycle")
                    stop.wait(0.2)

        thread = threading.Thread(target=cycle, daemon=True)
        thread.start()
        try:
            assert taker.reply()["reclaimed_from"] == engine.user
            assert not gave_up  # it came while the cycling went on
        finally:
            stop.set()
            thread.join(timeout=30)


def test_every_mq_session_is_durable_and_bounded(database: str) -> None:
    with psycopg.connect(session.conninfo(database), autocommit=True) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'lock_timeout', "
            "'statement_timeout', 'idle_in_transaction_session_timeout')").fetchall())
    assert settings == {"synchronous_commit": "on", "lock_timeout": "2000", "statement_timeout": "30000",
                        "idle_in_transaction_session_timeout": "10000"}
    overridden = session.conninfo(database + " options='-c lock_timeout=7s' keepalives_idle=30")
    with psycopg.connect(overridden, autocommit=True) as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
    assert "keepalives_idle=30" in overridden


def test_an_operator_cancels_a_stopped_waiter_and_the_next_one_gets_the_board(database: str,
                                                                              waiters: list[WaiterProcess]) -> None:
    with PgEngine(database, INVENTORY) as engine:
        engine.wait("b1", key="H", budget=0)
        stuck = WaiterProcess(database, "b1", "stuck")
        waiters.append(stuck)
        wait_for(lambda: queued_keys(engine) == ["stuck"], what="queued")
        behind = WaiterProcess(database, "b1", "behind")
        waiters.append(behind)
        wait_for(lambda: queued_keys(engine) == ["stuck", "behind"], what="both queued")
        os.kill(stuck.proc.pid, signal.SIGSTOP)
        try:
            with PgEngine(database, INVENTORY, user="operator") as operator:
                assert operator.cancel("b1", key="stuck") == 0  # not the operator's own
                assert operator.cancel("b1", key="stuck", force=True) == 1
                forced = [e for e in operator.events() if e["event"] == "force" and e.get("what") == "cancel"]
            assert [(e["user"], e["waiter"]) for e in forced] == [("operator", engine.user)]
            engine.signal("b1", key="H")
            assert behind.reply()["board"] == "b1"  # the stopped waiter no longer holds it up
        finally:
            os.kill(stuck.proc.pid, signal.SIGCONT)
        assert stuck.reply()["error"] == "NotAcquiredError"


def test_a_grant_its_client_never_confirmed_goes_with_the_client(database: str) -> None:
    """Killed between the grant's commit and reporting it: the lock is not left held by nobody."""
    with PgEngine(database, INVENTORY) as lost:
        lost.wait("b1", key="lost", budget=0)  # never confirmed: the client died before it said so
    with PgEngine(database, INVENTORY) as engine:
        grant = engine.wait("b1", key="next", budget=0)
        assert grant.reclaimed_from == engine.user
        reclaims = [e for e in engine.events("b1") if e["event"] == "reclaim"]
        assert [(e["reason"], e["previous_key"]) for e in reclaims] == [("unconfirmed", "lost")]
        assert engine.confirm("b1", grant.grant)
    with PgEngine(database, INVENTORY) as later:  # confirmed: it outlived its client, as a lock file does
        holder = later.info("b1")[0].holder
        assert holder is not None and holder.key == "next"


own_server = test_pg_engine.own_server


def test_a_command_started_while_the_server_is_down_rides_it_out(own_server: pgserver.PgServer,
                                                                   tmp_path: Path) -> None:
    conninfo = own_server.create_database("mq_ride_out")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
        inventory_store.store(conn, INVENTORY, LAB_TOML)
    env = {**{k: v for k, v in os.environ.items() if k != "MQ_CONFIG"}, "MQ_BACKEND": conninfo, "HOME": str(tmp_path)}
    own_server.stop()
    try:
        command = subprocess.Popen([sys.executable, "-m", "mq", "sem", "-wait", "b1", "-k", "K"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert command.stderr is not None
        said = command.stderr.readline()  # it says so once, and keeps trying
        assert "the queue database does not answer" in said and "trying again for up to 60 s" in said, said
    finally:
        own_server.start()
    _out, err = command.communicate(timeout=60)
    assert command.returncode == 0, err
    with PgEngine(conninfo, INVENTORY) as engine:
        holder = engine.info("b1")[0].holder
        assert holder is not None and holder.key == "K"  # confirmed: it outlived the command


@pytest.mark.parametrize("fault", ["restart", "cut"])
def test_a_connection_lost_between_queueing_and_listening(own_server: pgserver.PgServer, fault: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The drop lands after the ticket is queued and before the waiter's LISTEN (CI once met it in
    ``pg_ctl restart -m immediate``): after a restart the waiter keeps its place and gets the board;
    cut off while the server stayed up, it is told its place is gone (exit 9), never a traceback."""
    conninfo = own_server.create_database(f"mq_listen_{fault}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
        inventory_store.store(conn, INVENTORY, LAB_TOML)
    with PgEngine(conninfo, INVENTORY, grace=GRACE) as engine:
        take = engine.taker.take
        dropped: list[Callable[[], object]] = []

        def enqueue_then_drop(*args: object, **kwargs: object) -> object:
            queued = take(*args, **kwargs)  # type: ignore[arg-type]
            if fault == "restart":
                own_server.restart()
            else:
                with psycopg.connect(conninfo, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (engine.link.conn.info.backend_pid,))
            for then in dropped:
                then()
            return queued

        monkeypatch.setattr(engine.taker, "take", enqueue_then_drop)
        with PgEngine(conninfo, INVENTORY, grace=GRACE) as holder:
            holder.wait("b1", key="H", budget=0)  # so the wait queues; released once the drop is done
            dropped.append(lambda: holder.signal("b1", key="H"))
            if fault == "restart":
                grant = engine.wait("b1", key="K", budget=60)
                assert grant.board == "b1"
            else:
                with pytest.raises(PlaceLost):
                    engine.wait("b1", key="K", budget=60)


def _silenced(conninfo: str) -> list[tuple[str, bool]]:
    """The audit log's ``force`` records of clients ended as silent: (reason, ended)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT fields->>'reason', (fields->>'ended')::bool FROM mq_audit "
                            "WHERE event = 'force' AND fields->>'reason' = 'client silent'").fetchall()
    return [(str(reason), bool(ended)) for reason, ended in rows]


def test_a_stopped_head_waiter_goes_once_it_has_been_silent(database: str, waiters: list[WaiterProcess]) -> None:
    """SIGSTOP of the head waiter (Ctrl+Z, a debugger, a hung VM): its connection stays open and its
    liveness lock held, but it beats no more; after ``SILENT_LIMIT`` the waiter behind ends its
    session and gets the board. Continued, the stopped one is told its place is gone."""
    with PgEngine(database, INVENTORY, grace=GRACE) as engine:
        engine.wait("b1", key="H", budget=0)
        stopped = WaiterProcess(database, "b1", "stopped", grace=GRACE)
        waiters.append(stopped)
        wait_for(lambda: queued_keys(engine) == ["stopped"], what="the first waiter queued")
        survivor = WaiterProcess(database, "b1", "survivor", grace=GRACE)
        waiters.append(survivor)
        wait_for(lambda: queued_keys(engine) == ["stopped", "survivor"], what="the second waiter queued")
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        since = time.monotonic()
        engine.signal("b1", key="H")
        assert survivor.reply()["board"] == "b1"
        took = time.monotonic() - since
        assert took < session.SILENT_LIMIT + session.HEARTBEAT + PROMPT, took
        assert _silenced(database) == [("client silent", True)]
        os.kill(stopped.proc.pid, signal.SIGCONT)
        told = stopped.reply()
        assert told["error"] == "PlaceLost", told
        assert survivor.send("release") == {"released": True}


@pytest.fixture
def tcp_server() -> Iterator[pgserver.PgServer]:
    server = pgserver.start_server(tcp=True)
    yield server
    server.destroy()


def test_a_waiter_cut_off_above_tcp_notices_and_its_place_goes(tcp_server: pgserver.PgServer,
                                                               waiters: list[WaiterProcess]) -> None:
    """The head waiter's link stalls without a reset (``BlackHole``: both kernels still acknowledge
    everything, so no keepalive fires): the waiter behind gets the board once the head has been
    silent for ``SILENT_LIMIT``; the cut-off waiter finds its beat unanswered, says so, and once it
    can reconnect learns its place is gone (PlaceLost: exit 9 from the CLI)."""
    conninfo = tcp_server.create_database("mq_stall")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        schema.init(conn)
        inventory_store.store(conn, INVENTORY, LAB_TOML)
    proxy = BlackHole(tcp_server.port)
    try:
        with PgEngine(conninfo, INVENTORY, grace=GRACE) as engine:
            engine.wait("b1", key="H", budget=0)
            cut = WaiterProcess(tcp_server.tcp_conninfo("mq_stall", port=proxy.port), "b1", "cut", grace=GRACE)
            waiters.append(cut)
            wait_for(lambda: queued_keys(engine) == ["cut"], what="the first waiter queued")
            survivor = WaiterProcess(conninfo, "b1", "survivor", grace=GRACE)
            waiters.append(survivor)
            wait_for(lambda: queued_keys(engine) == ["cut", "survivor"], what="the second waiter queued")
            proxy.stall()
            since = time.monotonic()
            engine.signal("b1", key="H")
            assert survivor.reply()["board"] == "b1"
            took = time.monotonic() - since
            assert took < session.SILENT_LIMIT + session.HEARTBEAT + PROMPT, took
            assert queued_keys(engine) == []
            proxy.resume()
            told = cut.reply()
            assert told["error"] == "PlaceLost", told
            _out, err = cut.proc.communicate(timeout=PROMPT)
            assert f"no reply from the server in {session.BEAT_TIMEOUT:g} s" in err, err
            assert survivor.send("release") == {"released": True}
    finally:
        proxy.close()


def test_a_notification_read_with_a_reply_is_not_left_unseen(database: str) -> None:
    """A notification that came in the same read as the reply to the client's last query sits
    in libpq's buffer, where the socket no longer says there is anything to read: a waiter that
    then slept on the socket would miss its grant (with nothing else happening, for ever)."""
    import select

    engine = PgEngine(database, INVENTORY)
    try:
        link = engine.link
        link.listen()
        with psycopg.connect(database, autocommit=True) as other:
            other.execute("SELECT pg_notify('mq_queue', 'grant 42')")
        fd = link.conn.fileno()
        assert select.select([fd], [], [], 30)[0] == [fd], "the notification never came"
        link.conn.pgconn.consume_input()  # read as a query's reply would: into libpq's buffer
        assert select.select([fd], [], [], 0)[0] == []  # the socket has nothing more to say
        assert link.received() == ["grant 42"]
        assert link.received() == []
    finally:
        engine.close()
