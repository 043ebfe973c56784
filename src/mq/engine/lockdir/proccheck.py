"""Is the process a file names the one that wrote it? Asked before mq signals a pid it read.

A pid in a ticket is only a claim: the process may have died and its pid gone
to another program, or the file may name someone else's process on purpose.
mq signals it only when the process belongs to the file's owner (real and
effective uid), runs mq (its command line is an mq command, ``python3 -m mq``
or the host engine's bootstrap), and started no later than the file was
written (a pid reused since is younger than the file).
"""

from __future__ import annotations

import os
import re

PROC = "/proc"
_MQ_COMMAND = re.compile(rb"(?:^|[\0/])mq(?:\.sh)?(?:\0|$)|\0-m\0mq(?:\0|$)|mq\.engine\.|mq\.transport\.")


def _boot_time() -> float:
    with open(f"{PROC}/stat", "rb") as handle:
        for line in handle:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def started_at(pid: int) -> float:
    """When ``pid`` started, in Unix seconds (OSError if it is gone or /proc cannot tell)."""
    with open(f"{PROC}/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def is_writer(pid: int, uid: int, written: float) -> bool:
    """``pid`` is an mq process of ``uid`` that started no later than ``written`` (Unix seconds)."""
    try:
        with open(f"{PROC}/{pid}/status", "rb") as handle:
            ids = next((line.split()[1:3] for line in handle if line.startswith(b"Uid:")), [])
        if [int(i) for i in ids] != [uid, uid]:
            return False
        with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
            if not _MQ_COMMAND.search(handle.read()):
                return False
        return started_at(pid) <= written + 1.0  # /proc's start time is in clock ticks, mtime may be coarse
    except (OSError, ValueError, IndexError):
        return False


__all__ = ["is_writer", "started_at"]
