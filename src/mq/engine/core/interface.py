"""The lock engine interface: the operations every engine offers, whatever holds its locks.

The file engine (``semaphore.Engine``: lock files in a directory, shared with
procmail ``lockfile`` and ``mq.sh``) implements it. The host agent and the
``run`` job call an engine only through it, so a second engine (PostgreSQL,
...) implements ``LockEngine``, passes the conformance suite
(tests/test_engine_conformance.py, one more factory there) and is handed to
the agent as its ``EngineFactory``; ``cli/`` and ``service`` never change.

Results are the frozen dataclasses of ``results``; failures are the
``errors.EngineError`` subclasses, which cross the wire as themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from .names import NO_KEY

if TYPE_CHECKING:  # (annotations only: `sem -info` loads neither the health rules nor the inventory parser)
    from .health import Failure
    from .inventory import Inventory
    from .results import BoardState, Grant, Offline, Released


class LockEngine(Protocol):
    """Fair locks on the boards (systems) and pools of one inventory, for one user."""

    @property
    def inventory(self) -> Inventory:
        """The systems and pools that names refer to."""
        ...

    @property
    def user(self) -> str:
        """Who this engine takes and releases locks as."""
        ...

    # -- taking ------------------------------------------------------------------
    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
             extra_fds: Sequence[int] = (), on_extra: Optional[Callable[[int], None]] = None,
             on_tick: Optional[Callable[[], Optional[float]]] = None, session: bool = False,
             boards: Optional[Sequence[str]] = None,
             on_progress: Optional[Callable[[int, int], None]] = None, priority: Optional[int] = None) -> Grant:
        """Take a board (or the first free pool member) in the queue's order: first come, first
        served, or as the queue policy of ``name`` orders waits (``policy``).

        ``timeout`` is the lock's ``-T``: after that many seconds (0: never)
        another waiter may reclaim it. ``budget`` is the total wait in seconds
        (None: forever, 0: one try); raises ``NotAcquiredError`` when it runs
        out or the wait is cancelled, ``AlreadyHeldError`` for a board the
        caller holds with no key or the same key.
        ``extra_fds`` are watched while waiting; ``on_extra(fd)`` may raise to
        abandon the wait (the agent uses it for client EOF and abort).
        ``on_tick()`` runs before every sleep, may raise, and returns the longest
        sleep it allows (the agent's keepalive), or None.
        ``session``: the lock belongs to this process (``run``): it is released
        when the process ends, and counts as dead if the process dies.
        ``boards`` narrows a pool to the members that suit the job.
        ``on_progress(position, total)`` is told the waiter's place among the live
        waiters for its boards (1: next) whenever it changes, as far as it knows.
        ``priority``: the wait's priority (None: what the inventory's ``[queue]`` gives its user
        and key); it orders the queue only under the ``priority`` policy.
        """
        ...

    def cancel(self, name: str, key: str = NO_KEY, force: bool = False) -> int:
        """End the caller's waits for ``name`` (a board or pool) with ``key`` (``force``: anyone's,
        each audited as ``force``); how many were asked to."""
        ...

    def confirm(self, board: str, grant: int) -> bool:
        """The caller has reported grant ``grant``: from now on the lock outlives its process (the
        PostgreSQL queue binds a grant to its client until then; the file engine's locks are files)."""
        ...

    def undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        """Give back grant number ``grant`` the caller could not report; False if it is not held so."""
        ...

    def check_held(self, name: str, key: Optional[str] = NO_KEY, boards: Optional[Sequence[str]] = None) -> str:
        """For ``run -n``: the board (of ``boards``, if given) the caller holds with ``key``
        (None: with any key, as ``mq.sh``'s ``-n`` checks only the owner), else ``NotHolderError``."""
        ...

    # -- releasing ---------------------------------------------------------------
    def signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        """Release ``name`` (a board), or the caller's locks in a pool (all with ``force``);
        ``NotHolderError`` when there is nothing of the caller's to release."""
        ...

    def end_session_lock(self, board: str, key: str, reason: str) -> bool:
        """A ``run`` job's end: release the lock its ``session`` wait took, if it is still its own."""
        ...

    # -- looking -----------------------------------------------------------------
    def info(self, name: str) -> List[BoardState]:
        """Each board of ``name``: its holder and the live waiters that want it, in queue order
        (``policy.order``: arrival order under FIFO)."""
        ...

    def dumpall(self, order: str = "inventory") -> List[BoardState]:
        """Every held board, in inventory order, or (``"directory"``) as ``mq.sh`` lists them."""
        ...

    def events(self, scope: Optional[str] = None, since: Optional[float] = None) -> List[Dict[str, Any]]:
        """The audit events (``time``, ``event``, ``user``, ``board`` or ``target``, ...) from ``since``
        on about ``scope`` (a board, or a pool with its members; None: all), oldest first."""
        ...

    def status(self, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """``{"now", "boards": [board states as on the wire], "estimates": {ticket: {"board", "eta",
        "basis"}}}`` for the boards of ``names`` (None: all); estimates cover the whole queue."""
        ...

    def set_offline(self, board: str, reason: str) -> Offline:
        """Take ``board`` out of service: pools skip it, a new wait for it alone fails at once with
        the reason, ``run`` refuses it; older tools see it held. Audited."""
        ...

    def note_health(self, board: str, failure: Optional[Failure]) -> Tuple[int, Optional[Offline]]:
        """A ``run``'s verdict on ``board`` (``health.judge``): a ``Failure`` is counted (None: a
        healthy run ends the row); once the row reaches the system's ``health_limit`` the board is
        taken offline with the reason. Returns (the row's length, the new offline state or None).
        Audited; a board with no ``health_limit`` is not watched: (0, None)."""
        ...

    def set_online(self, board: str) -> Optional[Offline]:
        """Put ``board`` back in service; what it was offline for (None: it was not). Audited."""
        ...


class JobEngine(Protocol):
    """What a ``run`` job (``run_host.run_job``) needs of an engine: every ``LockEngine``, or a bare
    job's stand-in (``bare.BareEngine``: the lock is held elsewhere, this host only boots)."""

    @property
    def inventory(self) -> Inventory: ...

    def wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
             extra_fds: Sequence[int] = (), on_extra: Optional[Callable[[int], None]] = None,
             on_tick: Optional[Callable[[], Optional[float]]] = None, session: bool = False,
             boards: Optional[Sequence[str]] = None,
             on_progress: Optional[Callable[[int, int], None]] = None, priority: Optional[int] = None) -> Grant: ...

    def check_held(self, name: str, key: Optional[str] = NO_KEY, boards: Optional[Sequence[str]] = None) -> str: ...

    def end_session_lock(self, board: str, key: str, reason: str) -> bool: ...

    def status(self, names: Optional[Sequence[str]] = None) -> Dict[str, Any]: ...

    def note_health(self, board: str, failure: Optional[Failure]) -> Tuple[int, Optional[Offline]]: ...


EngineFactory = Callable[[str, "Inventory"], "LockEngine"]
"""Opens an engine on a lab: ``(base, inventory)``, where ``base`` names where its locks live."""


__all__ = ["EngineFactory", "JobEngine", "LockEngine"]
