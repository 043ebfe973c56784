"""``mq.sh``'s waiters on the lab host, seen from ``/proc``, and the turn each is owed.

``mq.sh sem -wait`` (and its ``run``) waits on the host in a shell whose
``lockfile -W [-l T] -r R BASE/NAME.lock`` child tries the lock every W
seconds (``../shared/reference/mq-sh.md``, "What ``mq.sh`` runs on the lab host
while it waits"). ``mq`` is woken in milliseconds, so without help an ``mq``
waiter that came later would always win. So:

* ``scan`` lists those ``lockfile`` processes (any user) for boards in this
  lock directory: the board, the owner, the arrival (the process's start) and
  the retry period W. Each process's command line is read once per engine
  process (a wait that lasts reads only the processes started since).
* ``Turns`` gives the earliest such waiter of a free board its turn: an ``mq``
  waiter that arrived after it does not take the board for W seconds (at most
  ``MAX_TURN``) from when this engine first saw the board free with that waiter
  waiting, time for ``lockfile``'s next try. Waiters that arrived before it go
  first as ever. A turn is one per free spell: seeing the board held again
  ends it.

The processes are looked at only when a free board is about to be handed out,
and nothing is written anywhere: a planted process can at most leave a board
idle for ``MAX_TURN`` seconds per release.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mq.engine.core.names import user_name

from .legacy import PROC

DEFAULT_PERIOD = 8.0  # lockfile's own default sleep between tries
MAX_TURN = 60.0  # the longest a free board is left for one mq.sh waiter (its -w, capped)
MARGIN = 1.0  # seconds beyond the period: lockfile's sleep and a busy host
_SLEEP = re.compile(r"-([0-9]+)")
_KEY = re.compile(rb"printf '([^']*)' > '([^']*)\.key'")


@dataclass(frozen=True)
class LegacyWaiter:
    """One ``lockfile`` process waiting for a board of this lock directory."""

    board: str
    pid: int
    uid: int
    user: str
    since: float  # Unix time its process started: its arrival (read in clock ticks: see ``arrived``)
    period: float  # seconds between its tries (-W)
    key: str  # the key its mq.sh shell will store ("0": none known)

    @property
    def arrived(self) -> float:
        """The latest its process may have started: /proc gives the start in clock ticks, rounded
        down, so a ticket made within two ticks after ``since`` may well be the earlier."""
        return self.since + 2.0 / os.sysconf("SC_CLK_TCK")


def _lock_target(argv: List[bytes], base: str) -> Optional[Tuple[str, float]]:
    """(board, period) if ``argv`` is ``lockfile`` waiting (retries not 0) for ``BASE/NAME.lock``."""
    if not argv or os.path.basename(argv[0]) != b"lockfile":
        return None
    period, retries, board = DEFAULT_PERIOD, -1, None
    words = [w.decode(errors="replace") for w in argv[1:]]
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word in ("-r", "-l", "-s") and index < len(words):
            if word == "-r":
                retries = int(words[index]) if re.fullmatch(r"-?[0-9]+", words[index]) else -1
            index += 1
        elif word.startswith("-r") and re.fullmatch(r"-r-?[0-9]+", word):
            retries = int(word[2:])
        elif _SLEEP.fullmatch(word):
            period = float(word[1:])
        elif not word.startswith("-") and word.endswith(".lock") and os.path.dirname(word) == base:
            board = os.path.basename(word)[:-5]
    if board is None or retries == 0:
        return None
    return board, min(period, MAX_TURN)


def _stat(pid: int) -> Optional[Tuple[int, float]]:
    """(parent pid, start time as Unix time) of ``pid``."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return int(fields[1]), boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> List[bytes]:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
            return handle.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return []


def _key(parent: int, base: str, board: str) -> str:
    """The key the waiter's ``mq.sh`` shell will store, from its command line."""
    wanted = os.fsencode(os.path.join(base, board))
    for match in _KEY.finditer(b" ".join(_cmdline(parent))):
        if match.group(2) == wanted:
            return match.group(1).decode(errors="replace")
    return "0"


class Scan:
    """The ``lockfile`` waiters of one lock directory (``base``), command lines read once."""

    def __init__(self, base: str) -> None:
        self.base = os.path.normpath(base)
        self._seen: Dict[int, Optional[LegacyWaiter]] = {}

    def waiters(self, boards: Optional[Sequence[str]] = None) -> List[LegacyWaiter]:
        """Every live one (for ``boards``, if given), earliest first."""
        try:
            pids = {int(name) for name in os.listdir(PROC) if name.isdigit()}
        except OSError:
            return []
        for pid in set(self._seen) - pids:
            del self._seen[pid]
        for pid in pids - set(self._seen):
            self._seen[pid] = self._read(pid)
        found = [w for w in self._seen.values() if w is not None and (boards is None or w.board in boards)]
        return sorted(found, key=lambda w: w.since)

    def _read(self, pid: int) -> Optional[LegacyWaiter]:
        target = _lock_target(_cmdline(pid), self.base)
        if target is None:
            return None
        stat = _stat(pid)
        try:
            uid = os.stat(f"{PROC}/{pid}").st_uid
        except OSError:
            return None
        if stat is None:
            return None
        board, period = target
        return LegacyWaiter(board=board, pid=pid, uid=uid, user=user_name(uid), since=stat[1], period=period,
                            key=_key(stat[0], self.base, board))


class Turns:
    """Which free boards are an ``mq.sh`` waiter's turn (see the module's text)."""

    def __init__(self, scan: Scan) -> None:
        self.scan = scan
        self._start: Dict[str, Tuple[int, float]] = {}  # board -> (the waiter's pid, when its turn began)

    def owed(self, board: str) -> Optional[float]:
        """For a free ``board``: the arrival of the mq.sh waiter whose turn it is (tickets that
        arrived later must not take it); None when none is owed one."""
        waiters = self.scan.waiters([board])
        if not waiters:
            self._start.pop(board, None)
            return None
        first = waiters[0]
        pid, began = self._start.get(board, (0, 0.0))
        if pid != first.pid:
            began = time.time()
            self._start[board] = (first.pid, began)
        return first.arrived if time.time() < began + first.period + MARGIN else None

    def held(self, board: str) -> None:
        """The board is held (again): its next free spell is a new turn."""
        self._start.pop(board, None)

    def ends_in(self, boards: Sequence[str]) -> Optional[float]:
        """Seconds until the soonest running turn among ``boards`` ends (None: none runs)."""
        now = time.time()
        ends = []
        for board in boards:
            if board in self._start:
                waiters = self.scan.waiters([board])
                if waiters and waiters[0].pid == self._start[board][0]:
                    ends.append(self._start[board][1] + waiters[0].period + MARGIN - now)
        return max(0.0, min(ends)) + 0.01 if ends else None

    def running(self, board: str) -> bool:
        end = self.ends_in([board])
        return end is not None and end > 0.01


__all__ = ["MAX_TURN", "LegacyWaiter", "Scan", "Turns"]
