"""Booting a board for a ``run`` job on the lab host: boot command, console, power off.

The system's ``boot`` template (from the inventory) is split with shell-word
rules and its placeholders are replaced by whole arguments, so no shell ever
sees a file name or text the user typed. The console (the boot command's
stdout and stderr) is matched against the completion and error regular
expressions here, on the host, so a job ends correctly even if the client
is gone.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from mq.engine.core import libc, templates
from mq.engine.core.errors import BadInputError, EngineError, ExitCode, InventoryError
from mq.engine.core.inventory import System
from mq.engine.core.outcomes import CONSOLE_ENDED, DETACHED, TIMED_OUT
from mq.engine.core.signals import GUARD

PLACEHOLDERS = templates.PLACEHOLDERS
WINDOW = 8192  # characters of console kept for matches that span reads
SETTLE = 0.5  # seconds of console silence after which a match at the end of an unfinished line counts
STOP_GRACE = 2.0
POWER_OFF_TIMEOUT = 60.0

EXIT_GRACE = 1.0  # seconds a boot command whose output ended may take to exit by itself
NO_DEADLINE = 10 * 365 * 86400.0  # a -d of ten years or more (inf included) is no deadline


class BootError(EngineError):
    """The boot command could not be started."""

    exit_code = ExitCode.BOOT_FAILED


@dataclass
class Images:
    """What a job hands its board's commands: the images, and the job's ``-c``, ``-e``, ``-d``
    and ``-a``, which a lab's own reboot scripts take as mq.sh's runner passes them on."""

    files: List[str] = field(default_factory=list)
    dtb: str = ""
    bitstream: str = ""
    linux: bool = False
    completion: str = ""
    error: str = ""
    timeout: float = -1.0  # < 0 or NO_DEADLINE and more: none
    keep_alive: bool = False


def mqsh_seconds(timeout: float) -> str:
    """``-d`` as mq.sh passes it to a reboot script: ``-1`` for no limit, else the seconds (``30``, ``2.5``)."""
    if not 0 <= timeout < NO_DEADLINE:
        return "-1"
    return str(int(timeout)) if timeout.is_integer() else repr(timeout)


def expand(template: str, system: System, images: Images, where: str, path: str = "") -> List[str]:
    """The argv for a ``boot``/``power_off`` template (placeholders as whole arguments).

    ``where`` is the template's key (``systems.NAME.boot``) and ``path`` the inventory file, for
    errors; the inventory has checked the template already (``templates.problems``).
    """
    found = templates.problems(template, system.files)
    if found:
        raise InventoryError(path, where, found[0]) if path else InventoryError(where, "", found[0])
    values: Dict[str, List[str]] = {
        "system": [system.name], "files": list(images.files), "dtb": [images.dtb] if images.dtb else [],
        "bitstream": [images.bitstream] if images.bitstream else [], "linux": ["-L"] if images.linux else [],
        "python": [sys.executable], "completion": [images.completion], "error": [images.error],
        "timeout": [mqsh_seconds(images.timeout)], "dtb_flag": ["-b", images.dtb] if images.dtb else [],
        "bitstream_flag": ["--bitstream", images.bitstream] if images.bitstream else [],
        "keep_alive": ["-a", "-i"] if images.keep_alive else [],
    }

    def lookup(name: str) -> List[str]:
        number = templates.file_number(name)
        if number is not None:
            return [images.files[number - 1]] if number <= len(images.files) else []
        return values[name]

    argv: List[str] = []
    for word in templates.split(template):
        parts = templates.tokens(word)
        if len(parts) == 1 and parts[0][0]:
            argv.extend(lookup(parts[0][1]))  # a whole-word placeholder; an empty value drops the argument
        else:
            argv.append("".join(" ".join(lookup(text)) if placeholder else text for placeholder, text in parts))
    if not argv:
        message = "command is empty once its placeholders are replaced"
        raise InventoryError(path, where, message) if path else InventoryError(where, "", message)
    return argv


def compile_pattern(text: Optional[str], option: str) -> Optional[re.Pattern[str]]:
    if not text:
        return None
    try:
        return re.compile(text, re.MULTILINE)
    except re.error as exc:
        raise BadInputError(f"{option} {text!r} is not a valid regular expression: {exc}") from None


def _die_with_parent() -> None:
    """In the console's child: the kernel kills it if the job's process dies (kill -9 included)."""
    os.setsid()
    prctl = libc.function("prctl")
    if prctl is not None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


Emit = Callable[[bytes], None]


class JobWatch(Protocol):
    """Something besides the console that may end a job (``lockwatch.LockWatch``): its fds join
    the console loop's ``select``, it bounds the loop's sleep, and ``look`` raises to end the job."""

    @property
    def fds(self) -> List[int]: ...

    def sleep(self) -> float: ...

    def look(self, ready: List[int]) -> None: ...


class Console:
    """The running boot command: stream, match, time out, stop."""

    def __init__(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        try:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509 - the agent has no threads
        except OSError as exc:
            raise BootError(f"cannot start the boot command {argv[0]!r}: {exc.strerror}") from None
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.fd = self.proc.stdout.fileno()
        self.stdin_fd = self.proc.stdin.fileno()
        os.set_blocking(self.fd, False)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._window = ""
        self.unsettled = False  # a match at the end of an unfinished line waits (see search)
        self.ended = False
        self.printed = 0  # console bytes read so far (board health: did the board say anything?)

    def read(self) -> bytes:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return b""
        if not data:
            self.ended = True
        self.printed += len(data)
        return data

    def search(self, data: bytes, patterns: Dict[str, re.Pattern[str]], settled: bool = False) -> Optional[str]:
        """The outcome whose pattern matches first in the console so far (spanning reads).

        A match that runs to the end of an unfinished line may not survive the
        rest of it (``well$`` against ``result: well`` before ``ness`` arrives):
        it only counts once the line goes on without undoing it, or the console
        has been quiet for ``SETTLE`` seconds (``settled``: a prompt with no newline).
        """
        text = self._window + self._decoder.decode(data)
        self._window = text[-WINDOW:]
        self.unsettled = False
        best: Optional[Tuple[int, str]] = None
        for outcome, pattern in patterns.items():
            found = pattern.search(text)
            if found and not settled and found.end() == len(text) and not text.endswith("\n"):
                probe = pattern.search(text + "\x00")  # the line goes on: does the match hold?
                if probe is None or probe.end() > len(text):
                    self.unsettled = True
                    continue
            if found and (best is None or found.start() < best[0]):
                best = (found.start(), outcome)
        return best[1] if best else None

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.stdin_fd, data)

    def stop(self) -> None:
        """Stop the console command and everything it started (its session)."""
        if self.ended and self.proc.poll() is None:  # its output ended: let it exit by itself (its status)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=EXIT_GRACE)
        if self.proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except OSError:
                    break
                try:
                    self.proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of an ended command
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def power_off(argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> str:
    """Run a ``power_off`` command; returns '' or a one-line problem report.

    It runs in a session of its own: one that overruns is killed with all it started.
    """
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    except OSError as exc:
        return f"cannot run power_off {argv[0]!r}: {exc.strerror}"
    try:
        out, err = proc.communicate(timeout=POWER_OFF_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"power_off did not finish within {POWER_OFF_TIMEOUT:.0f} s"
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()
        return f"power_off exited {proc.returncode}" + (f": {tail[-1]}" if tail else "")
    return ""


def watch_console(console: Console, emit: Emit, patterns: Dict[str, re.Pattern[str]],
                  deadline: Optional[float], inputs: Sequence[int] = (),
                  on_input: Optional[Callable[[int], None]] = None,
                  on_tick: Optional[Callable[[], Optional[float]]] = None,
                  stopped: Optional[Callable[[], bool]] = None, watch: Optional[JobWatch] = None) -> str:
    """Stream the console to ``emit`` until a pattern matches, the deadline passes, it ends or is stopped.

    ``watch`` (the job's lock) is looked at after every wake and raises to end the job.
    """
    watched = watch.fds if watch is not None else []
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return TIMED_OUT
        waits = [d for d in (None if deadline is None else deadline - now, on_tick() if on_tick else None,
                             SETTLE if console.unsettled else None, watch.sleep() if watch else None)
                 if d is not None]
        ready, _, _ = select.select([console.fd, *inputs, *watched, *GUARD.wake_fds], [], [],
                                    min(waits) if waits else None)
        GUARD.check()  # safe point: a signal ends the job here
        if watch is not None:
            watch.look(ready)
        if not ready and console.unsettled:
            found = console.search(b"", patterns, settled=True)
            if found:
                return found
        for fd in ready:
            if fd != console.fd and on_input is not None and fd not in GUARD.wake_fds and fd not in watched:
                on_input(fd)
        if stopped is not None and stopped():
            return DETACHED
        if console.fd in ready:
            data = console.read()
            if data:
                emit(data)
                found = console.search(data, patterns) if patterns else None
                if found:
                    return found
            elif console.ended:
                last = console.search(b"", patterns, settled=True) if console.unsettled else None
                return last or CONSOLE_ENDED
