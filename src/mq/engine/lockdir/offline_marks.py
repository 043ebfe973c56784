"""Offline marks: ``.mq/offline/<board>.json``, a board taken out of service (``mq offline``).

The mark says why, by whom and since when, and, once it is in place, which
file is the board's *maintenance lock* (device, inode, owner, mtime, as a
grant record identifies its lock): the lock file that keeps ``lockfile(1)``
and ``mq.sh`` off the board. While the mark exists the board is offline to
``mq``, whatever its lock file says; the actions are in ``maintenance``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from mq.engine.core.errors import safe_text
from mq.engine.core.names import user_name
from mq.engine.core.results import Holder, Offline

from . import forged
from .fsutil import os_error, read_owned, write_atomic
from .labdir import LabDir
from .labpaths import LabPaths

Identity = Tuple[int, int, int, int]  # (dev, ino, uid, mtime_ns) of the maintenance lock


@dataclass(frozen=True)
class Mark:
    reason: str
    user: str
    since: float  # Unix seconds
    lock: Optional[Identity] = None  # the maintenance lock, once it is in place

    def holds(self, holder: Optional[Holder]) -> bool:
        """``holder`` was read from the maintenance lock itself."""
        return holder is not None and self.lock == (holder.dev, holder.ino, holder.uid, holder.since_ns)

    def offline(self, holder: Optional[Holder]) -> Offline:
        """What the engine reports, ``holder`` being the board's lock now."""
        return Offline(reason=self.reason, user=self.user, since=self.since, locked=self.holds(holder))


def path(lab: LabPaths, board: str) -> str:
    return os.path.join(lab.offline_dir, board + ".json")


def exists(lab: LabPaths, board: str) -> bool:
    """Cheap (one ``lstat``): the board is offline."""
    return os.path.lexists(path(lab, board))


def read(lab: LabDir, board: str) -> Optional[Mark]:
    """The board's mark, or None (not offline; an unreadable mark counts as offline, reason unknown).

    Judged by its file's owner: a mark written by ``mq offline`` names its writer, and one
    naming a maintenance lock was written by that lock's owner (the process that put the
    lock in place writes the mark). One that says otherwise is forged: set aside, not believed.
    """
    where = path(lab, board)
    got = read_owned(where)
    if got is None:
        return Mark(reason="(unreadable offline mark)", user="?", since=0.0) if os.path.lexists(where) else None
    text, st = got
    try:
        raw = json.loads(text)
        lock = raw.get("lock")
        identity: Optional[Identity] = None
        if isinstance(lock, list) and len(lock) == 4 and all(isinstance(n, int) for n in lock):
            identity = (lock[0], lock[1], lock[2], lock[3])
        mark = Mark(reason=str(raw["reason"]), user=str(raw["user"]), since=float(raw["since"]), lock=identity)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return Mark(reason="(unreadable offline mark)", user="?", since=0.0)
    owner = user_name(st.st_uid)
    if identity is not None and identity[2] != st.st_uid:
        claim = f"a maintenance lock of {user_name(identity[2])}, in a mark written by {owner}"
    elif identity is None and mark.user != owner:
        claim = f"offline by {safe_text(mark.user)}, in a mark written by {owner}"
    else:
        return mark
    forged.set_aside(lab, where, st, "offline-mark", claim)
    return None


def write(lab: LabPaths, board: str, mark: Mark) -> None:
    """Write the mark atomically (a reader sees the old one or the new one, never half)."""
    record: Dict[str, Any] = {"v": 1, "reason": mark.reason, "user": mark.user, "since": mark.since,
                              "lock": list(mark.lock) if mark.lock else None}
    where = path(lab, board)
    try:
        write_atomic(where, json.dumps(record, sort_keys=True).encode(), lab.read_mode)
    except OSError as exc:
        raise os_error(exc, where, "record the board offline") from None


def drop(lab: LabPaths, board: str) -> None:
    where = path(lab, board)
    try:
        os.unlink(where)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise os_error(exc, where, "put the board back online") from None


__all__ = ["Identity", "Mark", "drop", "exists", "path", "read", "write"]
