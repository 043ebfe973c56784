"""What every connection mq opens to the queue's database is told, so no client can freeze the lab.

* TCP keepalives on both ends and ``tcp_user_timeout``: a client cut off without
  a reset (a stalled link, a black-hole proxy) is found dead by the server, and
  finds the server gone itself, within about ``HALF_OPEN_LIMIT`` seconds (ignored
  on a Unix socket, where nothing can stall half-open);
* ``idle_in_transaction_session_timeout``: a client stopped (SIGSTOP, a debugger,
  a hung machine) inside a transaction loses it, and with it the queue-wide lock,
  within seconds; ``lock_timeout`` and ``statement_timeout``: no statement of mq's
  waits on a lock, or runs, for long (the queue lock is waited for in rounds,
  ``link.Link.mutex``, saying who holds it);
* ``synchronous_commit = on``: a grant or release a client was told about
  survives a crash of the server, whatever the server's default.

* ``connect_timeout``: a connection attempt that gets no answer (a stalled link, a
  stopped postmaster) fails after ``CONNECT_TIMEOUT`` seconds and is tried again.

Keepalives are the kernel's, so they cannot see a link stalled above TCP (a proxy that
stops forwarding but keeps both sockets open). So every client with a place (a ticket,
a ``run`` lock) also *beats*: every ``HEARTBEAT`` seconds it writes the time to its row
of ``mq_beats``, and gives its connection up as cut when no reply comes within
``BEAT_TIMEOUT`` (it reconnects, and finds out whether it kept its place). A client whose
liveness lock is held but whose last beat is more than ``SILENT_LIMIT`` seconds old is
dead to the others: its backend is ended and its place goes (``rows``).

Each value can be overridden in the backend string (``keepalives_idle=30``, or
``options=-c lock_timeout=5s``): what the string says wins.
"""

from __future__ import annotations

import re
from typing import Dict
from urllib.parse import parse_qs, unquote, urlsplit

KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 2, 3  # seconds, seconds, probes
USER_TIMEOUT_MS = 15000  # unacknowledged data for this long: the connection is dead
HALF_OPEN_LIMIT = 20  # about KEEPALIVE_IDLE + INTERVAL * COUNT, or USER_TIMEOUT: the documented bound (s)
CONNECT_TIMEOUT = 10  # seconds (libpq's connect_timeout; a death watch's connection: WATCH_CONNECT_TIMEOUT)
WATCH_CONNECT_TIMEOUT = 2  # libpq's smallest
HEARTBEAT = 5.0  # seconds between two beats of a client with a place
BEAT_TIMEOUT = 10.0  # a beat without a reply for this long: the connection is cut
SILENT_LIMIT = float(HALF_OPEN_LIMIT)  # no beat for this long while its liveness lock is held: dead
LOCK_WAIT = "2s"  # one round of waiting for a lock (the queue lock is waited for in rounds)
STATEMENT_LIMIT = "30s"
IDLE_IN_TRANSACTION = "10s"  # long enough for a client descheduled on a very busy machine

CLIENT: Dict[str, str] = {
    "application_name": "mq",  # how mq check --host counts mq's connections
    "keepalives": "1", "keepalives_idle": str(KEEPALIVE_IDLE), "keepalives_interval": str(KEEPALIVE_INTERVAL),
    "keepalives_count": str(KEEPALIVE_COUNT), "tcp_user_timeout": str(USER_TIMEOUT_MS),
    "connect_timeout": str(CONNECT_TIMEOUT),
}
SERVER: Dict[str, str] = {  # the server's side of the same (session settings)
    "tcp_keepalives_idle": str(KEEPALIVE_IDLE), "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
    "tcp_keepalives_count": str(KEEPALIVE_COUNT), "tcp_user_timeout": str(USER_TIMEOUT_MS),
    "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION, "lock_timeout": LOCK_WAIT,
    "statement_timeout": STATEMENT_LIMIT, "synchronous_commit": "on",
}
WATCH: Dict[str, str] = {  # a death watch blocks on a liveness lock for as long as its owner lives
    "lock_timeout": "0", "statement_timeout": "0",
}


def conninfo(base: str, watch: bool = False) -> str:
    """``base`` (the backend string) with mq's settings; the string's own win. ``watch``: for a
    connection that waits on a lock by design (``waiting.DeathWatch``)."""
    import psycopg

    params = psycopg.conninfo.conninfo_to_dict(base)
    merged: Dict[str, object] = {**CLIENT, **({"connect_timeout": str(WATCH_CONNECT_TIMEOUT)} if watch else {}),
                                 **params}
    server = {**SERVER, **(WATCH if watch else {})}
    options = " ".join(f"-c {name}={value}" for name, value in server.items())
    given = str(params.get("options") or "").strip()
    merged["options"] = f"{options} {given}".strip()  # later -c settings win: the string's own
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in merged.items()})


FINAL = ("password authentication failed", "does not exist", "no pg_hba.conf entry", "permission denied",
         "invalid", "SSL", "certificate")


def transient(exc: BaseException) -> bool:
    """A connection failure that a restart or failover explains (try again), not a refusal."""
    text = str(exc)
    return not any(word in text for word in FINAL)


def defaults(watch: bool = False) -> Dict[str, str]:
    """mq's settings as libpq keywords, for a connection whose string is expanded after them
    (``libpq.Connection``: the string's own win, as with ``conninfo``)."""
    server = {**SERVER, **(WATCH if watch else {})}
    return {**CLIENT, "options": " ".join(f"-c {name}={value}" for name, value in server.items())}


_KEYWORD = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def describe(base: str) -> str:
    """The database a backend string names, for messages (never its password), without psycopg."""
    params: Dict[str, str] = {}
    if "://" in base:
        parts = urlsplit(base)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        params["host"] = unquote(netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc)
        params["dbname"] = unquote(parts.path.lstrip("/"))
        params.update({k: v[-1] for k, v in parse_qs(parts.query).items() if k in ("host", "dbname", "user")})
    else:
        params.update({k: v.strip("'") for k, v in _KEYWORD.findall(base)})
    host = params.get("host") or "localhost"
    return f"postgresql database {params.get('dbname') or params.get('user') or ''} on {host}".strip()


__all__ = ["BEAT_TIMEOUT", "FINAL", "HALF_OPEN_LIMIT", "HEARTBEAT", "SILENT_LIMIT", "conninfo", "defaults", "describe",
           "transient"]
