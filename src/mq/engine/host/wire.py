"""The agent's side of the wire: the registry of request handlers (``operation``), and reading
lines and raw frames from the client's stream (``LineChannel``)."""

from __future__ import annotations

import inspect
import os
import select
import signal
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

from mq.engine.core import arguments
from mq.engine.core.errors import ClientGone

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """A request's handler, and the arguments it takes (each checked by ``arguments.ARGUMENTS``);
    ``checked_by_handler``: it takes any fields (``**args``) and checks them itself."""

    handler: Callable[..., Any]
    accepted: Tuple[str, ...]
    required: Tuple[str, ...]
    checked_by_handler: bool


OPERATIONS: Dict[str, Operation] = {}  # request name -> its Agent method, collected at import


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register an ``Agent`` method as the handler of request ``name``; its parameters are
    the request's arguments, each checked at the boundary by the check of its name in
    ``arguments.ARGUMENTS`` (a request with others, or without a required one, is refused)."""

    def register(handler: Handler) -> Handler:
        params = list(inspect.signature(handler).parameters.values())[1:]  # after self
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unchecked = [p.name for p in named if p.name not in arguments.ARGUMENTS]
        if unchecked:
            raise TypeError(f"request {name}: no check for argument(s) {', '.join(unchecked)} in arguments.ARGUMENTS")
        OPERATIONS[name] = Operation(handler, tuple(p.name for p in named),
                                     tuple(p.name for p in named if p.default is p.empty),
                                     any(p.kind == p.VAR_KEYWORD for p in params))
        return handler

    return register


def abort_signal(message: Dict[str, Any]) -> int:
    """The signal an ``abort`` names (one the client could have caught), else SIGINT."""
    signum = message.get("signum")
    valid = {int(s) for s in signal.Signals}
    return signum if isinstance(signum, int) and not isinstance(signum, bool) and signum in valid else signal.SIGINT


def frame_size(message: Dict[str, Any]) -> int:
    """The byte count ``n`` a frame header announces (keystrokes during a job)."""
    size = message.get("n", 0)
    arguments.integer(0, arguments.MAX_UPLOAD)("n", size)
    return int(size)


class LineChannel:
    """Unbuffered line reader on a file descriptor (safe to ``select`` on)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.eof = False

    def fill(self) -> None:
        data = os.read(self.fd, 65536)
        if not data:
            self.eof = True
        self._buffer += data

    def has_line(self) -> bool:
        """A whole message is buffered already (read with an earlier one)."""
        return b"\n" in self._buffer

    def next_line(self) -> Optional[bytes]:
        if b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            return line
        return None

    def read_exact(self, size: int, silence: float) -> bytes:
        """``size`` raw bytes following a frame header (uploads, keystrokes)."""
        while len(self._buffer) < size:
            ready, _, _ = select.select([self.fd], [], [], silence)
            if not ready:
                raise ClientGone(f"client silent for {silence:.0f} s in the middle of a transfer")
            before = len(self._buffer)
            self.fill()
            if len(self._buffer) == before:
                raise ClientGone("client closed the connection in the middle of a transfer")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


__all__ = ["OPERATIONS", "LineChannel", "Operation", "abort_signal", "frame_size", "operation"]
