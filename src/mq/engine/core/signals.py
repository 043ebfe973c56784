"""SIGINT/SIGTERM/SIGHUP handling with deferral and explicit safe points.

Outside a deferred section a signal raises ``Interrupted`` at once. Inside
one (a grant being made, a wait whose result must reach the caller, a
cleanup) the signal is only recorded; a ``select`` still wakes, because the
signal also writes to ``wakeup_fd``, and the waiting code calls ``check()`` at
its safe points, where nothing is half done. So a grant is either reported
to the user or given back, never kept silently.

A signal that lands while a module is being imported is recorded too, as in a
deferred section: raised there it would leave a half-made module or come out
as another error (``RuntimeError: Error calling __set_name__`` from inside a
dataclass). Outside a deferred section nothing may call ``check()`` soon (the
main thread may next block in a join), so an alarm looks again every
``RETRY_SECONDS`` and raises it once the import is over. A signal ignored when
the process started (``nohup``) stays ignored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any, Dict, Iterator, List, Optional

from .errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
IMPORT_FROZEN = "<frozen importlib._bootstrap"  # the import system's frames (``_external`` too)
IMPORT_FILES = ("importlib/_bootstrap.py", "importlib/_bootstrap_external.py")  # -X frozen_modules=off
RETRY_SECONDS = 0.02  # a signal held back by an import is looked at again this often


def importing(frame: Optional[FrameType]) -> bool:
    """``frame`` (where a signal landed) runs inside an import, however deep."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(IMPORT_FROZEN) or filename.endswith(IMPORT_FILES):
            return True
        frame = frame.f_back
    return False


class SignalGuard:
    def __init__(self) -> None:
        self._depth = 0
        self.pending: Optional[int] = None
        self._saved: Dict[int, Any] = {}
        self.received: Optional[int] = None  # the last signal seen, handled or not yet
        self.nudged = False
        self.wakeup_fd: Optional[int] = None  # readable after any handled signal
        self._write_fd: Optional[int] = None

    def install(self) -> SignalGuard:
        if threading.current_thread() is not threading.main_thread() or self._saved:
            return self
        read_fd, write_fd = os.pipe()
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self.wakeup_fd, self._write_fd = read_fd, write_fd
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in HANDLED:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # ignored at start (nohup's SIGHUP, a background job's SIGINT): stays ignored
            self._saved[signum] = signal.signal(signum, self._handle)
        self._saved[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._nudge)
        self._saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._retry)
        return self

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def _nudge(self, _signum: int, _frame: Optional[FrameType]) -> None:
        """SIGUSR1 from ``sem -cancel``: look at your ticket (never an interrupt)."""
        self.nudged = True

    def restore(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()
        if self.wakeup_fd is not None and self._write_fd is not None:
            signal.set_wakeup_fd(-1)
            os.close(self.wakeup_fd)
            os.close(self._write_fd)
            self.wakeup_fd = self._write_fd = None

    @property
    def wake_fds(self) -> List[int]:
        """Descriptors to add to a ``select`` that must notice signals while deferred."""
        return [] if self.wakeup_fd is None else [self.wakeup_fd]

    def check(self) -> None:
        """A safe point: raise a recorded signal now, even inside a deferred section."""
        if self.wakeup_fd is not None:
            with contextlib.suppress(OSError):
                while os.read(self.wakeup_fd, 512):
                    pass
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)

    def settle(self) -> None:
        """The command's result is out: a signal recorded meanwhile changes nothing now."""
        self.pending = None

    def finish(self) -> None:
        """The command is over, its result out: from now on a signal is only recorded."""
        self._depth += 1

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received = signum
        if self._depth or importing(frame):  # taken at the next safe point (``check``)
            if self.pending is None:
                self.pending = signum
            if not self._depth:  # held back by an import only: raised when it is over
                signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
            return
        self.pending = None
        raise Interrupted(signum)

    def _retry(self, _signum: int, frame: Optional[FrameType]) -> None:
        """The alarm after a signal an import held back: raise it now, unless another
        import is running (look again) or a deferred section took it over (its ``check``)."""
        if self.pending is None or self._depth:
            return
        if importing(frame):
            signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
            return
        signum, self.pending = self.pending, None
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def raise_pending(self) -> None:
        if self.pending is not None and not self._depth:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


# The process-wide guard; harmless when never installed (signals keep defaults).
GUARD = SignalGuard()
