"""Queue policies: in which order the waiters for a board are served.

``fifo`` (the default): arrival order, exactly; a waiter's priority is kept
and shown but changes nothing.

``priority``: higher priority first, equal priorities in arrival order. With
``aging = A`` (seconds per priority step) a waiter's effective priority
grows by one for every A seconds it has waited, so a priority step is worth
A seconds of waiting. Every waiter ages at the same rate, so the order of two
waiters never changes while they wait: a waiter with priority p that came at
time t goes before a waiter with priority q that came at u exactly when
``t - p*A < u - q*A`` (arrival order on a tie). Each waiter thus has a
*virtual arrival time* ``t - p*A``, and the queue is served in that order:

* a waiter is passed only by waiters whose priority is G higher and that
  arrived less than G*A seconds after it; anyone arriving later queues
  behind it, whatever their priority. Nothing starves: the wait is at most
  the FIFO wait plus the holds of those few.
* without aging, priority classes are strict (a step is worth ``CLASS``
  seconds, longer than any wait): a low-priority waiter can be passed for
  as long as higher-priority work keeps coming.

The policy is the lab's ``[queue]``, or a pool's own ``policy``/``aging`` for
waits for that pool. Priorities come from the wait itself (``--priority``),
else from ``[queue.keys]`` (key patterns, first match) or ``[queue.users]``.
Waiters under different policies (a board in a FIFO pool and a priority
pool) are compared by virtual arrival time too: a FIFO waiter's is its
arrival time.

Stdlib only: the file engine, the PostgreSQL engine and the projection of
``status`` all order the queue through ``order``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Protocol, Tuple

if TYPE_CHECKING:
    from .results import Ticket


class PoolRule(Protocol):
    """What a policy needs of a pool (``inventory.Pool``): its own policy and aging, if any."""

    @property
    def policy(self) -> Optional[str]: ...

    @property
    def aging(self) -> Optional[float]: ...


class Inventory(Protocol):
    """What a policy needs of the inventory (``inventory.Inventory``, which imports this module):
    the lab's queue table and the pools."""

    @property
    def queue(self) -> QueueConfig: ...

    @property
    def pools(self) -> Mapping[str, PoolRule]: ...

FIFO = "fifo"
PRIORITY = "priority"
POLICIES = (FIFO, PRIORITY)
MAX_PRIORITY = 1000  # |priority| at most this
CLASS = 1e9  # seconds one priority step is worth without aging (about 31 years: strict classes)


@dataclass(frozen=True)
class Rule:
    """The policy in force for one target: its name and its aging (seconds per step, 0: none)."""

    policy: str = FIFO
    aging: float = 0.0

    def shift(self, priority: int) -> float:
        """How many seconds earlier than its arrival a waiter with ``priority`` is served as."""
        if self.policy != PRIORITY or not priority:
            return 0.0
        return priority * (self.aging or CLASS)

    def effective(self, priority: int, created: float, now: float) -> float:
        """The effective priority of a waiter that came at ``created`` (0 under FIFO)."""
        if self.policy != PRIORITY:
            return 0.0
        if not self.aging:
            return float(priority)
        return priority + max(0.0, now - created) / self.aging


@dataclass(frozen=True)
class QueueConfig:
    """The lab's ``[queue]`` table."""

    rule: Rule = Rule()
    users: Tuple[Tuple[str, int], ...] = ()  # user -> priority
    keys: Tuple[Tuple[str, int], ...] = ()  # key pattern (fnmatch) -> priority, first match wins
    grace: Optional[float] = None  # PostgreSQL queue: seconds a lost client keeps its place (None: 30)
    max_priority: int = 10  # PostgreSQL queue, a role per member: asked priorities beyond need mq_admin

    @classmethod
    def from_wire(cls, data: Optional[Dict[str, Any]]) -> QueueConfig:
        """As ``protocol.to_wire`` sent it (None: an older host, FIFO)."""
        if not data:
            return cls()
        grace = data.get("grace")
        return cls(Rule(**data["rule"]), tuple((str(n), int(p)) for n, p in data["users"]),
                   tuple((str(n), int(p)) for n, p in data["keys"]), None if grace is None else float(grace))

    def priority_for(self, user: str, key: str, requested: Optional[int] = None) -> int:
        """The priority of a wait: as requested, else the first key pattern that matches, else the
        user's, else 0."""
        if requested is not None:
            return requested
        for pattern, priority in self.keys:
            if fnmatch.fnmatchcase(key, pattern):
                return priority
        for name, priority in self.users:
            if name == user:
                return priority
        return 0


def rule_for(inventory: Inventory, target: str) -> Rule:
    """The policy for waits for ``target``: its pool's own, else the lab's."""
    pool = inventory.pools.get(target)
    lab = inventory.queue.rule
    if pool is None or (pool.policy is None and pool.aging is None):
        return lab
    return Rule(pool.policy or lab.policy, lab.aging if pool.aging is None else pool.aging)


def virtual_arrival(inventory: Inventory, ticket: Ticket) -> float:
    return ticket.created - rule_for(inventory, ticket.target).shift(ticket.priority)


def order(tickets: Iterable[Ticket], inventory: Inventory) -> List[Ticket]:
    """``tickets`` in the order they are served. All FIFO (or no priorities): by arrival
    sequence, exactly as without policies; else by virtual arrival time, then sequence."""
    listed = sorted(tickets, key=lambda t: t.seq)
    keyed = [(virtual_arrival(inventory, t), t.seq, t) for t in listed]
    if all(v == t.created for v, _, t in keyed):
        return listed
    return [t for _, _, t in sorted(keyed, key=lambda item: (item[0], item[1]))]


def annotate(tickets: Iterable[Ticket], inventory: Inventory, now: float) -> List[Ticket]:
    """``tickets`` with their effective priority at ``now`` filled in where the priority policy
    applies (``Ticket.effective``), for ``info`` and ``status``."""
    result = []
    for ticket in tickets:
        rule = rule_for(inventory, ticket.target)
        if rule.policy == PRIORITY:
            result.append(replace(ticket, effective=round(rule.effective(ticket.priority, ticket.created, now), 2)))
        else:
            result.append(ticket)
    return result


def position_key(inventory: Inventory, ticket: Ticket) -> Tuple[float, int]:
    """Sort key of ``order`` for one ticket (for engines that sort elsewhere, e.g. in SQL)."""
    return virtual_arrival(inventory, ticket), ticket.seq


def check_priority(value: object) -> int:
    """A priority as given on the command line or in ``[queue]``: an integer within range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"priority must be an integer, got {value!r}")
    if abs(value) > MAX_PRIORITY:
        raise ValueError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, got {value}")
    return value


__all__ = ["CLASS", "FIFO", "MAX_PRIORITY", "POLICIES", "PRIORITY", "QueueConfig", "Rule", "annotate", "check_priority",
           "order", "position_key", "rule_for", "virtual_arrival"]
