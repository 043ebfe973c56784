"""The audit log: ``audit.jsonl`` in the lock directory, one JSON object per line, append only."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from .errors import DiskError, LockDirError
from .fsutil import write_all
from .labpaths import LabPaths


class AuditLog:
    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths

    def record(self, event: str, **fields: Any) -> None:
        """Append one JSON line; best effort (a full disk must not stop a release)."""
        entry: Dict[str, Any] = {"time": round(time.time(), 3), "event": event, "user": self.paths.user}
        entry.update(fields)
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        try:
            fd = self.paths.open_shared(self.paths.audit_path, os.O_WRONLY | os.O_APPEND)
        except (LockDirError, DiskError):  # not Interrupted: a signal is never swallowed here
            return
        try:
            write_all(fd, line)
        except OSError:
            pass
        finally:
            os.close(fd)


__all__ = ["AuditLog"]
