"""Grant records: ``.mq/holders/<board>.json``, what ``mq`` knows of a lock it made.

The grant number, pool, pid, whether a ``run`` session holds it, and the lock
file's identity (device, inode, mtime) so a record is trusted only while it
still describes the lock at the path.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from .fsutil import os_error, read_small, unlink_quiet, write_atomic
from .labpaths import LabPaths


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
        text = read_small(self.path(board))
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def drop(self, board: str) -> None:
        unlink_quiet(self.path(board))


__all__ = ["GrantRecords"]
