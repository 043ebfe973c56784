"""A process that lets ``mq.sh sem -cancel`` end an ``mq`` waiter.

``mq.sh sem -cancel NAME -k KEY`` runs ``pkill -u USER -f "lockfile.*'KEY' >
'BASE/NAME.key'"`` on the lab host: it ends the shells of that user's
``mq.sh`` waiters (``legacy`` finds them the same way). While an ``mq`` waiter
sleeps, a sentinel stands beside it whose command line carries that text for
the target and each of its boards: ``sh -c 'read x' mq-waiting lockfile 'KEY' >
'BASE/NAME.key' ...``. ``pkill`` ends the sentinel; the waiter, reading the
sentinel's stdout, sees it end and gives up its wait as ``sem -cancel`` would
have it (exit 2). The sentinel reads its stdin, a pipe from the waiter, and so
ends by itself when the waiter ends, however it ends. It runs in a session of
its own, out of reach of the terminal's Ctrl+C. ``mq sem -cancel`` ends an
``mq`` waiter through its ticket, and leaves its sentinel alone
(``legacy.SENTINEL_MARK``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Optional, Sequence

from mq.engine.core.names import NO_KEY


class CancelSentinel:
    def __init__(self, proc: subprocess.Popen[bytes], watch_fd: int) -> None:
        self.proc = proc
        self.fd = watch_fd  # readable (EOF) once the sentinel has ended

    @classmethod
    def start(cls, base: str, names: Sequence[str], key: str) -> Optional[CancelSentinel]:
        """The sentinel for a wait for ``names`` (the target, then its boards) with ``key``;
        None where no shell can be started (the wait goes on without it)."""
        shown = key if key else NO_KEY
        marks = [f"'{shown}' > '{os.path.join(base, name + '.key')}'" for name in dict.fromkeys(names)]
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", "read x", "mq-waiting", "lockfile", *marks],
                                    stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
        except OSError:
            os.close(read_end)
            return None
        finally:
            os.close(write_end)
        return cls(proc, read_end)

    def ended(self) -> bool:
        """The sentinel is gone (``pkill``, or anything else that ended it)."""
        try:
            return os.read(self.fd, 1) == b""
        except BlockingIOError:
            return False

    def close(self) -> None:
        """End the sentinel (its stdin closes: ``read`` returns) and reap it."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


__all__ = ["CancelSentinel"]
