"""Wake a waiter when a ticket ahead of it leaves the queue, without inotify.

A waiter that is not at the head for any of its boards has nothing to watch
in the lock directory: only a ticket ahead of it leaving (granted, cancelled
or dead) can change its lot. For each such ticket, a thread blocks in
``flock(LOCK_SH)`` on the ticket file, which its owner holds exclusively
while it waits; the kernel lets the thread through the moment the owner
closes it or dies, and the thread rings the bell: one byte-line on a pipe
the waiter sleeps on. Idle waiters cost nothing and need no inotify
instance, so hundreds of them (past ``fs.inotify.max_user_instances``) still
sleep, and a release wakes only the waiters it concerns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from typing import Dict, List


class Doorbell:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        for fd in (self._read, self._write):
            os.set_inheritable(fd, False)
        self._watching: Dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._read

    def watch(self, path: str, name: str) -> None:
        """Ring when the ticket at ``path`` is released (once per ticket)."""
        with self._lock:
            if name in self._watching:
                return
            thread = threading.Thread(target=self._block, args=(path, name), name=f"mq-bell-{name}", daemon=True)
            self._watching[name] = thread
        thread.start()

    def _block(self, path: str, name: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_SH)  # returns when the owner leaves or dies
            finally:
                os.close(fd)
        with contextlib.suppress(OSError):  # ring first: a watch() meanwhile is then a no-op, not a second ring
            os.write(self._write, (name + "\n").encode())
        with self._lock:
            self._watching.pop(name, None)

    def rung(self) -> List[str]:
        """Names of the tickets that left since the last call."""
        data = b""
        while True:
            try:
                chunk = os.read(self._read, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [n for n in data.decode("utf-8", "replace").split("\n") if n]
