"""The PostgreSQL engine's tables, created and migrated by versioned, idempotent steps.

``init(conn)`` brings a database to ``VERSION``: it creates ``mq_schema`` (one row
per applied version) if need be and applies, each in a transaction of its own,
the migrations not yet recorded there. Concurrent ``init`` calls are serialised
by a transaction advisory lock, so running it twice (or twice at once) is a no-op.

The tables:

* ``mq_inventory``, ``mq_systems``, ``mq_pools``: the lab inventory loaded into the
  database (``mq admin load-inventory``): the TOML text, each system's attributes
  and lab ``host``, each pool's members, in inventory order;
* ``mq_owners``: one row per engine connection that waits or holds a ``run``
  (session) lock; its liveness is the session advisory lock (``OWNER_CLASS``, id)
  its connection holds, and ``lost_at`` when a look first found that lock free;
* ``mq_tickets``: the queue (``seq`` from ``mq_ticket_seq``);
* ``mq_locks``: one row per held board (``grant_no`` from ``mq_grants``);
  maintenance locks of offline boards have ``maintenance`` set and no grant;
* ``mq_offline``: boards out of service;
* ``mq_audit``: the audit log (the file engine's event names and fields; the
  fields other than time, event, user, board and target are in ``fields``);
* ``mq_health`` (version 2): each board's row of ``run`` failures that were the
  board's fault (``health_limit``);
* ``mq_beats`` (version 5, unlogged): each owner's last beat (``session``).
"""

from __future__ import annotations

from typing import Any, List, Sequence

VERSION_TABLE = "mq_schema"
INIT_LOCK = (0x6D71, 1)  # transaction advisory lock key serialising init()

MIGRATIONS: Sequence[Sequence[str]] = (
    (  # 1: the queue, the locks, the inventory, the audit log
        """CREATE TABLE mq_inventory (
               id int PRIMARY KEY CHECK (id = 1),
               path text NOT NULL,
               toml text,
               loaded timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE mq_systems (
               name text PRIMARY KEY,
               position int NOT NULL,
               host text NOT NULL DEFAULT '',
               attributes jsonb NOT NULL)""",
        """CREATE TABLE mq_pools (
               name text PRIMARY KEY,
               position int NOT NULL,
               members text[] NOT NULL)""",
        "CREATE SEQUENCE mq_ticket_seq",
        "CREATE SEQUENCE mq_grants",
        "CREATE SEQUENCE mq_owner_ids AS integer",
        """CREATE TABLE mq_owners (
               id integer PRIMARY KEY,
               username text NOT NULL,
               pid int NOT NULL,
               host text NOT NULL,
               backend_pid int NOT NULL,
               connected timestamptz NOT NULL DEFAULT clock_timestamp(),
               lost_at timestamptz)""",
        """CREATE TABLE mq_tickets (
               seq bigint PRIMARY KEY DEFAULT nextval('mq_ticket_seq'),
               username text NOT NULL,
               uid int NOT NULL,
               pid int NOT NULL,
               host text NOT NULL,
               key text NOT NULL,
               target text NOT NULL,
               boards text[] NOT NULL,
               created double precision NOT NULL,
               priority int NOT NULL DEFAULT 0,
               owner integer NOT NULL REFERENCES mq_owners (id),
               cancelled boolean NOT NULL DEFAULT false,
               last_seen timestamptz NOT NULL DEFAULT clock_timestamp())""",
        "CREATE INDEX mq_tickets_owner ON mq_tickets (owner)",
        """CREATE TABLE mq_locks (
               board text PRIMARY KEY,
               username text NOT NULL,
               uid int NOT NULL,
               key text NOT NULL,
               timeout int NOT NULL DEFAULT 0,
               since_ns bigint NOT NULL,
               grant_no bigint,
               pool text NOT NULL DEFAULT '',
               session boolean NOT NULL DEFAULT false,
               session_owner integer REFERENCES mq_owners (id),
               maintenance boolean NOT NULL DEFAULT false)""",
        """CREATE TABLE mq_offline (
               board text PRIMARY KEY,
               reason text NOT NULL,
               username text NOT NULL,
               since double precision NOT NULL)""",
        """CREATE TABLE mq_audit (
               id bigserial PRIMARY KEY,
               time double precision NOT NULL,
               event text NOT NULL,
               username text NOT NULL,
               board text,
               target text,
               fields jsonb NOT NULL DEFAULT '{}')""",
        "CREATE INDEX mq_audit_time ON mq_audit (time)",
    ),
    (  # 2: board health (``health_limit``): each board's row of board failures
        """CREATE TABLE mq_health (
               board text PRIMARY KEY,
               count int NOT NULL,
               failures jsonb NOT NULL DEFAULT '[]')""",
    ),
    (  # 3: the server an owner connected to: its liveness lock gone while that server stayed up is its death
        "ALTER TABLE mq_owners ADD COLUMN server_start timestamptz",
    ),
    (  # 4: ... and its incarnation: an unlogged table is emptied by crash recovery (the start time is not)
        "CREATE UNLOGGED TABLE mq_incarnation (id int PRIMARY KEY CHECK (id = 1), token text NOT NULL)",
        "ALTER TABLE mq_owners ADD COLUMN incarnation text",
    ),
    (  # 5: each owner's last beat (``session.HEARTBEAT``): unlogged, as nothing in it outlives a crash
        "CREATE UNLOGGED TABLE mq_beats (owner integer PRIMARY KEY, seen_at timestamptz NOT NULL)",
    ),
)
VERSION = len(MIGRATIONS)


def version(conn: Any) -> int:
    """The schema version of the database (0: never initialised)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()[0]
    if not exists:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()  # noqa: S608
    return int(row[0])


def init(conn: Any) -> List[int]:
    """Create or migrate the schema to ``VERSION`` (``conn`` in autocommit mode); the versions
    applied now (empty when it was up to date)."""
    applied: List[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", INIT_LOCK)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version int PRIMARY KEY, "
                     "applied timestamptz NOT NULL DEFAULT now())")
        current = version(conn)
        for number in range(current + 1, VERSION + 1):
            with conn.transaction():
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (number,))  # noqa: S608
            applied.append(number)
    return applied


__all__ = ["MIGRATIONS", "VERSION", "init", "version"]
