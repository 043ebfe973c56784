"""``mq demo traffic``: a plausible history written into the built-in demo lab's audit log (the
records ``engine.host.demo.traffic`` makes), so ``mq status`` ETAs, ``mq history`` and ``mq stats``
show something real on the first day. Never into a real lab: only the demo lab mq made."""

from __future__ import annotations

import os
import time

from mq.engine.host.demo import traffic
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
        with open(lab.audit_path, "rb") if os.path.exists(lab.audit_path) else open(os.devnull, "rb") as old:
            existing = old.read()
        first_time = _first_time(existing)
        end = min(time.time() if now is None else now, first_time)
        records = traffic(days, end, seed if seed is not None else int(end))
        count = sum(r["event"] == "grant" for r in records)
        last = lab.counters.next_number("grants", by=count) if count else 0
        offset = last - count
        import json

        lines = []
        for record in records:
            record["grant"] = record["grant"] + offset
            lines.append(json.dumps({**record, "generated": True}, sort_keys=True))
        data = ("\n".join(lines) + "\n").encode() + existing if lines else existing
        temporary = f"{lab.audit_path}.demo{os.getpid()}"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, lab.audit_path)
    return len(records)


def _first_time(log: bytes) -> float:
    """The time of the log's first record (the history goes before it); infinity for none."""
    import json

    for line in log.splitlines():
        try:
            return float(json.loads(line)["time"])
        except (ValueError, KeyError, TypeError):
            continue
    return float("inf")


__all__ = ["MAX_DAYS", "add_traffic"]
