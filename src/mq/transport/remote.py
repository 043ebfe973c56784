"""What both SSH transports share: bootstrap the engine, then speak the protocol."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mq.engine.core.errors import EngineError, Interrupted, safe_text
from mq.engine.lockdir.labpaths import say_on_stderr

from .base import AgentClient, EventHandler, HostError, Progress, Stream

if TYPE_CHECKING:
    from .keyboard import Keyboard
from .bundle import bundle_message


def start_agent(stream: Stream, host: str, keepalive: float, count: int = 3) -> AgentClient:
    """Run the bootstrap handshake on ``stream`` and say hello; returns the client."""
    client = AgentClient(stream, host, keepalive, count)
    try:
        state = _bootstrap_state(client)
        if state == "send":
            if os.environ.get(DEBUG_ENV) and client.bootstrap_why:  # why the host had no engine to use
                say_on_stderr(f"{host}: the engine is sent: {safe_text(client.bootstrap_why, 300)}")
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


DEBUG_ENV = "MQ_DEBUG"  # set by --debug (cli.main): the host's bootstrap says why it needs the engine
COMMAND_NOT_FOUND = 127  # the host's shell: no such program (python3)
NOISE_LINES = 200  # lines a login (motd, an rc file that prints) may write before the engine speaks


def _bootstrap_state(client: AgentClient) -> str:
    """The host's bootstrap word. Output before it (a login rc file that prints to
    stdout, a terminal-title escape) is skipped: the word is found within its line."""
    noise = b""
    for _ in range(NOISE_LINES):
        try:
            line = client.read_line(client.silence)
        except HostError:
            if client.stream.exit_status() == COMMAND_NOT_FOUND:
                raise HostError(f"python3 was not found on {client.host}: mq needs Python >= 3.9 there") from None
            raise
        start = line.find(b'{"bootstrap"')
        if start < 0:
            noise = noise or line
            continue
        try:
            value = json.loads(line[start:])
            if "why" in value:
                client.bootstrap_why = str(value["why"])
            return str(value.get("bootstrap", "?"))
        except (ValueError, AttributeError):
            noise = noise or line
    shown = noise[:80].decode("utf-8", "replace")
    raise HostError(f"something on {client.host} prints to stdout before mq's engine starts (a login rc file?), "
                    f"and the engine never answered: {shown!r}")


class RemoteTransport:
    """A transport backed by an ``AgentClient``; subclasses open the stream."""

    host: str
    client: AgentClient

    def call(self, op: str, on_event: EventHandler | None = None, **args: Any) -> Any:
        return self._guard(lambda: self.client.call(op, on_event=on_event, **args))

    def upload(self, path: str, name: str, progress: Progress | None = None) -> str:
        return str(self._guard(lambda: self.client.upload(path, name, progress)))

    def run_job(self, spec: dict[str, Any], on_event: EventHandler, keyboard: Keyboard | None) -> dict[str, Any]:
        return dict(self._guard(lambda: self.client.run_job(spec, on_event, keyboard)))

    def lock_lost(self, taken_by: str | None) -> None:
        self.client.lock_lost(taken_by)

    def _guard(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (Interrupted, EngineError):
            raise
        except OSError as exc:
            raise self.client.broken(exc) from None

    def close(self) -> None:
        self.client.close()
