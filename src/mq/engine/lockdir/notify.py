"""File-system change notification: inotify through ctypes, polling as a fallback.

Waiters sleep in ``select`` on the inotify descriptor, so an idle waiter
costs no CPU and wakes within a fraction of a millisecond of a release.
Where inotify is missing (a non-Linux host) ``PollWatcher`` re-checks every
``POLL_INTERVAL`` seconds instead.
"""

from __future__ import annotations

import os
import select
import struct
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from mq.engine.core import libc

if TYPE_CHECKING:
    import ctypes

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

POLL_INTERVAL = 0.1
_HEADER = struct.Struct("iIII")

Event = Tuple[str, int, str]  # (watched directory, mask, file name)


class InotifyWatcher:
    """Watches directories (and single files); ``wait`` returns their events."""

    def __init__(self, lib: ctypes.CDLL, dirs: Dict[str, int]) -> None:
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise libc.last_error()
        self.fd: int = fd
        self._libc = lib
        self._paths: Dict[int, str] = {}
        try:
            for path, mask in dirs.items():
                self.add(path, mask | IN_ONLYDIR)
        except OSError:
            os.close(fd)
            raise

    def add(self, path: str, mask: int) -> None:
        """Watch one more path (a file watch ends by itself when the file is deleted)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_DONT_FOLLOW)
        if wd < 0:
            raise libc.last_error(path)  # FileNotFoundError when the path is gone
        self._paths[wd] = path

    def keep(self, wanted: Dict[str, int]) -> bool:
        """Watch exactly ``{path: mask}`` (adding is idempotent per inode); False if a path vanished."""
        complete = True
        for path, mask in wanted.items():
            try:
                self.add(path, mask)
            except FileNotFoundError:
                complete = False
        for wd, watched in list(self._paths.items()):
            if watched not in wanted:
                self._libc.inotify_rm_watch(self.fd, wd)
                del self._paths[wd]
        return complete

    def fileno(self) -> int:
        return self.fd

    def read_events(self) -> List[Event]:
        events: List[Event] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset:offset + length].rstrip(b"\0").decode("utf-8", "replace")
                offset += length
                if mask & IN_IGNORED:  # the watched file is gone; its wd is dead
                    self._paths.pop(wd, None)
                    continue
                events.append((self._paths.get(wd, ""), mask, name))

    def wait(self, timeout: Optional[float], extra: Sequence[int] = ()) -> Tuple[List[Event], List[int]]:
        """Sleep until events arrive, an ``extra`` fd is readable, or ``timeout``."""
        ready, _, _ = select.select([self.fd, *extra], [], [], timeout)
        events = self.read_events() if self.fd in ready else []
        return events, [fd for fd in ready if fd != self.fd]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PollWatcher:
    """Fallback: reports an overflow (re-check everything) every POLL_INTERVAL."""

    def __init__(self, dirs: Dict[str, int]) -> None:
        self.fd = -1
        self._dirs = dirs

    def fileno(self) -> int:
        return -1

    def add(self, path: str, mask: int) -> None:
        pass

    def keep(self, wanted: Dict[str, int]) -> bool:
        return True

    def read_events(self) -> List[Event]:
        return []

    def wait(self, timeout: Optional[float], extra: Sequence[int] = ()) -> Tuple[List[Event], List[int]]:
        step = POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)
        ready, _, _ = select.select(list(extra), [], [], step)
        return [("", IN_Q_OVERFLOW, "")], list(ready)

    def close(self) -> None:
        pass


def watch(dirs: Dict[str, int]) -> InotifyWatcher | PollWatcher:
    """A watcher for ``{directory: mask}``; inotify when the kernel offers it."""
    lib = libc.load() if libc.function("inotify_init1") is not None else None
    if lib is not None and os.environ.get("MQ_NO_INOTIFY") != "1":
        try:
            return InotifyWatcher(lib, dirs)
        except OSError:
            pass
    return PollWatcher(dirs)
