"""The file engine: fair waits for boards and pools, releases, cancels, state, in a lock directory.

Everything here runs on the lab host with only the standard library. The
agent (over SSH, or in-process for the local lab) and the ``run`` job call
it through ``interface.LockEngine`` and render the result objects it
returns; it never prints. ``Engine`` is a facade over three parts with one
job each: ``grant`` (waiting, granting, reclaiming, cancelling), ``release``
and ``lockstate`` (looking, and the bookkeeping of locks another tool took
over).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from mq.engine.core.errors import DiskError
from mq.engine.core.inventory import Inventory
from mq.engine.core.names import NO_KEY
from mq.engine.core.results import BoardState, Grant, Holder, Offline, Released
from mq.engine.core.waits import Hooks

from .labdir import LabDir
from .lockstate import LockState
from .queue import Queue

if TYPE_CHECKING:
    from mq.engine.core.health import Failure

    from .grant import Granter
    from .release import Releaser


class Engine:
    """Lock operations on one lock directory with one inventory (an ``interface.LockEngine``)."""

    def __init__(self, base: str, inventory: Inventory) -> None:
        self.lab = LabDir(base)
        self.lab.audit.syslog = inventory.audit_syslog
        self.inventory = inventory
        self.queue = Queue(self.lab)
        self.state = LockState(self.lab, inventory, self.queue)
        self._grants: Optional[Granter] = None
        self._releases: Optional[Releaser] = None

    # Waiting and releasing load when first used: ``sem -info`` and listings need neither.
    @property
    def grants(self) -> Granter:
        if self._grants is None:
            from .grant import Granter

            self._grants = Granter(self.lab, self.inventory, self.queue, self.state)
        return self._grants

    @property
    def releases(self) -> Releaser:
        if self._releases is None:
            from .release import Releaser

            self._releases = Releaser(self.lab, self.inventory, self.state)
        return self._releases

    @property
    def user(self) -> str:
        return self.lab.user

    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
             extra_fds: Sequence[int] = (), on_extra: Optional[Callable[[int], None]] = None,
             on_tick: Optional[Callable[[], Optional[float]]] = None, session: bool = False,
             boards: Optional[Sequence[str]] = None,
             on_progress: Optional[Callable[[int, int], None]] = None, priority: Optional[int] = None) -> Grant:
        return self.grants.wait(name, key, timeout, budget, Hooks(extra_fds, on_extra, on_tick, on_progress),
                                session, boards, priority)

    def cancel(self, name: str, key: str = NO_KEY, force: bool = False) -> int:
        return self.grants.cancel(name, key, force)

    def confirm(self, board: str, grant: int) -> bool:
        return True  # a lock file outlives its maker by itself

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        return self.releases.undo_grant(board, key, grant, reason)

    def check_held(self, name: str, key: Optional[str] = NO_KEY, boards: Optional[Sequence[str]] = None) -> str:
        return self.state.check_held(name, key, boards)

    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        return self.releases.signal(name, key, force)

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        return self.releases.end_session_lock(board, key, reason)

    def holder(self, board: str) -> Optional[Holder]:
        return self.state.holder(board)

    def info(self, name: str) -> List[BoardState]:
        return self.state.info(name)

    def dumpall(self, order: str = "inventory") -> List[BoardState]:
        return self.state.dumpall(order)

    def events(self, scope: Optional[str] = None, since: Optional[float] = None) -> List[Dict[str, Any]]:
        """The audit log's events from ``since`` on about ``scope`` (a board or pool and its members;
        None: everything), oldest first."""
        from .history import read_events

        names = None
        if scope is not None:
            names = {scope, *self.inventory.members(scope)}
            names |= {pool for board in list(names) for pool in self.inventory.pools_of(board)}
        self.lab.check(writable=False)
        events, unreadable = read_events(self.lab.audit_path, since, names)
        if unreadable:
            self.lab.notice(f"{unreadable} line{'s' if unreadable > 1 else ''} of the audit log "
                            f"{self.lab.audit_path} could not be read (not a record): skipped")
        return events

    def status(self, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Boards with holders, waiters in queue order and every waiter's projected start (``status``)."""
        from .status import status

        return status(self.inventory, self.info, self.lab.audit_path, names)

    def set_offline(self, board: str, reason: str) -> Offline:
        """Take ``board`` out of service (``mq offline``): see ``maintenance``."""
        from .maintenance import set_offline

        return set_offline(self.lab, self.inventory, self.state, board, reason)

    def note_health(self, board: str, failure: Optional[Failure]) -> Tuple[int, Optional[Offline]]:
        """A ``run``'s verdict on ``board`` (``health.judge``): count a failure, or end the row."""
        from .health_rows import note

        return note(self.lab, self.inventory.systems[board].health_limit, board, failure, self.set_offline)

    def set_online(self, board: str) -> Optional[Offline]:
        """Put ``board`` back in service (``mq online``); what it was offline for (None: it was not)."""
        from .maintenance import set_online

        return set_online(self.lab, self.inventory, board)


__all__ = ["BoardState", "DiskError", "Engine", "Grant", "Released"]
