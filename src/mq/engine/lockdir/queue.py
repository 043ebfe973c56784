"""The waiting queue: one ticket file per waiter, walked in arrival order.

A ticket ``.mq/queue/T<seq>-<pid>`` holds the waiter's identity and the
boards it can use (one board, or a pool's members). Its owner keeps an
exclusive ``flock`` on it for as long as it waits: the kernel drops that
lock when the process dies, so anyone can tell a dead waiter (the flock can
be taken) from a live one and skip or clear it.

``walk_queue`` is the planner: it hands each free board to the earliest
live ticket that can use it, so a board waiter and a pool waiter share one
arrival order, a pool of n boards admits n holders, and a board no earlier
waiter can use goes to a later waiter at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from mq.engine.core.errors import safe_text
from mq.engine.core.names import user_name
from mq.engine.core.results import Ticket
from mq.engine.core.signals import GUARD

from . import forged, proccheck
from .fsutil import create_exclusive, flock_held, os_error, read_owned, unlink_quiet
from .labdir import LabDir

PREFIX = "T"
CANCEL_SUFFIX = ".cancel"


def ticket_name(seq: int, pid: int) -> str:
    return f"{PREFIX}{seq:012d}-{pid}"


def parse_seq(name: str) -> Optional[int]:
    if not name.startswith(PREFIX) or "." in name:
        return None
    head = name[1:].split("-", 1)[0]
    return int(head) if head.isdigit() else None


class OwnTicket:
    """The caller's own ticket: holds the liveness flock until closed."""

    def __init__(self, lab: LabDir, ticket: Ticket, fd: int) -> None:
        self.lab = lab
        self.ticket = ticket
        self.fd = fd
        self.path = os.path.join(lab.queue_dir, ticket.name)

    @property
    def cancel_name(self) -> str:
        return self.ticket.name + CANCEL_SUFFIX

    def close(self) -> None:
        if self.fd < 0:
            return
        unlink_quiet(self.path)
        unlink_quiet(os.path.join(self.lab.queue_dir, self.cancel_name))
        os.close(self.fd)
        self.fd = -1


class Queue:
    def __init__(self, lab: LabDir) -> None:
        self.lab = lab
        self._cache: Dict[str, Optional[Ticket]] = {}
        self.cancelled: Set[str] = set()  # tickets marked cancelled, as the last ``tickets()`` found them

    def enqueue(self, target: str, boards: Sequence[str], key: str, priority: int = 0) -> OwnTicket:
        """Append a ticket (call with the lab mutex held, so arrival order is total)."""
        seq = self.lab.counters.next_number("seq")
        pid = os.getpid()
        ticket = Ticket(name=ticket_name(seq, pid), seq=seq, uid=self.lab.uid, user=self.lab.user, pid=pid,
                        host=socket.gethostname(), key=key, target=target, boards=tuple(boards),
                        created=time.time(), nudge=GUARD.installed, priority=priority)
        body = json.dumps({"v": 1, "uid": ticket.uid, "user": ticket.user, "pid": pid, "host": ticket.host,
                           "key": key, "target": target, "boards": list(boards), "created": ticket.created,
                           "nudge": ticket.nudge, "priority": priority})
        # Made under a temporary name, locked, then renamed into the queue, so a
        # ticket is never visible without its liveness lock.
        tmp = os.path.join(self.lab.queue_dir, f".new-{ticket.name}")
        final = os.path.join(self.lab.queue_dir, ticket.name)
        try:
            create_exclusive(tmp, body.encode(), self.lab.read_mode)
            fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            unlink_quiet(tmp)
            raise os_error(exc, tmp, "create waiting ticket") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, final)
        except OSError as exc:
            os.close(fd)
            unlink_quiet(tmp)
            raise os_error(exc, final, "queue waiting ticket") from None
        self._cache[ticket.name] = ticket
        return OwnTicket(self.lab, ticket, fd)

    def tickets(self) -> List[Ticket]:
        """Tickets in arrival order (dead ones included; see ``is_alive``); ``policy.order`` gives
        the order they are served in."""
        try:
            names = os.listdir(self.lab.queue_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:  # a queue this user may not read (made private by another)
            raise os_error(exc, self.lab.queue_dir, "read the queue") from None
        found: List[Tuple[int, str]] = []
        self.cancelled = {name[:-len(CANCEL_SUFFIX)] for name in names if name.endswith(CANCEL_SUFFIX)}
        for name in names:
            seq = parse_seq(name)
            if seq is not None:
                found.append((seq, name))
        found.sort()
        result: List[Ticket] = []
        for seq, name in found:
            ticket = self._load(seq, name)
            if ticket is not None:
                result.append(ticket)
        return result

    def _load(self, seq: int, name: str) -> Optional[Ticket]:
        if name in self._cache:
            return self._cache[name]
        path = os.path.join(self.lab.queue_dir, name)
        got = read_owned(path)
        ticket = None
        if got is not None:
            text, st = got
            try:
                raw = json.loads(text)
                claimed = int(raw["uid"])
                # who waits is the file's owner, whatever the ticket says
                ticket = Ticket(name=name, seq=seq, uid=st.st_uid, user=user_name(st.st_uid),
                                pid=int(raw["pid"]), host=str(raw["host"]), key=str(raw["key"]),
                                target=str(raw["target"]), boards=tuple(str(b) for b in raw["boards"]),
                                created=float(raw["created"]), nudge=bool(raw.get("nudge", False)),
                                priority=int(raw.get("priority", 0)), written=st.st_mtime)
            except (ValueError, KeyError, TypeError, OverflowError):
                ticket = None
            if ticket is not None and claimed != st.st_uid:
                forged.set_aside(self.lab, path, st, "ticket", f"uid {claimed} ({safe_text(str(raw.get('user')))})")
                ticket = None
        self._cache[name] = ticket
        return ticket

    def is_alive(self, ticket: Ticket) -> bool:
        """A ticket is alive while its owner holds its flock (the kernel drops it on death)."""
        return bool(flock_held(os.path.join(self.lab.queue_dir, ticket.name)))

    def clear_dead(self, ticket: Ticket) -> bool:
        """Remove a dead ticket (mutex held); True if it was dead and is gone."""
        if self.is_alive(ticket):
            return False
        unlink_quiet(os.path.join(self.lab.queue_dir, ticket.name))
        unlink_quiet(os.path.join(self.lab.queue_dir, ticket.name + CANCEL_SUFFIX))
        self._cache.pop(ticket.name, None)
        return True

    def request_cancel(self, ticket: Ticket) -> None:
        """Mark the ticket cancelled, then touch it: its owner watches it for that."""
        path = os.path.join(self.lab.queue_dir, ticket.name + CANCEL_SUFFIX)
        try:
            create_exclusive(path, b"cancel\n", self.lab.file_mode)
        except FileExistsError:
            pass
        except OSError as exc:
            raise os_error(exc, path, "cancel wait") from None
        with contextlib.suppress(OSError):
            os.utime(os.path.join(self.lab.queue_dir, ticket.name))  # wakes a waiter watching its ticket
        if ticket.nudge and ticket.uid == self.lab.uid and ticket.host == socket.gethostname() \
                and proccheck.is_writer(ticket.pid, ticket.uid, ticket.written):
            with contextlib.suppress(OSError):
                os.kill(ticket.pid, signal.SIGUSR1)  # wakes one that is not


def walk_queue(tickets: Sequence[Ticket], me: str, available: Callable[[str], bool],
               alive: Callable[[Ticket], bool], lock_dir: str,
               owed: Optional[Callable[[str], Optional[float]]] = None) -> Tuple[Optional[str], List[Ticket]]:
    """Hand available boards to tickets in the order given (``policy.order``: arrival order under
    FIFO); return my board (if any).

    ``available(board)`` says whether a board is free (or reclaimable); a ticket
    is handed a board with no lock at all before one it would have to reclaim
    (``-T`` permits taking over an expired lock, it does not ask for it). The
    walk stops as soon as none of my boards is left to hand out, so a waiter
    that cannot be served costs a directory listing and a few ``lstat``s.
    Liveness is checked only for tickets about to receive a board; the dead
    ones found are returned for clearing. ``owed(board)``, for a free board: the
    arrival of an ``mq.sh`` waiter whose turn it is (``legacy_waiters``); tickets
    that arrived after it are not handed that board.
    """
    mine = next((t for t in tickets if t.name == me), None)
    if mine is None:
        return None, []
    state: Dict[str, bool] = {}

    def free(board: str) -> bool:
        if board not in state:
            state[board] = available(board)
        return state[board]

    vacancy: Dict[str, bool] = {}

    def vacant(board: str) -> bool:
        if board not in vacancy:
            vacancy[board] = not os.path.lexists(os.path.join(lock_dir, board + ".lock"))
        return vacancy[board]

    turns: Dict[str, Optional[float]] = {}

    def yields(board: str, ticket: Ticket) -> bool:
        """``ticket`` came after the mq.sh waiter whose turn the free ``board`` is."""
        if owed is None:
            return False
        if board not in turns:
            turns[board] = owed(board)
        arrived = turns[board]
        return arrived is not None and ticket.created > arrived

    dead: List[Ticket] = []
    for ticket in tickets:
        if not any(free(b) for b in mine.boards):
            return None, dead
        usable = [b for b in ticket.boards if free(b) and not yields(b, ticket)]
        choice = next((b for b in usable if vacant(b)), usable[0]) if usable else None
        if ticket.name == me:
            return choice, dead
        if choice is None:
            continue
        if not alive(ticket):
            dead.append(ticket)
            continue
        state[choice] = False
    return None, dead


__all__ = ["CANCEL_SUFFIX", "PREFIX", "OwnTicket", "Queue", "Ticket", "parse_seq", "ticket_name", "walk_queue"]
