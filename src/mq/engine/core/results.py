"""What crosses the engine interface: holders, waiting tickets, grants, releases, board states.

Plain frozen dataclasses, the same on the lab host and in the client (the
protocol sends their fields, ``protocol.to_wire``); every engine returns
these, whatever it keeps its locks in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .names import NO_KEY


@dataclass(frozen=True)
class Holder:
    """Who holds a board's lock, read from the lock file itself."""

    board: str
    uid: int
    user: str
    since_ns: int
    timeout: Optional[int]  # None: content unreadable or malformed
    key: Optional[str]  # None: no readable key file
    dev: int
    ino: int
    kind: str  # "file", or what was planted: "symlink", "fifo", "socket", "directory", "other"
    grant: Optional[int] = None
    pool: str = ""
    session: str = ""  # a lock taken by ``mq run``: "live" while its process lives, then "dead"
    zone: Optional[int] = None  # the lab host's UTC offset (s) at ``since``, as its ``stat`` prints the date

    def same_file(self, st: os.stat_result) -> bool:
        """The lock file this holder was read from (not a successor reusing its inode)."""
        return (st.st_dev, st.st_ino, st.st_uid, st.st_mtime_ns) == (self.dev, self.ino, self.uid, self.since_ns)

    def expired(self, now: float) -> bool:
        """True once a ``-T`` timeout has passed; a lock dated in the future is fresh."""
        if self.kind != "file" or not self.timeout:
            return False
        return now - self.since_ns / 1e9 > self.timeout

    @property
    def shown_key(self) -> str:
        return NO_KEY if self.key is None else self.key


@dataclass(frozen=True)
class Ticket:
    """One waiter's place in the queue: who waits, for which boards, since when."""

    name: str
    seq: int
    uid: int
    user: str
    pid: int
    host: str
    key: str
    target: str
    boards: Tuple[str, ...]
    created: float
    nudge: bool = False  # the owner takes SIGUSR1 as "look at your ticket"
    priority: int = 0  # as asked for (or given by the inventory's [queue]); see ``policy``
    effective: Optional[float] = None  # its effective priority when read, under the priority policy (else None)
    written: float = 0.0  # the ticket file's mtime: a pid it names must be older (``proccheck``)
    tool: str = "mq"  # "mq.sh": a waiting ``lockfile`` of mq.sh's on the host (``legacy_waiters``), shown only
    lost_since: Optional[float] = None  # the PostgreSQL queue: its client reconnecting (after a restart) since then


@dataclass(frozen=True)
class Grant:
    """A wait's result: the board taken (for ``target``, a board or pool), with its grant number."""

    board: str
    target: str
    key: str
    timeout: int
    grant: int
    waited: float
    reclaimed_from: str = ""  # the user whose lock was taken over ("": the board was free)
    reclaimed_timeout: int = 0  # that lock's -T (0: its holder's `run` had died instead)


@dataclass(frozen=True)
class Released:
    board: str
    holder: Holder
    forced: bool


@dataclass(frozen=True)
class Offline:
    """A board taken out of service (``mq offline``): by whom, when, why."""

    reason: str
    user: str
    since: float  # Unix seconds
    locked: bool = False  # the board's lock is its maintenance lock (False: another holder has yet to release it)


@dataclass(frozen=True)
class BoardState:
    board: str
    holder: Optional[Holder]
    waiters: Tuple[Ticket, ...] = field(default=())
    unread: str = ""  # what of mq's state could not be read, and so is not shown ("" when all was)
    offline: Optional[Offline] = None  # out of service: pools skip it, new waits for it alone fail


@dataclass(frozen=True)
class LabStatus:
    """``mq status``: board states (waiters in queue order) and each waiter's projected start."""

    now: float
    boards: List[BoardState]
    estimates: Dict[str, Dict[str, Any]]  # ticket name -> {"board", "eta", "basis"}


__all__ = ["NO_KEY", "BoardState", "Grant", "Holder", "LabStatus", "Offline", "Released", "Ticket"]
