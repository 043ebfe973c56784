"""How ``mq.sh`` ends a command: its exit codes (it knows only 0, 1 and 2) and the lines it
prints on the way out, shared by ``sem`` (``mqsh``) and ``run`` (``mqsh_run``)."""

from __future__ import annotations

from typing import List, Sequence

from mq.client import service
from mq.engine.core.errors import AlreadyHeldError, NotAcquiredError, UnknownTargetError
from mq.engine.core.names import NO_KEY

OK, FAILED, NOT_ACQUIRED = 0, 1, 2
MISSING_VALUE = 2  # the shell's status when an option's value is missing


class Exit(Exception):
    """Leave with mq.sh's ``code`` after printing ``lines`` on stdout."""

    def __init__(self, code: int, lines: Sequence[str] = ()) -> None:
        super().__init__(code)
        self.code = code
        self.lines = list(lines)


def unknown_target(exc: UnknownTargetError) -> Exit:
    return Exit(FAILED, [f"System or pool '{exc.name}' does not exist. Valid systems are", *exc.systems,
                         "Valid pools are", " ".join(exc.pools)])


def already_held(exc: AlreadyHeldError) -> Exit:
    same = exc.held_key != NO_KEY and exc.held_key == exc.asked_key
    return Exit(NOT_ACQUIRED, [
        "Attempting to grab lock you already own with the same key. Please explicitly release" if same
        else "Attempting to grab lock you already own. Please explicitly release",
        f"Failed to acquire lock for system ({exc.name})"])


def gave_up(lab: service.Lab, name: str, exc: NotAcquiredError) -> Exit:
    """A wait that ended without the lock, as mq.sh says it: on a pool, first the member it
    picked (a free one, else the first) and then the rest about that member; lockfile's own
    line when the retries ran out (not for a cancelled wait)."""
    lines: List[str] = []
    board = name
    if name in lab.inventory.pools:
        states = service.sem_info(lab, name)
        board = next((s.board for s in states if s.holder is None), states[0].board)
        lines.append(board)
    if not exc.reason:
        lines.append(f'lockfile: Sorry, giving up on "{lab.config.base.rstrip("/")}/{board}.lock"')
    return Exit(NOT_ACQUIRED, [*lines, f"Failed to acquire lock for system ({board})"])


__all__ = ["FAILED", "MISSING_VALUE", "NOT_ACQUIRED", "OK", "Exit", "already_held", "gave_up", "unknown_target"]
