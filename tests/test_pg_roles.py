"""Identity from the database (issue 21): where each member connects with a role of their own, the
server says who holds, waits and acts (``session_user``), and a member acts only through mq's
functions, only on what is theirs.

Real roles on a real server: ``mqt_alice`` and ``mqt_bob`` (members of ``mq_user``, granted by
``mq admin grant-user``), ``mqt_admin`` (``mq admin grant-admin``), and ``mqt_carol`` (granted
nothing). The tables belong to the test's own role, which ran ``mq admin init``: a client of that
role is trusted (a lab that shares one role), every other is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pgserver
from conftest import LAB_TOML
from mq.engine.core.errors import LockDirError, NotHolderError
from mq.engine.core.inventory import parse_inventory
from mq.pgengine import PgEngine, inventory_store, schema

psycopg = pytest.importorskip("psycopg")
pytestmark = pytest.mark.skipif(pgserver.missing(), reason="needs the PostgreSQL server binaries")

INVENTORY = parse_inventory(LAB_TOML, "lab.toml")
MEMBERS = ("mqt_alice", "mqt_bob", "mqt_admin", "mqt_carol")


class Lab:
    def __init__(self, server: pgserver.PgServer, conninfo: str) -> None:
        self.server = server
        self.conninfo = conninfo

    def as_role(self, role: str) -> str:
        return pgserver.conninfo_for(self.server.conninfo(user=role), self.conninfo.split("dbname=")[1])

    def engine(self, role: str, user: str | None = None) -> PgEngine:
        """An engine connecting as ``role``, claiming to be ``user`` (the server does not care)."""
        return PgEngine(self.as_role(role), INVENTORY, user=user or role)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MQ_BACKEND": self.conninfo}
        return subprocess.run([sys.executable, "-m", "mq", "admin", *args], env=env, capture_output=True,
                              text=True, timeout=60)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    server = pgserver.start_server()
    try:
        admin: Any = server.admin()
        with admin:
            for role in MEMBERS:
                admin.execute(f'CREATE ROLE "{role}" LOGIN')
        conninfo = server.create_database("mq_roles")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            schema.init(conn)
            inventory_store.store(conn, INVENTORY, LAB_TOML)
        the_lab = Lab(server, conninfo)
        for role in ("mqt_alice", "mqt_bob"):
            done = the_lab.admin("grant-user", role)
            assert done.returncode == 0 and f"{role} is now a member of mq_user" in done.stderr, done
        done = the_lab.admin("grant-admin", "mqt_admin")
        assert done.returncode == 0, done
        yield the_lab
    finally:
        server.destroy()


def test_the_server_says_who_holds_whatever_the_client_claims(lab: Lab) -> None:
    with lab.engine("mqt_alice", user="mqt_bob") as alice:  # she claims to be bob
        grant = alice.wait("b1", key="K", budget=0)
        holder = alice.info("b1")[0].holder
        assert holder is not None and holder.user == "mqt_alice" and grant.board == "b1"
        grants = [e for e in alice.events("b1") if e["event"] == "grant"]
        assert [e["user"] for e in grants] == ["mqt_alice"]
        with lab.engine("mqt_bob", user="mqt_alice") as bob, \
                pytest.raises(NotHolderError, match="held by mqt_alice, not mqt_bob"):  # he claims to be alice
            bob.signal("b1", key="K")
        assert [r.board for r in alice.signal("b1", key="K")] == ["b1"]


def test_members_cannot_touch_the_tables(lab: Lab) -> None:
    with lab.engine("mqt_alice") as alice:
        alice.wait("b1", key="K", budget=0)
    statements = ("UPDATE mq_locks SET username = 'mqt_bob'", "DELETE FROM mq_locks",
                  "INSERT INTO mq_locks (board, username, uid, key, since_ns, grant_no) "
                  "VALUES ('b2', 'mqt_bob', 0, 'x', 0, 99)",
                  "DELETE FROM mq_audit", "UPDATE mq_tickets SET priority = 1000",
                  "SELECT mq_grant(NULL, 'b2', '{}', 0)")
    for statement in statements:
        with psycopg.connect(lab.as_role("mqt_bob"), autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    with lab.engine("mqt_alice") as alice:
        holder = alice.info("b1")[0].holder
        assert holder is not None and holder.user == "mqt_alice"
        assert alice.info("b2")[0].holder is None


def test_forcing_needs_an_admin_and_is_audited_with_both_names(lab: Lab) -> None:
    with lab.engine("mqt_alice") as alice:
        alice.wait("b1", key="K", budget=0)
    with lab.engine("mqt_bob") as bob:
        with pytest.raises(LockDirError, match="forcing \\(-f\\) needs membership of the mq_admin role: ask an "
                                               "admin to run mq admin grant-admin mqt_bob"):
            bob.signal("b1", key="K", force=True)
        with pytest.raises(LockDirError, match="mq offline needs membership of the mq_admin role"):
            bob.set_offline("b2", "mine now")
        assert bob.cancel("b1", key="K") == 0
    with lab.engine("mqt_admin") as admin:
        released = admin.signal("b1", key="K", force=True)
        assert [(r.board, r.holder.user, r.forced) for r in released] == [("b1", "mqt_alice", True)]
        forced = [e for e in admin.events("b1") if e["event"] == "force"]
        assert [(e["user"], e["holder"]) for e in forced] == [("mqt_admin", "mqt_alice")]
        assert admin.set_offline("b2", "new firmware").user == "mqt_admin"


def test_a_priority_beyond_the_labs_bound_needs_an_admin(lab: Lab) -> None:
    with lab.engine("mqt_alice") as alice:
        with pytest.raises(LockDirError, match="a priority above 10 needs membership of the mq_admin role"):
            alice.wait("b1", key="K", budget=0, priority=1000)
        assert alice.wait("b1", key="K", budget=0, priority=10).board == "b1"
    with lab.engine("mqt_admin") as admin:
        assert admin.wait("b2", key="K", budget=0, priority=1000).board == "b2"


def test_a_role_not_let_in_is_told_which_command_lets_it_in(lab: Lab) -> None:
    with lab.engine("mqt_carol") as carol, \
            pytest.raises(LockDirError, match="the database role mqt_carol may not use this queue: ask an admin to "
                                              "run mq admin grant-user mqt_carol"):
        carol.info("b1")
    env = {**os.environ, "MQ_BACKEND": lab.as_role("mqt_carol"), "HOME": "/nonexistent"}
    done = subprocess.run([sys.executable, "-m", "mq", "sem", "-info", "b1"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 7, done
    assert done.stderr.count("\n") == 1 and "mq admin grant-user mqt_carol" in done.stderr, done.stderr
    revoked = lab.admin("grant-user", "--revoke", "mqt_bob")
    assert revoked.returncode == 0, revoked
    with lab.engine("mqt_bob") as bob, pytest.raises(LockDirError, match="grant-user mqt_bob"):
        bob.info("b1")
