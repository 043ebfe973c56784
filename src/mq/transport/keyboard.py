"""The user's keyboard during ``run -a`` (interactive console) and ``run -r`` (reservation).

``-a``: the terminal goes to no-echo, character-at-a-time mode (Ctrl+C still
interrupts the job); keystrokes go to the board; Ctrl+] or Ctrl+D detaches.
``-r``: Enter or Ctrl+D (end of input) releases the board.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from mq.engine.host.run_host import DETACH, EOF, RELEASE, STDIN, Command

CTRL_D, CTRL_RIGHT_BRACKET = 0x04, 0x1D


class Keyboard:
    def __init__(self, mode: str, fd: int | None = None) -> None:
        self.mode = mode  # "interactive" or "reserve"
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.closed = False

    def read(self) -> list[Command]:
        """What the bytes now waiting on the keyboard mean."""
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            data = b""
        return self.translate(data)

    def translate(self, data: bytes) -> list[Command]:
        if not data:
            self.closed = True
            return [(EOF, b"")]
        if self.mode == "reserve":
            return [(RELEASE, b"")] if (b"\n" in data or b"\r" in data or bytes([CTRL_D]) in data) else []
        for index, byte in enumerate(data):
            if byte in (CTRL_D, CTRL_RIGHT_BRACKET):
                head = data[:index]
                return ([(STDIN, head)] if head else []) + [(DETACH, b"")]
        return [(STDIN, data)]

    @contextlib.contextmanager
    def terminal(self) -> Iterator[None]:
        """Character mode without echo for ``-a`` on a terminal; restored on the way out."""
        if self.mode != "interactive" or not os.isatty(self.fd):
            yield
            return
        import termios

        saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)  # keep ISIG: Ctrl+C still stops the job
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        try:
            yield
        finally:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
