"""Grant records: ``.mq/holders/<board>.json``, what ``mq`` knows of a lock it made.

The grant number, pool, pid, whether a ``run`` session holds it, and the lock
file's identity (device, inode, mtime) so a record is trusted only while it
still describes the lock at the path.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from mq.engine.core.names import user_name

from .fsutil import os_error, read_owned, unlink_quiet, write_atomic
from .labpaths import LabPaths

OWNER, STAT = "_owner", "_stat"  # what a read adds to the record (never written)


class GrantRecords:
    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths

    def path(self, board: str) -> str:
        return os.path.join(self.paths.holders_dir, board + ".json")

    def write(self, board: str, record: Dict[str, Any]) -> None:
        path = self.path(board)
        try:
            write_atomic(path, json.dumps(record, sort_keys=True).encode(), self.paths.read_mode)
        except OSError as exc:
            raise os_error(exc, path, "record grant") from None

    def read(self, board: str) -> Optional[Dict[str, Any]]:
        """The record, its ``user`` the file's owner's name whatever it says, with ``OWNER``
        (the owner's uid) and ``STAT`` (the file read); ``lockstate.same_lock`` trusts it only
        for a lock of the same owner."""
        got = read_owned(self.path(board))
        if got is None or not got[0]:
            return None
        text, st = got
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        value.update({"user": user_name(st.st_uid), OWNER: st.st_uid, STAT: st})
        return value

    def drop(self, board: str) -> None:
        unlink_quiet(self.path(board))


__all__ = ["OWNER", "STAT", "GrantRecords"]
