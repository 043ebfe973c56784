"""SIGINT/SIGTERM/SIGHUP handling that can be deferred over critical sections.

While waiting, a signal raises ``Interrupted`` at once (interrupting the
``select``). While a grant or release is half done, the signal is held back
and raised when the section ends, so the caller can undo a grant that raced
the signal instead of leaving a lock behind.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Dict, Iterator, Optional

from .errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalGuard:
    def __init__(self) -> None:
        self._depth = 0
        self.pending: Optional[int] = None
        self._saved: Dict[int, Any] = {}

    def install(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    def _handle(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self._depth:
            if self.pending is None:
                self.pending = signum
            return
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
