"""``mq.sh``'s own waiters on the lab host, so ``mq sem -cancel`` ends them too.

``mq.sh sem -wait`` runs, over SSH, a shell such as::

    sh -c "umask 0111 && lockfile -'8'  -r '-1' '<BASE>/<NAME>.lock' && rm -f '<BASE>/<NAME>.key'
           && printf '<KEY>' > '<BASE>/<NAME>.key' && ..."

and ``mq.sh sem -cancel`` ends it with
``pkill -u USER -f "lockfile.*'KEY' > 'BASE/NAME.key'"``. ``end_waiters`` does
the same from /proc (Linux only), with the key matched literally, and also
ends the shell's ``lockfile`` child: without a terminal nothing else would
stop it, and it would later take the lock with no key and leave it held.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

PROC = "/proc"


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    name: str


SENTINEL_MARK = b" mq-waiting lockfile "  # in the command line of an mq waiter's ``cancel_sentinel``


def waiter_pattern(base: str, boards: Sequence[str], key: str) -> re.Pattern[bytes]:
    """``lockfile`` followed later by ``'KEY' > 'BASE/NAME.key'`` for any of ``boards``
    (the key and paths are literal text, never a pattern)."""
    needles = [os.fsencode(f"'{key}' > '{os.path.join(base, board + '.key')}'") for board in boards]
    return re.compile(b"lockfile.*(?:" + b"|".join(re.escape(n) for n in needles) + b")", re.DOTALL)


def _status(pid: int, uid: int) -> Optional[_Proc]:
    """The process if its real and effective uid are ``uid`` (None if not, or gone)."""
    try:
        with open(f"{PROC}/{pid}/status", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    fields: Dict[bytes, bytes] = {}
    for line in text.splitlines():
        name, _, value = line.partition(b":")
        fields[name] = value.strip()
    ids = fields.get(b"Uid", b"").split()
    try:
        if len(ids) < 2 or int(ids[0]) != uid or int(ids[1]) != uid:
            return None
        ppid = int(fields.get(b"PPid", b"0"))
    except ValueError:
        return None
    return _Proc(pid=pid, ppid=ppid, name=fields.get(b"Name", b"").decode("utf-8", "replace"))


def _cmdline(pid: int) -> Optional[bytes]:
    """The arguments joined by single spaces, as ``pkill -f`` matches them."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.replace(b"\0", b" ")


def _comm(pid: int) -> Optional[str]:
    try:
        with open(f"{PROC}/{pid}/comm", "rb") as handle:
            return handle.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return None


def _ancestors(procs: Dict[int, _Proc]) -> set[int]:
    """This process and its parents (never signalled, whatever their command line)."""
    mine = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        proc = procs.get(pid)
        if proc is None:
            break
        pid = proc.ppid
    return mine


def _term(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False  # gone meanwhile (or its pid reused by someone we may not signal)
    return True


def end_waiters(base: str, boards: Sequence[str], key: str) -> int:
    """SIGTERM the caller's ``mq.sh`` waiter shells for ``boards`` of lock directory
    ``base`` (absolute) with ``key``, and their ``lockfile`` children.

    Only processes whose real and effective uid are the caller's are touched,
    never this process or its ancestors. Returns how many shells were ended
    (0 on systems without /proc).
    """
    if not boards or not sys.platform.startswith("linux") or not os.path.isdir(PROC):
        return 0
    uid = os.getuid()
    pattern = waiter_pattern(base, boards, key)
    try:
        entries = os.listdir(PROC)
    except OSError:
        return 0
    procs: Dict[int, _Proc] = {}
    for entry in entries:
        if entry.isdigit():
            proc = _status(int(entry), uid)
            if proc is not None:
                procs[proc.pid] = proc
    spared = _ancestors(procs)
    shells: List[int] = []
    for pid in procs:
        if pid in spared:
            continue
        line = _cmdline(pid)
        if line is not None and pattern.search(line) and SENTINEL_MARK not in line:
            shells.append(pid)  # (an mq waiter's sentinel is not one: its wait is cancelled through its ticket)
    matched = set(shells)
    children: Dict[int, List[int]] = {pid: [] for pid in shells}
    for proc in procs.values():
        if proc.ppid in matched and proc.pid not in matched and proc.pid not in spared \
                and _comm(proc.pid) == "lockfile":
            children[proc.ppid].append(proc.pid)
    ended = 0
    for pid in shells:
        # The lockfile first: it removes a lock it has just made, and the shell's `&&`
        # chain stops before writing a key (the shell may exit by itself before its TERM).
        hit = [_term(kid) for kid in children[pid] if _status(kid, uid) is not None]
        if (_status(pid, uid) is not None and _term(pid)) or any(hit):
            ended += 1
    return ended


__all__ = ["end_waiters", "waiter_pattern"]
