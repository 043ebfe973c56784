"""The lab's shared counters: ``.mq/grants`` (fencing tokens) and ``.mq/seq`` (ticket arrival order)."""

from __future__ import annotations

import contextlib
import errno
import json
import os

from mq.engine.core.errors import LockDirError

from .audit import AuditLog
from .fsutil import os_error, read_owned
from .history import read_events
from .labpaths import LabPaths

COUNTER_WIDTH = 20
AUDIT_TAIL = 4 << 20  # bytes of the audit log read back to recover a damaged grant counter


class Counters:
    def __init__(self, paths: LabPaths, audit: AuditLog) -> None:
        self.paths = paths
        self.audit = audit

    def next_number(self, name: str, by: int = 1) -> int:
        """Increment and return a fixed-width counter (call with the mutex held); rewrites in
        place (no new blocks). ``by``: a block of that many numbers, the last returned."""
        path = os.path.join(self.paths.state, name)
        fd = self.paths.open_shared(path)
        try:
            raw = os.pread(fd, 4 * COUNTER_WIDTH, 0)
            digits = raw.strip()
            if digits.isdigit() and len(digits) <= COUNTER_WIDTH and raw.count(b"\n") <= 1:
                value = int(digits) + by
            else:  # new, or damaged: never go back below a number already handed out
                floor = self._floor(name)
                value = floor + by
                if raw or floor:
                    self.audit.record("counter-recovered", counter=name, found=raw[:40].decode("ascii", "replace"),
                                      restarted_at=value)
            data = f"{value:0{COUNTER_WIDTH}d}\n".encode()
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(errno.ENOSPC, "short write")
            os.ftruncate(fd, len(data))  # nothing of a longer, damaged content stays behind
        except OSError as exc:
            raise os_error(exc, path, "update counter") from None
        finally:
            os.close(fd)
        return value

    def _floor(self, name: str) -> int:
        """The highest number of counter ``name`` still in evidence (queued tickets for
        ``seq``; holder records and the audit log for ``grants``)."""
        best = 0
        if name == "seq":
            with contextlib.suppress(OSError):
                for entry in os.listdir(self.paths.queue_dir):
                    digits = entry[1:].split("-", 1)[0]
                    if entry.startswith("T") and digits.isdigit():
                        best = max(best, int(digits))
            return best
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.paths.holders_dir):
                got = read_owned(os.path.join(self.paths.holders_dir, entry))
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    best = max(best, int(json.loads(got[0]).get("grant", 0))) if got else best
        with contextlib.suppress(LockDirError):  # never blocks, never reads more than the tail
            for event in read_events(self.paths.audit_path, tail=AUDIT_TAIL)[0]:
                with contextlib.suppress(ValueError, TypeError):
                    best = max(best, int(event.get("grant") or 0))
        return best


__all__ = ["COUNTER_WIDTH", "Counters"]
