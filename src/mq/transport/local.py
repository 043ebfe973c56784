"""No SSH: the engine runs in this process (the built-in lab, or on the lab host)."""

from __future__ import annotations

from typing import Any

from ..engine.agent import Agent


class LocalTransport:
    host = "local"

    def __init__(self, base: str, lab: str | None) -> None:
        self._agent = Agent(base, lab, out_fd=-1, in_fd=-1)

    def call(self, op: str, **args: Any) -> Any:
        return self._agent.dispatch(op, args)

    def close(self) -> None:
        pass
