"""No SSH: the built-in lab, or ``mq`` running on the lab host itself."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mq.engine.host.agent import Agent

from .base import AgentClient, EventHandler, HostError, HostGaveUp, LockLostRelay, Progress, SshError
from .pipe import PipeStream

if TYPE_CHECKING:
    from .keyboard import Keyboard


class LocalTransport:
    """``sem`` runs the engine in this process. ``run`` hands its job to a child engine
    process over pipes, as the SSH transports do over the connection: if this process
    is killed, the child sees end of input at once and stops the console, powers the
    board off, deletes the images and releases the lock, as the host does for SSH."""

    host = "local"

    def __init__(self, base: str, lab: str | None) -> None:
        self._agent = Agent(base, lab, out_fd=-1, in_fd=-1)
        self._argv = [sys.executable, "-m", "mq.engine.host.agent", base, *([lab] if lab else [])]
        self._child: AgentClient | None = None
        self._lost = LockLostRelay()

    def call(self, op: str, on_event: EventHandler | None = None, **args: Any) -> Any:
        self._agent.on_event = on_event  # the in-process agent's events go straight to the caller
        try:
            return self._agent.dispatch(op, args)
        finally:
            self._agent.on_event = None

    def _job_engine(self) -> AgentClient:
        if self._child is None:
            from mq.engine.host.run_host import ENGINE_ROOT  # only a job needs the child engine

            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (ENGINE_ROOT, env.get("PYTHONPATH")) if p)
            try:
                proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, start_new_session=True)
            except OSError as exc:
                raise HostError(f"cannot start the local mq engine: {exc}") from None
            client = AgentClient(PipeStream(proc), self.host, keepalive=LOCAL_KEEPALIVE)
            try:
                client.start()
            except BaseException:
                client.close()
                raise
            self._child = client
            self._lost.attach(client.lock_lost)
        return self._child

    def upload(self, path: str, name: str, progress: Progress | None = None) -> str:
        return str(self._guard(lambda: self._job_engine().upload(path, name, progress)))

    def run_job(self, spec: dict[str, Any], on_event: EventHandler, keyboard: Keyboard | None) -> dict[str, Any]:
        return dict(self._guard(lambda: self._job_engine().run_job(spec, on_event, keyboard)))

    def lock_lost(self, taken_by: str | None) -> None:
        self._lost.tell(taken_by)  # no job engine yet: the one started next is told at once

    def _guard(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except HostGaveUp:
            raise HostError("mq: this command was stopped longer than the job's engine waits for it: the job "
                            "was ended, the board powered off and released") from None
        except SshError as exc:  # the same protocol errors, but there is no SSH here
            raise HostError(f"the job's mq engine ended: {exc.reason}") from None
        except OSError as exc:
            raise HostError(f"lost the local mq engine: {exc}") from None

    def close(self) -> None:
        if self._child is not None:
            self._child.close()
            self._child = None


# How often the job's engine and this process tell each other they are alive; the
# engine gives up on a client silent for three times this (a stopped ``mq run``).
LOCAL_KEEPALIVE = 15.0
