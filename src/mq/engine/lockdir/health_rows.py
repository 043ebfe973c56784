"""The file engine's board health rows: ``.mq/health/<board>.json`` (the rules: ``health``)."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from mq.engine.core.health import HISTORY, Failure, Row

from .fsutil import os_error, read_small, write_atomic

if TYPE_CHECKING:
    from mq.engine.core.results import Offline

    from .labdir import LabDir
    from .labpaths import LabPaths


def path(lab: LabPaths, board: str) -> str:
    return os.path.join(lab.health_dir, board + ".json")


def read(lab: LabPaths, board: str) -> Row:
    text = read_small(path(lab, board))
    if text is None:
        return Row()
    try:
        raw = json.loads(text)
        failures = tuple((str(k), str(d), float(t)) for k, d, t in raw["failures"])
        return Row(int(raw["count"]), failures)
    except (ValueError, KeyError, TypeError):
        return Row()  # unreadable: the row starts again


def _write(lab: LabPaths, board: str, row: Row) -> None:
    where = path(lab, board)
    record = {"v": 1, "count": row.count, "failures": [list(f) for f in row.failures]}
    try:
        write_atomic(where, json.dumps(record).encode(), lab.read_mode)
    except OSError as exc:
        raise os_error(exc, where, "record the board's health") from None


def reset(lab: LabPaths, board: str) -> bool:
    """End the board's row (a healthy run, ``mq online``); whether there was one."""
    try:
        os.unlink(path(lab, board))
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise os_error(exc, path(lab, board), "reset the board's health") from None


def note(lab: LabDir, limit: int, board: str, failure: Optional[Failure],
         take_offline: Callable[[str, str], Optional[Offline]]) -> Tuple[int, Optional[Offline]]:
    """Count ``failure`` against ``board`` (None: a healthy run ends the row); take the board
    offline (``take_offline(board, reason)``) once its row reaches ``limit``, the system's
    ``health_limit``. (row length, the offline state if the board was taken offline now)."""
    if not limit:  # health_limit not set: not watched
        return 0, None
    if failure is None:
        with lab.mutex():
            had = read(lab, board).count
            reset(lab, board)
        if had:
            lab.audit.record("health", board=board, outcome="healthy", ended_row=had)
        return 0, None
    with lab.mutex():
        row = read(lab, board)
        failures: List[Tuple[str, str, float]] = [*row.failures, (failure.kind, failure.detail, time.time())]
        row = Row(row.count + 1, tuple(failures[-HISTORY:]))
        _write(lab, board, row)
    lab.audit.record("health", board=board, outcome=failure.kind, detail=failure.detail, count=row.count,
                     limit=limit)
    if row.count < limit:
        return row.count, None
    return row.count, take_offline(board, row.reason())


__all__ = ["note", "path", "read", "reset"]
