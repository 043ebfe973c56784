"""``mq demo traffic``: a plausible history written into the built-in demo lab's audit log (the
records ``engine.host.demo.traffic`` makes), so ``mq status`` ETAs, ``mq history`` and ``mq stats``
show something real on the first day. Never into a real lab: only the demo lab mq made."""

from __future__ import annotations

import json
import os
import stat
import time

from mq.engine.host.demo import traffic
from mq.engine.lockdir.fsutil import write_atomic
from mq.engine.lockdir.labdir import LabDir
from mq.settings.config import Config
from mq.settings.errors import BadInputError, LockDirError

MAX_DAYS = 90


def add_traffic(config: Config, days: int, now: float | None = None, seed: int | None = None) -> int:
    """Write ``days`` of history before what the demo lab's log holds; the records written. The
    grants are numbered from the lab's counter on, so later grants keep counting up."""
    if not config.default_lab:
        raise BadInputError("mq demo traffic writes a made-up history: only into the built-in demo lab "
                            "(with no configuration), never into a configured lab")
    if not 1 <= days <= MAX_DAYS:
        raise BadInputError(f"--days {days}: out of range (1 to {MAX_DAYS})")
    if not os.path.isdir(config.base):
        raise LockDirError(config.base, "the demo lab does not exist yet (any command makes it: mq systems)")
    lab = LabDir(config.base)
    with lab.mutex():
        existing = _read_log(lab.audit_path)
        end = min(time.time() if now is None else now, _first_time(existing))
        records = traffic(days, end, seed if seed is not None else int(end))
        count = sum(r["event"] == "grant" for r in records)
        offset = (lab.counters.next_number("grants", by=count) - count) if count else 0
        lines = [json.dumps({**r, "grant": r["grant"] + offset}, sort_keys=True) for r in records]
        write_atomic(lab.audit_path, "".join(line + "\n" for line in lines).encode() + existing, lab.read_mode)
    return len(records)


def _read_log(path: str) -> bytes:
    """The audit log as it is (empty when there is none yet): never through a symlink or a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb") as log:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LockDirError(path, "the audit log is not a regular file")
        return log.read()


def _first_time(log: bytes) -> float:
    """The time of the log's first record (the history goes before it); infinity for none."""
    for line in log.splitlines():
        try:
            return float(json.loads(line)["time"])
        except (ValueError, KeyError, TypeError):
            continue
    return float("inf")


__all__ = ["MAX_DAYS", "add_traffic"]
