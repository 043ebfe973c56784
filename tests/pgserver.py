"""A real PostgreSQL server for the tests and benchmarks: ``initdb`` into a temporary
directory, a Unix socket in it (and optionally 127.0.0.1 on a free port), torn down after.

Debian's ``postgresql`` package puts the server in /usr/lib/postgresql/VERSION/bin
(``MQ_PG_BIN`` names another directory). ``initdb`` refuses to run as root, so as
root the server runs as the system user ``mqpg`` (made once, with ``useradd``), and
the temporary directory is that user's. The user running the tests gets a role of
its own name (login, createdb), reached over the socket with trust authentication.

``shared_server()`` is the one server of a process (started on first use, stopped
at exit): the conformance kind ``postgresql`` and ``test_pg_engine`` use it, and the
``pg_server`` fixture hands it out. Nothing here imports pytest: a worker process
that only needs the connection string imports this module quickly.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "mqpg"
CONNINFO_ENV = "PGSERVER_CONNINFO"  # the shared server's conninfo, for worker processes (not MQ_*: tests clear those)


def pg_bin() -> Path:
    named = os.environ.get("MQ_PG_BIN")
    if named:
        return Path(named)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    """The server binaries are installed."""
    return all((pg_bin() / name).exists() for name in ("initdb", "pg_ctl", "postgres"))


def missing() -> bool:
    """The server binaries are absent, and that may be a skip: not in CI (``CI`` set), where
    ``.ci/run`` installs them, so a missing server fails the PostgreSQL tests instead."""
    return not available() and not os.environ.get("CI")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ensure_server_user() -> None:
    import fcntl

    with open("/tmp/mq-tests-users.lock", "a") as lock:  # (conftest.machine_lock: xdist workers at once)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "-M", "-s", "/usr/sbin/nologin", "-d", "/nonexistent",
                            SERVER_USER], check=True, capture_output=True)


@dataclass
class PgServer:
    root: Path  # the temporary directory: data/, the socket, the log
    port: int
    role: str  # the role of the user running the tests
    tcp: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def conninfo(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host={self.socket_dir} port={self.port} user={user or self.role} dbname={dbname}"

    def tcp_conninfo(self, dbname: str = "postgres", port: int | None = None) -> str:
        """Over TCP; ``port``: through a proxy listening there (``tests/blackhole.py``)."""
        return f"host=127.0.0.1 port={port or self.port} user={self.role} dbname={dbname} sslmode=disable"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(pg_bin() / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, cwd="/")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        done = self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *extra,
                         check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {action} failed: {done.stdout}{done.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is dropped, every session advisory lock with it."""
        self._pg_ctl("restart", "-m", "fast")

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def admin(self) -> object:
        """A superuser connection (autocommit) to the ``postgres`` database."""
        import psycopg

        return psycopg.connect(self.conninfo(user=SERVER_USER if self.as_root else self.role), autocommit=True)

    def create_database(self, name: str) -> str:
        """A fresh database owned by the test role; its conninfo."""
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn, \
                contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            if self.running():
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


SETTINGS = """
listen_addresses = '{listen}'
port = {port}
unix_socket_directories = '{sockets}'
max_connections = 1000
shared_buffers = 32MB
log_min_messages = warning
"""
# Durable defaults (fsync, synchronous_commit, full_page_writes on): a grant a client was told
# about must survive ``pg_ctl restart -m immediate`` here as on a real server.


def start_server(tcp: bool = False, extra: str = "") -> PgServer:
    """initdb a new cluster in a temporary directory and start it (socket only; ``tcp``: also
    127.0.0.1 on a free port); ``extra``: more postgresql.conf lines (they win)."""
    if not available():
        raise RuntimeError(f"PostgreSQL server binaries not found in {pg_bin()}")
    role = getpass.getuser()
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="mq-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    if as_root:
        _ensure_server_user()
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PgServer(root=root, port=_free_port(), role=role, tcp=tcp)
    superuser = SERVER_USER if as_root else role
    try:
        server._run("initdb", "-D", str(server.data), "-U", superuser, "--auth=trust", "-E", "UTF8",
                    "--no-locale", "--no-sync")
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write(SETTINGS.format(listen="127.0.0.1" if tcp else "", port=server.port, sockets=root) + extra)
        if as_root:
            subprocess.run(["chown", f"{SERVER_USER}:", str(server.data / "postgresql.conf")], check=True)
        server.start()
        if as_root:
            import psycopg

            with psycopg.connect(server.conninfo(user=SERVER_USER), autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                    conn.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB CREATEROLE')  # (mq's mq_user, mq_admin)
                conn.execute(f'CREATE DATABASE "{role}" OWNER "{role}"')
    except BaseException:
        server.destroy()
        raise
    return server


_SHARED: list[PgServer] = []  # this process's one server, once started


def shared_server() -> PgServer:
    """This process's one server, started on first use and destroyed at exit."""
    if not _SHARED:
        server = start_server()
        atexit.register(server.destroy)
        os.environ[CONNINFO_ENV] = server.conninfo()
        _SHARED.append(server)
    return _SHARED[0]


def database_for(base: str) -> str:
    """The database name of a lab directory (one database per test lab)."""
    return "mq_" + hashlib.sha256(os.path.abspath(base).encode()).hexdigest()[:16]


def conninfo_for(conninfo: str, dbname: str) -> str:
    """``conninfo`` pointed at another database."""
    parts = [p for p in conninfo.split() if not p.startswith("dbname=")]
    return " ".join([*parts, f"dbname={dbname}"])


__all__ = ["CONNINFO_ENV", "PgServer", "available", "conninfo_for", "database_for", "pg_bin", "shared_server",
           "start_server"]
