"""No SSH: the engine runs in this process (the built-in lab, or on the lab host)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from ..engine import job, runner
from ..engine.agent import Agent
from ..engine.fsutil import os_error
from ..keyboard import Keyboard
from .base import EventHandler, Progress


class LocalJobIO:
    def __init__(self, on_event: EventHandler, keyboard: Keyboard | None) -> None:
        self._on_event = on_event
        self.keyboard = keyboard
        # one list for the whole job: emptied in place at end of input (the waits read it each time round)
        self.input_fds: list[int] = [keyboard.fd] if keyboard is not None else []

    def emit(self, event: str, data: bytes = b"", **fields: Any) -> None:
        self._on_event(event, data, fields)

    def on_input(self, _fd: int) -> list[runner.Command]:
        if self.keyboard is None:
            return []
        commands = self.keyboard.read()
        if self.keyboard.closed:
            self.input_fds.clear()
        return commands

    def tick(self) -> float | None:
        return None


class LocalTransport:
    host = "local"

    def __init__(self, base: str, lab: str | None) -> None:
        self._agent = Agent(base, lab, out_fd=-1, in_fd=-1)
        self._job: job.JobDir | None = None

    def call(self, op: str, **args: Any) -> Any:
        return self._agent.dispatch(op, args)

    def upload(self, path: str, name: str, progress: Progress | None = None) -> str:
        if self._job is None:
            self._job = job.JobDir()
        target = self._job.place(name)
        try:
            shutil.copyfile(path, target)
        except OSError as exc:
            raise os_error(exc, target, "copy image") from None
        if progress is not None:
            progress(os.path.getsize(target))
        return target

    def run_job(self, spec: dict[str, Any], on_event: EventHandler, keyboard: Keyboard | None) -> dict[str, Any]:
        job_dir, self._job = self._job, None
        try:
            return runner.run_job(self._agent.engine(), runner.JobSpec(**spec), LocalJobIO(on_event, keyboard),
                                  job_dir)
        finally:
            if job_dir is not None:
                job_dir.remove()

    def close(self) -> None:
        if self._job is not None:
            self._job.remove()
            self._job = None


__all__ = ["Callable", "LocalTransport"]
