"""Releasing locks: ``sem -signal`` (with ``-f``), a grant given back, a ``run`` job's lock.

Each release is one call (``queue.sql``: ``mq_release``, ``mq_undo_grant``,
``mq_end_session_lock``), one transaction on the server under the queue mutex: the lock
row is read, checked and deleted together (so it is always exactly the lock that was
checked), the release is logged, the board is handed on to the next waiter by the same
walk a wait makes, and on a board taken offline meanwhile the maintenance lock takes its
place at once. Where each member has a role of their own, the server decides whose lock
it is (``session_user``), and ``-f`` needs mq_admin.
"""

from __future__ import annotations

import secrets
from typing import Any, List

from mq.engine.core.inventory import Inventory
from mq.engine.core.names import NO_KEY, check_key
from mq.engine.core.results import Released

from .link import Link
from .rows import lock_from_json


class Releaser:
    def __init__(self, link: Link, user: str, inventory: Inventory) -> None:
        self.link = link
        self.user = user
        self.inventory = inventory

    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        """Release ``name`` (a board), or the caller's locks in a pool (all with ``force``)."""
        boards = self.inventory.members(name)
        check_key(key)
        request = secrets.randbelow(2**62) + 1  # one id for every try: a try that committed is not done twice

        def release(conn: Any) -> List[Released]:
            result = self.link.call("mq_release", self.user, name, list(boards), self.inventory.is_pool(name), key,
                                    force, request, self.link.grace, conn=conn)
            return [Released(board=lock.board, holder=lock.holder(), forced=force)
                    for lock in (lock_from_json(row) for row in result["released"])]

        released: List[Released] = self.link.run(release)
        return released

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        """Give back a grant the caller could not report (a signal raced it, the client went)."""
        return bool(self.link.run(lambda conn: self.link.call("mq_undo_grant", self.user, board, key, grant, reason,
                                                              self.link.grace, conn=conn)))

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        """Release the lock this engine's ``run`` wait took, if it is still that one (taken by this
        engine's owner with this key), else log that it was gone."""
        return bool(self.link.run(lambda conn: self.link.call("mq_end_session_lock", self.link.owner, self.user,
                                                              board, key, reason, self.link.grace, conn=conn)))


__all__ = ["Releaser"]
