"""A wait's calls: queue a ticket and look (``mq_take``), look again (``mq_look``), leave
(``mq_leave``). Each is one call, one transaction on the server (``queue.sql``): under the
queue mutex the server clears dead tickets, gives offline boards their maintenance locks and
walks the queue, handing every board that can be taken to the earliest live ticket that can
use it (grants bound to their client until it confirms: ``mq_confirm``), and says whether
this ticket has a board. A waiter still waiting gets its ``Outlook`` from the queue the call
sent back: who is ahead, the boards it is at the head for, when to look again, and whose
death to watch.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from mq.engine.core import policy
from mq.engine.core.errors import NotAcquiredError
from mq.engine.core.inventory import Inventory
from mq.engine.core.results import Grant, Ticket
from mq.engine.core.waits import Request

from .link import Link, OwnerTaken, PlaceLost, new_owner_id, where
from .rows import (
    LIVE,
    SUSPECT,
    OwnerState,
    QueuedTicket,
    Snapshot,
    lock_from_json,
    ordered,
    snapshot_from_json,
    ticket_name,
)

EXPIRY_MARGIN = 0.01  # look this long after an expiry, so it has surely passed
SILENCE_LOOK_MIN = 1.0  # a look for a silent client comes no sooner than this after the last one


@dataclass
class Outlook:
    """A waiter's view after a look that did not give it a board."""

    # seq -> (boards, its owner if live, else None: lost, within the grace period), in queue order
    ahead: Dict[int, Tuple[Tuple[str, ...], Optional[int]]] = field(default_factory=dict)
    head: List[str] = field(default_factory=list)  # its boards no ticket ahead wants
    wake_in: Optional[float] = None  # seconds until something may change by itself (an expiry, a grace)
    watch: Set[int] = field(default_factory=set)  # live owners of ``run`` locks on its head boards
    position: int = 1
    total: int = 1

    def nearest(self, boards: Sequence[str]) -> Dict[str, int]:
        """For each of ``boards`` some ticket ahead wants, the nearest such ticket."""
        found: Dict[str, int] = {}
        for seq, (wanted, _owner) in self.ahead.items():  # queue order: later ones overwrite
            for board in wanted:
                if board in boards:
                    found[board] = seq
        return found

    def predecessors(self, boards: Sequence[str]) -> Set[int]:
        """The owners of the tickets this waiter is directly behind on some board, where that ticket
        is the only one ahead wanting it: when such an owner dies, this waiter may be next."""
        wanting: Dict[str, List[Optional[int]]] = {}
        for _seq, (wanted, owner) in self.ahead.items():
            for board in wanted:
                if board in boards:
                    wanting.setdefault(board, []).append(owner)
        return {owners[0] for owners in wanting.values() if len(owners) == 1 and owners[0] is not None}


@dataclass
class Look:
    """What a call of the wait sent back: a grant, or the queue to wait in."""

    seq: int
    grant: Optional[Grant] = None
    snapshot: Optional[Snapshot] = None
    me: Optional[QueuedTicket] = None
    timed_out: bool = False  # a wait of no time that got no board (its ticket left at once)
    listening: bool = False  # the call that queued the ticket listened, in the same transaction


class Taker:
    """A wait's calls for one engine (its link, user and inventory)."""

    def __init__(self, link: Link, user: str, inventory: Inventory) -> None:
        self.link = link
        self.user = user
        self.inventory = inventory

    def take(self, request: Request, boards: Sequence[str], priority: int, requested: bool,
             once: bool) -> Look:
        """Queue a ticket and look (``once``: a wait of no time; not granted: ``NotAcquiredError``).
        One request id for every try of this call: a try whose reply a restart swallowed is found
        by the next (its ticket, or its grant), not done twice."""
        rule = policy.rule_for(self.inventory, request.name)
        shift = rule.shift(priority)
        request_id = secrets.randbelow(2**62) + 1
        while True:
            self.link.registered = True  # the call registers the owner (if its reply is lost, too)
            try:
                result = self.link.run(lambda conn: self.link.call(
                    "mq_take", self.link.owner, self.user, os.getuid(), os.getpid(), _hostname(), request.name,
                    request.key, list(boards), priority, requested, shift, request.session, request.timeout,
                    self.link.grace, once, request_id, conn=conn))
            except OwnerTaken:  # another client drew the same id
                self.link.owner = new_owner_id()
                continue
            break
        me = None
        if "granted" not in result:
            seq = int(result["seq"])
            ticket = Ticket(name=ticket_name(seq, os.getpid()), seq=seq, uid=os.getuid(), user=str(result["user"]),
                            pid=os.getpid(), host=_hostname(), key=request.key, target=request.name,
                            boards=tuple(boards), created=float(result["created"]), priority=int(result["priority"]))
            me = QueuedTicket(ticket, ticket.priority, self.link.owner, False, OwnerState(LIVE))
        look = self._look(result, request, me)
        look.timed_out = bool(result.get("timeout"))
        if result.get("listening"):  # the call listened, in its own transaction
            self.link.listening = look.listening = True
        return look

    def look(self, me: QueuedTicket, request: Request, peek: bool = False) -> Look:
        """Look again: the grant (made by this look's walk or an earlier one), or the queue.
        ``peek``: after a grant to a ticket ahead (whose walk walked the whole queue), the queue
        read without the queue lock and without a walk."""
        result = self.link.call("mq_peek" if peek else "mq_look", self.link.owner, me.seq, self.link.grace)
        if result.get("lost"):
            raise PlaceLost(where(self.link.conninfo), "its place in the queue was cleared while it could not "
                                                       "be heard (cut off, or silent, for too long)")
        if result.get("cancelled"):
            raise NotAcquiredError(me.ticket.target, "wait cancelled")
        return self._look(result, request, me)

    def _look(self, result: Dict[str, Any], request: Request, me: Optional[QueuedTicket]) -> Look:
        seq = int(result["seq"])
        if "granted" in result:
            lock = lock_from_json(result["granted"])
            return Look(seq, grant=Grant(board=lock.board, target=request.name, key=request.key,
                                         timeout=request.timeout, grant=lock.grant or 0,
                                         waited=round(time.monotonic() - request.started, 3),
                                         reclaimed_from=lock.reclaimed_from,
                                         reclaimed_timeout=lock.reclaimed_timeout))
        return Look(seq, snapshot=snapshot_from_json(result["snapshot"]), me=me)

    def leave(self, seq: int, reason: str = "", waited: float = 0.0) -> str:
        """The wait ended without its board: its ticket goes ('left'), or the grant a walk made for
        it meanwhile is given back ('given back'); 'gone': neither was there."""
        return str(self.link.call("mq_leave", self.link.owner, seq, reason, waited, self.link.grace))

    def outlook(self, snap: Snapshot, mine: QueuedTicket) -> Outlook:
        """Where ``mine`` stands in ``snap``: who is ahead, its head boards, when to look again."""
        queue = ordered([t for t in snap.tickets if t.counted or t.seq == mine.seq])
        boards = set(mine.boards)
        place = next((i for i, t in enumerate(queue) if t.seq == mine.seq), len(queue))
        outlook = Outlook()
        waits: List[float] = []
        for ticket in queue[:place]:
            if boards.intersection(ticket.boards):
                live = ticket.owner_state.state == LIVE
                outlook.ahead[ticket.seq] = (ticket.boards, ticket.owner if live else None)
                left = ticket.owner_state.grace_left(snap.now, self.link.grace)
                if left is not None:  # reconnecting, or dead once its grace is over
                    waits.append(left + EXPIRY_MARGIN)
        if len(outlook.ahead) <= len(mine.boards):  # next in line: the one right ahead, silent from when on
            for owner in outlook.predecessors(mine.boards):  # (further back: nobody waits on its silence yet)
                silent_in = snap.owners[owner].silent_in(snap.now) if owner in snap.owners else None
                if silent_in is not None:
                    waits.append(max(SILENCE_LOOK_MIN, silent_in + EXPIRY_MARGIN))
        covered = {b for wanted, _owner in outlook.ahead.values() for b in wanted}
        outlook.head = [b for b in mine.boards if b not in covered]
        for board in outlook.head:
            lock = snap.locks.get(board)
            if lock is None:
                continue
            expires = lock.expires_in(snap.now)
            if expires is not None and not (expires < 0 and board in snap.offline):
                waits.append(max(0.0, expires) + EXPIRY_MARGIN)
            if lock.session_owner is not None and lock.owner_state is not None:
                if lock.owner_state.state == LIVE:
                    outlook.watch.add(lock.session_owner or 0)
                    if lock.beats:  # (a grant its client has fetched is its own until it goes: not judged)
                        waits.append(max(SILENCE_LOOK_MIN, (lock.owner_state.silent_in(snap.now) or 0.0)
                                         + EXPIRY_MARGIN))
                elif lock.owner_state.state == SUSPECT:
                    waits.append((lock.owner_state.grace_left(snap.now, self.link.grace) or 0.0) + EXPIRY_MARGIN)
        outlook.wake_in = min(waits) if waits else None
        behind = sum(1 for t in queue[place + 1:] if boards.intersection(t.boards))
        outlook.position = len(outlook.ahead) + 1
        outlook.total = outlook.position + behind
        return outlook


def _hostname() -> str:
    return socket.gethostname()


__all__ = ["Look", "Outlook", "Request", "Taker", "ordered"]
