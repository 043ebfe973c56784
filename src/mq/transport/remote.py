"""What both SSH transports share: bootstrap the engine, then speak the protocol."""

from __future__ import annotations

import json
from typing import Any

from ..engine.errors import EngineError, Interrupted
from .base import AgentClient, HostError, SshError, Stream
from .bundle import bundle_message


def start_agent(stream: Stream, host: str, keepalive: float) -> AgentClient:
    """Run the bootstrap handshake on ``stream`` and say hello; returns the client."""
    client = AgentClient(stream, host, keepalive)
    try:
        state = _bootstrap_state(client)
        if state == "send":
            stream.send(bundle_message())
            state = _bootstrap_state(client)
        if state == "old-python":
            raise HostError(f"python3 on {host} is too old: mq needs Python >= 3.9 on the lab host")
        if state != "ready":
            raise HostError(f"the mq engine could not start on {host} ({state})")
        client.start()
    except BaseException:
        client.close()
        raise
    return client


def _bootstrap_state(client: AgentClient) -> str:
    try:
        line = client.read_line(client.keepalive * 3)
    except HostError as exc:
        detail = client.stream.diagnose()
        if "not found" in detail or "No such file" in detail:
            raise HostError(f"python3 was not found on {client.host}: mq needs Python >= 3.9 there") from None
        raise exc
    try:
        value = json.loads(line)
        return str(value.get("bootstrap", "?"))
    except (ValueError, AttributeError):
        return f"unexpected output: {line[:80]!r}"


class RemoteTransport:
    """A transport backed by an ``AgentClient``; subclasses open the stream."""

    host: str
    client: AgentClient

    def call(self, op: str, **args: Any) -> Any:
        try:
            return self.client.call(op, **args)
        except (Interrupted, EngineError):
            raise
        except OSError as exc:
            raise SshError(self.host, f"connection lost: {exc}") from None

    def close(self) -> None:
        self.client.close()
