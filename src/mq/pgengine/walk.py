"""The queue walk: free boards handed to the waiting tickets in queue order.

The same rule as the file engine's ``queue.walk_queue``: each board that can be
taken now goes to the earliest counted ticket that can use it (so a board waiter
and a pool waiter share one order, a pool of n boards admits n holders, and a
board no earlier waiter can use goes to a later one at once); a ticket is handed
a board with no lock at all before one it would have to reclaim. Tickets whose
owner died are returned for clearing; cancelled ones are passed by.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .rows import DEAD, QueuedTicket


def hand_out(tickets: Sequence[QueuedTicket], me: int, available: Callable[[str], bool],
             vacant: Callable[[str], bool]) -> Tuple[Optional[str], List[QueuedTicket]]:
    """(the board ticket ``me`` gets now, if any; the dead tickets met on the way)."""
    mine = next((t for t in tickets if t.seq == me), None)
    if mine is None:
        return None, []
    free: Dict[str, bool] = {}

    def can_take(board: str) -> bool:
        if board not in free:
            free[board] = available(board)
        return free[board]

    dead: List[QueuedTicket] = []
    for ticket in tickets:
        if not any(can_take(b) for b in mine.boards):
            return None, dead
        usable = [b for b in ticket.boards if can_take(b)]
        choice = next((b for b in usable if vacant(b)), usable[0]) if usable else None
        if ticket.seq == me:
            return choice, dead
        if choice is None:
            continue
        if ticket.owner_state.state == DEAD:
            dead.append(ticket)
            continue
        if ticket.cancelled:
            continue
        free[choice] = False
    return None, dead


__all__ = ["hand_out"]
