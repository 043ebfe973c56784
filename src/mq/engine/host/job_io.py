"""A job's console and keyboard over the protocol stream (a ``run`` started by a remote client)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Protocol, Tuple

from mq.engine.core import errors

from .wire import LineChannel, abort_signal, frame_size


class AgentLink(Protocol):
    """What the job's I/O needs of the agent (``agent.Agent``)."""

    channel: LineChannel
    silence: float

    @property
    def current_id(self) -> Any: ...

    def send(self, message: Dict[str, Any], payload: bytes = b"") -> None: ...

    def read_message(self) -> Optional[Dict[str, Any]]: ...

    def tick(self) -> float: ...


class RemoteJobIO:
    """A job's console and keyboard over the protocol stream."""

    def __init__(self, agent: AgentLink) -> None:
        self.agent = agent
        self.input_fds: List[int] = [agent.channel.fd]
        # Messages that came in the same read as the job's request (a keystroke, a lock_lost
        # sent right after it) are in the buffer already: the channel's fd would not wake the
        # job's select for them. A pipe with a byte in it does, once.
        self._early: Optional[Tuple[int, int]] = None
        if agent.channel.has_line():
            self._early = os.pipe()
            os.write(self._early[1], b"x")
            self.input_fds.append(self._early[0])

    def emit(self, event: str, data: bytes = b"", **fields: Any) -> None:
        self.agent.send({"id": self.agent.current_id, "event": event, "n": len(data), **fields}, data)

    def close(self) -> None:
        if self._early is not None:
            if self._early[0] in self.input_fds:
                self.input_fds.remove(self._early[0])
            for fd in self._early:
                os.close(fd)
            self._early = None

    def on_input(self, fd: int) -> List[Tuple[str, bytes]]:
        from . import run_host

        channel = self.agent.channel
        if self._early is not None and fd == self._early[0]:
            self.close()  # the buffered messages are read below; from now on the channel's fd says
        else:
            channel.fill()
        commands: List[Tuple[str, bytes]] = []
        while True:
            message = self.agent.read_message()
            if message is None:
                break
            op = message.get("op")
            if op == "abort":
                raise errors.Interrupted(abort_signal(message))
            if op == run_host.STDIN:
                commands.append((run_host.STDIN, channel.read_exact(frame_size(message), self.agent.silence)))
            elif op in (run_host.DETACH, run_host.RELEASE, run_host.EOF):
                commands.append((str(op), b""))
            elif op == run_host.LOCK_LOST:
                taken_by = message.get("taken_by")
                name = errors.safe_text(taken_by)[:64] if isinstance(taken_by, str) else ""
                commands.append((run_host.LOCK_LOST, name.encode()))
        if channel.eof:
            raise errors.ClientGone("client closed the connection")
        return commands

    def tick(self) -> float:
        return self.agent.tick()


__all__ = ["AgentLink", "RemoteJobIO"]
