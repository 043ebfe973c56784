"""Board health: ``mq run`` failures that are the board's fault, counted per board.

A run fails *because of the board* when

* the boot command exits non-zero before the console printed anything (``boot``);
* the console ends before the completion text without printing anything (``silent``);
* the ``-d`` deadline passes before the console printed anything (``dark``);
* the system's ``power_off`` fails (``power_off``).

Test failures (the ``-e`` text, a ``-d`` timeout after the console printed
something, a console that printed and then ended) are never the board's:
they do not count. A run whose board printed something and powered off (if
it has ``power_off``) proves the board alive and ends the row, as does
``mq online``. After ``health_limit`` board failures in a row (the system's,
in the inventory; absent: never) the board takes itself offline with the
reason, so pools stop giving it out.

``judge`` is the rule, the same for every engine; the file engine keeps the
row in ``.mq/health/<board>.json`` (``health_rows``), other engines where they
keep their state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple, Union

from .outcomes import CONSOLE_ENDED, TIMED_OUT

if TYPE_CHECKING:
    from .results import Offline

BOOT, SILENT, DARK, POWER_OFF = "boot", "silent", "dark", "power_off"
PLURAL = {BOOT: "boot failures", SILENT: "silent consoles", DARK: "dark boots", POWER_OFF: "power_off failures"}
HISTORY = 20  # failures kept per board (the row can be longer; its count is exact)


@dataclass(frozen=True)
class Failure:
    kind: str  # one of BOOT, SILENT, DARK, POWER_OFF
    detail: str  # what happened, for the offline reason and the audit log


def judge(outcome: str, printed: int, boot_status: Optional[int], power_problem: str) -> Union[Failure, bool]:
    """The board's part in a run's end: a ``Failure``, True (the board proved itself alive) or
    False (nothing to say about the board: an interrupted run, a reservation, a lost lock).
    ``printed``: console bytes seen; ``boot_status``: the boot command's exit status if it ended."""
    if power_problem:
        return Failure(POWER_OFF, power_problem)
    if printed == 0 and outcome == CONSOLE_ENDED:
        if boot_status and boot_status < 0:
            return Failure(BOOT, f"the boot command was killed by signal {-boot_status} before any console output")
        if boot_status:
            return Failure(BOOT, f"the boot command exited {boot_status} before any console output")
        return Failure(SILENT, "the console ended before any output")
    if printed == 0 and outcome == TIMED_OUT:
        return Failure(DARK, "no console output before the -d deadline")
    return printed > 0


@dataclass(frozen=True)
class Row:
    """A board's current row of board failures (oldest first, the last ``HISTORY``)."""

    count: int = 0
    failures: Tuple[Tuple[str, str, float], ...] = ()  # (kind, detail, time)

    def reason(self) -> str:
        kinds = {kind for kind, _, _ in self.failures}
        what = PLURAL[next(iter(kinds))] if len(kinds) == 1 else "board failures"
        _, detail, when = self.failures[-1]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        return f"health: {self.count} {what} in a row, last at {stamp} ({detail})"


def note_line(board: str, failure: Optional[Failure], count: int, limit: int, offline: Optional[Offline]
              ) -> Optional[str]:
    """What ``run`` tells the user about a verdict just counted (None: nothing)."""
    if offline is not None:
        return f"{board} is now offline: {offline.reason} (mq online {board} puts it back)"
    if failure is not None and count:
        return f"{board}: {failure.detail}: board failure {count} of {limit} in a row (health_limit)"
    return None


__all__ = ["BOOT", "DARK", "HISTORY", "POWER_OFF", "SILENT", "Failure", "Row", "judge", "note_line"]
