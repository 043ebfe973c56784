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

from typing import Any, Dict, List, Sequence

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
    (  # 6: the queue's steps as functions (queue.sql): what they keep; the clients a schema serves
        "ALTER TABLE mq_tickets ADD COLUMN vtime float8, ADD COLUMN session boolean NOT NULL DEFAULT false, "
        "ADD COLUMN timeout integer NOT NULL DEFAULT 0, ADD COLUMN request bigint",
        "ALTER TABLE mq_locks ADD COLUMN ticket bigint, ADD COLUMN reclaimed_from text NOT NULL DEFAULT '', "
        "ADD COLUMN reclaimed_timeout integer NOT NULL DEFAULT 0, ADD COLUMN request bigint, "
        "ADD COLUMN fetched boolean NOT NULL DEFAULT false",
        "CREATE INDEX mq_locks_ticket ON mq_locks (ticket)",
        "CREATE INDEX mq_tickets_request ON mq_tickets (owner, request)",
        "ALTER TABLE mq_owners ADD COLUMN role text",
        "ALTER TABLE mq_inventory ADD COLUMN queue jsonb",
        """CREATE TABLE mq_compat (
               id int PRIMARY KEY CHECK (id = 1),
               min_client int NOT NULL,
               installed_by text NOT NULL)""",
    ),
    (  # 7: a release's retry finds what its first try released without reading the whole log
        "CREATE INDEX mq_audit_request ON mq_audit ((fields ->> 'request')) WHERE fields ? 'request'",
    ),
)
VERSION = len(MIGRATIONS)
MIN_CLIENT = 6  # the oldest client schema version this one serves (a migration that drops what older
# clients use raises it, one version after the one that stopped using it)

# The functions clients call (queue.sql): members of mq_user may execute these, and nothing else.
API = ("mq_take", "mq_look", "mq_peek", "mq_leave", "mq_confirm", "mq_beat", "mq_release", "mq_end_session_lock",
       "mq_undo_grant", "mq_cancel", "mq_snapshot", "mq_offline", "mq_online", "mq_health_note",
       "mq_health_offline", "mq_events", "mq_hello", "mq_reclaim_owner", "mq_stale_backend", "mq_end_stuck",
       "mq_lock_of")
USER_ROLE, ADMIN_ROLE = "mq_user", "mq_admin"


def check_hello(hello: Dict[str, Any], database: str) -> None:
    """What ``mq_hello`` said, checked: the database serves this client (else a ``LockDirError``
    saying which version to install or to run ``mq admin init``)."""
    from mq import __version__
    from mq.engine.core.errors import LockDirError

    found = int(hello.get("version") or 0)
    if found < VERSION:
        raise LockDirError(database, f"the database's mq schema is at version {found}, this mq (version "
                                     f"{__version__}) needs {VERSION}: run mq admin init")
    oldest = int(hello.get("min_client") or 0)
    if oldest > VERSION:
        raise LockDirError(database, f"this mq (version {__version__}, schema {VERSION}) is too old for the "
                                     f"database (schema {found}, installed by mq {hello.get('installed_by')}): "
                                     f"install mq {hello.get('installed_by')} or newer")


def version(conn: Any) -> int:
    """The schema version of the database (0: never initialised)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()[0]
    if not exists:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()  # noqa: S608
    return int(row[0])


class Downgrade(Exception):
    """The database is at a newer schema than this mq installs."""

    def __init__(self, found: int, installed_by: str) -> None:
        super().__init__(f"the database is at schema version {found} (installed by mq {installed_by}); this mq "
                         f"installs version {VERSION}: refusing to downgrade (install mq {installed_by} or newer)")


def functions_sql(schema_name: str) -> str:
    """queue.sql for the schema ``schema_name`` (the functions' pinned ``search_path``)."""
    from importlib import resources

    from .session import SILENT_LIMIT

    text = resources.files(__package__).joinpath("queue.sql").read_text(encoding="utf-8")
    quoted = '"' + schema_name.replace('"', '""') + '"'
    literal = "'" + schema_name.replace("'", "''") + "'"
    return text.format(schema=quoted, schema_literal=literal, silent=f"{SILENT_LIMIT:g}")


def init(conn: Any, installed_by: str = "") -> List[int]:
    """Create or migrate the schema to ``VERSION`` (``conn`` in autocommit mode), install the
    queue's functions and their rights; the versions applied now (empty when it was up to date).
    ``Downgrade`` when the database is newer."""
    from mq import __version__

    applied: List[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", INIT_LOCK)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version int PRIMARY KEY, "
                     "applied timestamptz NOT NULL DEFAULT now())")
        current = version(conn)
        if current > VERSION:
            row = conn.execute("SELECT installed_by FROM mq_compat WHERE id = 1").fetchone() \
                if conn.execute("SELECT to_regclass('mq_compat') IS NOT NULL").fetchone()[0] else None
            raise Downgrade(current, str(row[0]) if row else "?")
        for number in range(current + 1, VERSION + 1):
            with conn.transaction():
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (number,))  # noqa: S608
            applied.append(number)
        schema_name = conn.execute("SELECT current_schema()").fetchone()[0]
        conn.execute(functions_sql(schema_name))
        conn.execute("INSERT INTO mq_compat (id, min_client, installed_by) VALUES (1, %s, %s) ON CONFLICT (id) "
                     "DO UPDATE SET min_client = excluded.min_client, installed_by = excluded.installed_by",
                     (MIN_CLIENT, installed_by or __version__))
        _rights(conn)
    return applied


def _rights(conn: Any) -> List[str]:
    """Only the owner of the tables (and mq_admin) touches them; members of mq_user call the API.
    What could not be done (no CREATEROLE: the lab runs with one shared role) is returned."""
    conn.execute(f"GRANT SELECT ON {VERSION_TABLE} TO PUBLIC")
    conn.execute("""DO $$ DECLARE f record; BEGIN
        FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                  WHERE p.pronamespace = current_schema()::regnamespace AND p.proname LIKE 'mq\\_%' LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.sig);
        END LOOP; END $$""")
    missing: List[str] = []
    for role in (USER_ROLE, ADMIN_ROLE):
        try:
            with conn.transaction():
                if conn.execute("SELECT to_regrole(%s) IS NULL", (role,)).fetchone()[0]:
                    conn.execute(f"CREATE ROLE {role} NOLOGIN")
        except Exception:
            missing.append(role)
    if missing:
        return missing
    try:
        _grant_api(conn)
    except Exception:  # the roles are another role's to grant: leave them as they are
        return [USER_ROLE, ADMIN_ROLE]
    return []


def _grant_api(conn: Any) -> None:
    with conn.transaction():
        conn.execute(f"GRANT USAGE ON SCHEMA {_schema(conn)} TO {USER_ROLE}")
        api = conn.execute("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = "
                           "current_schema()::regnamespace AND p.proname = ANY(%s)", (list(API),)).fetchall()
        for (signature,) in api:
            conn.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {USER_ROLE}")
        conn.execute(f"GRANT {USER_ROLE} TO {ADMIN_ROLE}")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {_schema(conn)} TO {ADMIN_ROLE}")
        conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {_schema(conn)} TO {ADMIN_ROLE}")


class GrantError(Exception):
    """A grant that cannot be made (said in one line)."""


def missing_roles(conn: Any) -> List[str]:
    """mq's group roles that do not exist (init could not create them)."""
    return [role for role in (USER_ROLE, ADMIN_ROLE)
            if conn.execute("SELECT to_regrole(%s) IS NULL", (role,)).fetchone()[0]]


def grant(conn: Any, role: str, name: str, revoke: bool = False) -> None:
    """Make database role ``name`` a member of ``role`` (mq_user or mq_admin), or no longer."""
    from psycopg import errors, sql

    missing = missing_roles(conn)
    if missing:
        raise GrantError(f"the role {missing[0]} does not exist: run mq admin init as a role with CREATEROLE")
    if conn.execute("SELECT to_regrole(%s) IS NULL", (name,)).fetchone()[0]:
        raise GrantError(f"there is no database role {name}: create it first (CREATE ROLE \"{name}\" LOGIN)")
    statement = "REVOKE {} FROM {}" if revoke else "GRANT {} TO {}"
    try:
        conn.execute(sql.SQL(statement).format(sql.Identifier(role), sql.Identifier(name)))
    except errors.InsufficientPrivilege:
        raise GrantError(f"this role may not grant {role} (it needs CREATEROLE, or ADMIN OPTION on {role})") from None


def _schema(conn: Any) -> str:
    name = str(conn.execute("SELECT current_schema()").fetchone()[0])
    return '"' + name.replace('"', '""') + '"'


__all__ = ["ADMIN_ROLE", "API", "MIGRATIONS", "MIN_CLIENT", "USER_ROLE", "VERSION", "Downgrade", "GrantError",
           "check_hello", "functions_sql", "grant", "init", "missing_roles", "version"]
