"""A bare job's engine: the board's lock is held elsewhere (the PostgreSQL queue), this host only
boots it. ``mq run`` on a lab whose queue is in PostgreSQL takes the lock from the database, then
sends the job here with the system's definition (``JobSpec.system``); the job runs as any other
(console, ``-c``/``-e``/``-d``, ``power_off``, clean-up) but takes and releases nothing, and its
board-health verdict goes back to the client (``verdict``), which counts it in the database."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from mq.engine.core.errors import BadInputError
from mq.engine.core.health import Failure
from mq.engine.core.inventory import Inventory, System
from mq.engine.core.names import NO_KEY
from mq.engine.core.results import Grant, Offline

WHERE = "(the queue database's inventory)"


class BareEngine:
    """A ``JobEngine`` for one system whose lock the client holds."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.inventory = Inventory(WHERE, {system.name: system})
        self.verdict: Optional[Dict[str, Any]] = None  # what the job found about the board's health

    def _board(self, name: str, boards: Optional[Sequence[str]]) -> str:
        if name != self.system.name or (boards is not None and list(boards) != [name]):
            raise BadInputError(f"a bare job runs on {self.system.name} only, not {name}")
        return name

    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
             extra_fds: Sequence[int] = (), on_extra: Optional[Callable[[int], None]] = None,
             on_tick: Optional[Callable[[], Optional[float]]] = None, session: bool = False,
             boards: Optional[Sequence[str]] = None,
             on_progress: Optional[Callable[[int, int], None]] = None, priority: Optional[int] = None) -> Grant:
        """The board, at once: the client took its lock before sending the job."""
        return Grant(board=self._board(name, boards), target=name, key=key, timeout=0, grant=0, waited=0.0)

    def check_held(self, name: str, key: Optional[str] = NO_KEY, boards: Optional[Sequence[str]] = None) -> str:
        return self._board(name, boards)

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        return False  # the client releases its own lock

    def status(self, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        return {"now": time.time(), "boards": [], "estimates": {}}

    def note_health(self, board: str, failure: Optional[Failure]) -> Tuple[int, Optional[Offline]]:
        self.verdict = {"kind": failure.kind, "detail": failure.detail} if failure else {"kind": None}
        return 0, None


__all__ = ["BareEngine"]
