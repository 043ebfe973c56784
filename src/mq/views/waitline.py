"""The waiting line on stderr: where you are in the queue, who holds the board, when your turn comes.

On a terminal: one live line (rich), redrawn each second for the elapsed time
and whenever the queue moves, gone when the board comes. Not on a terminal (a
CI log): plain ``mq: `` lines, one when the wait starts, one when the place
changes (at most one every ``CHANGE_GAP`` seconds), and a reminder every
``REMINDER`` seconds while nothing changes. Never on stdout.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Dict, List, Optional, TextIO

from mq.engine.core.errors import safe_text

from .render import PREFIX, clock, duration, held_text, offline_text, priority_text

CHANGE_GAP = 5.0  # seconds between two "place changed" lines in a log
REMINDER = 60.0  # seconds without a change before a log is reminded the wait goes on


def describe(event: Dict[str, Any], waited: float, since_event: float = 0.0) -> str:
    """``position 2 of 3 for trio; b1 held by alice (12m, key ci-42), b2 by bob (-T 1800, 3m); ETA
    14:32 (in 18m: median hold of b1 (40 grants)); waited 3m``. ``since_event``: seconds since the
    event was made: the holders' ages and the ETA go on from it (``overdue by`` once it has passed)."""
    now = float(event.get("now") or time.time()) + max(0.0, since_event)
    parts = [f"position {event.get('position', '?')} of {event.get('total', '?')} for "
             f"{safe_text(str(event.get('target', '')))}"
             f"{priority_text(int(event.get('priority') or 0), event.get('effective_priority'))}"]
    held: List[str] = []
    for h in event.get("holders") or []:
        key = h.get("key")
        held.append(held_text(str(h["board"]), str(h.get("user")), now - float(h.get("since") or now),
                              None if key is None else str(key), h.get("timeout")))
    held += [offline_text(str(o["board"]), str(o.get("reason"))) for o in event.get("offline") or []]
    if held:
        parts.append(", ".join(held))
    eta = event.get("eta")
    if eta is None:
        parts.append("ETA unknown" + (f" ({event['eta_basis']})" if event.get("eta_basis") else ""))
    elif eta < now - 1:  # its time passed and the board has not come: say so, not "now" for ever
        parts.append(f"overdue by {duration(now - eta)} ({event.get('eta_basis')})")
    elif eta <= now + 1:
        parts.append("ETA now")
    else:
        parts.append(f"ETA {clock(eta, now)} (in {duration(eta - now)}: {event.get('eta_basis')})")
    parts.append(f"waited {duration(waited)}")
    return "; ".join(parts)


class WaitLine:
    """Shown from the first ``queue`` event until ``close()``; safe to close more than once."""

    def __init__(self, stream: Optional[TextIO] = None, tty: Optional[bool] = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._event: Optional[Dict[str, Any]] = None
        self._event_at = 0.0  # monotonic time the event came
        self._place: Optional[tuple[Any, Any]] = None
        self._lock = threading.Lock()
        self._changed = False
        self._last_line = 0.0
        self._stop = threading.Event()
        self._live: Any = None
        self._thread: Optional[threading.Thread] = None

    def update(self, event: Dict[str, Any]) -> None:
        with self._lock:
            self._event = event
            self._event_at = time.monotonic()
            place = (event.get("position"), event.get("total"))
            if place != self._place:
                self._place = place
                self._changed = True
        if self.tty:
            self._start_live()
        elif self._thread is None:
            self._thread = threading.Thread(target=self._log_loop, name="mq-waitline", daemon=True)
            self._thread.start()

    def text(self) -> str:
        with self._lock:
            event, event_at = self._event, self._event_at
        now = time.monotonic()
        return "" if event is None else describe(event, now - self.started, now - event_at)

    # -- a terminal ---------------------------------------------------------------------------------
    def _start_live(self) -> None:
        if self._live is not None:
            self._live.refresh()
            return
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        console = Console(file=self.stream, highlight=False)
        self._live = Live(get_renderable=lambda: Text(PREFIX + "waiting: " + self.text(), no_wrap=True,
                                                       overflow="ellipsis"),
                          console=console, refresh_per_second=1, transient=True, redirect_stdout=False,
                          redirect_stderr=False)
        self._live.start()

    # -- a log --------------------------------------------------------------------------------------
    def _log_loop(self) -> None:
        while True:
            with self._lock:
                changed = self._changed
            now = time.monotonic()
            if changed and now - self._last_line >= CHANGE_GAP:
                self._say("waiting: " if self._last_line == 0.0 else "queue moved: ")
            elif now - self._last_line >= REMINDER:
                self._say("still waiting: ")
            wake = (self._last_line + CHANGE_GAP if changed else self._last_line + REMINDER) - time.monotonic()
            if self._stop.wait(max(0.2, min(wake, REMINDER))):
                return

    def _say(self, lead: str) -> None:
        with self._lock:
            self._changed = False
        self._last_line = time.monotonic()
        try:
            self.stream.write(PREFIX + lead + self.text() + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone: the wait itself goes on
            self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()
        thread = self._thread
        # not started: a signal landed between making the thread and starting it (the chaos
        # trials saw HUP there: "cannot join thread before it is started", exit 70)
        if thread is not None and thread.ident is not None and thread is not threading.current_thread():
            thread.join(timeout=1)


__all__ = ["WaitLine", "describe"]
