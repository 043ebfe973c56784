"""The transport interface and the protocol client shared by the SSH transports."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mq.engine.core import protocol
from mq.engine.core.errors import AGENT_CLIENT_GONE, EXIT_HOST, EXIT_SSH, EngineError, Interrupted, safe_text
from mq.engine.core.signals import GUARD
from mq.engine.lockdir.labpaths import say_on_stderr

from . import bootstrap

if TYPE_CHECKING:
    from .keyboard import Keyboard

ABORT_GRACE = 1.0  # seconds to wait for the host to confirm an abort
JOB_ABORT_GRACE = 10.0  # ... of a job: console stopped, board powered off, lock released


EventHandler = Callable[[str, bytes, dict[str, Any]], None]
Progress = Callable[[int], None]  # bytes just sent
CHUNK = 256 * 1024
LOCK_LOST = "lock-lost"  # a job's outcome when its lock was taken away (engine.core.outcomes.LOCK_LOST)
LOCK_LOST_OP = "lock_lost"  # the message that tells a bare job so (engine.run_host.LOCK_LOST)


class Transport(Protocol):
    """What the service needs from a lab connection."""

    host: str

    def call(self, op: str, on_event: EventHandler | None = None, **args: Any) -> Any:
        """Run one engine request on the lab host; returns wire data or raises EngineError.
        ``on_event`` is given the request's events as they come (a wait's ``queue`` events)."""
        ...

    def upload(self, path: str, name: str, progress: Progress | None = None) -> str:
        """Copy a local file into this command's private job directory on the host; its host path."""
        ...

    def run_job(self, spec: dict[str, Any], on_event: EventHandler, keyboard: Keyboard | None) -> dict[str, Any]:
        """Run a job (``mq run``) on the host, streaming its events; the job's result."""
        ...

    def lock_lost(self, taken_by: str | None) -> None:
        """From any thread: the lock the client holds for its bare job (``run_job`` running or
        about to) was taken away; the job stops with outcome ``lock-lost``, or never starts."""
        ...

    def close(self) -> None: ...


class LockLostRelay:
    """Tells a lock loss (from any thread) to a job host that may not be there yet: at once if it
    is, else as soon as it is given (``attach``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: Callable[[str | None], None] | None = None
        self._lost: tuple[str | None] | None = None

    def attach(self, target: Callable[[str | None], None]) -> None:
        with self._lock:
            self._target, lost = target, self._lost
        if lost is not None:
            target(lost[0])

    def tell(self, taken_by: str | None) -> None:
        with self._lock:
            self._lost, target = (taken_by,), self._target
        if target is not None:
            target(taken_by)


class SshError(EngineError):
    """Connection or authentication failure. The first line is what the seL4 CI greps for."""

    exit_code = EXIT_SSH

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"Unable to ssh to {host}\n{reason}")
        self.host = host
        self.reason = reason


class HostGaveUp(SshError):
    """The host side ended the session because it heard nothing from this client
    (stopped with Ctrl+Z, a stalled network) for the silence limit."""


class HostError(EngineError):
    """The host side cannot run the engine (no python3, wrong version ...)."""

    exit_code = EXIT_HOST


class Stream(Protocol):
    """A byte pipe to the host agent."""

    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes | None:
        """Bytes, b"" at EOF, or None when nothing came within ``timeout``."""
        ...

    def close(self) -> None: ...

    def exit_status(self) -> int | None:
        """The other end's exit status once it has ended (waiting a moment for it), else None."""
        ...

    def last_error(self) -> str:
        """The last line the other end wrote to stderr ("" if none): shown, never interpreted."""
        ...

    def lost(self) -> bool:
        """The connection itself went away (not just the engine at its other end)."""
        ...


AGENT_SAYS = "mq agent: "  # how the host agent's last words on stderr begin
BOOTSTRAP_HINTS: dict[int | None, str] = {  # by the bootstrap's exit status
    bootstrap.ENGINE_BROKEN: "; the engine does not load with that python3 (its modules, PYTHONPATH)",
    bootstrap.CACHE_DENIED: "; mq needs a writable cache directory there (~/.cache/mq or $XDG_CACHE_HOME)",
}


def describe_end(status: int | None, line: str) -> str:
    """How the other end ended, for messages: ``exit status N; its last stderr line``."""
    return (f"exit status {status}" if status is not None else "") + (f"; {line}" if line else "")


class AgentClient:
    """Speaks the JSON-lines protocol over a stream, with keepalives both ways."""

    def __init__(self, stream: Stream, host: str, keepalive: float, count: int = 3) -> None:
        self.stream = stream
        self.host = host
        self.bootstrap_why = ""  # why the host asked for the engine (``remote.start_agent``)
        self.keepalive = keepalive
        self.count = max(1, count)
        self.silence = keepalive * self.count  # ServerAliveInterval x ServerAliveCountMax
        self._buffer = b""
        self._next_id = 0
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._pinger = threading.Thread(target=self._ping_loop, name="mq-keepalive", daemon=True)
        self._job_open = False
        self._running_job = False
        self._lock_lost: dict[str, Any] | None = None  # lock_lost() before the job began

    def start(self) -> dict[str, Any]:
        hello: dict[str, Any] = self.call("hello", protocol_version=protocol.PROTOCOL, keepalive=self.keepalive,
                                          count=self.count)
        self._pinger.start()
        return hello

    # -- lines ---------------------------------------------------------------------
    def send_message(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self.stream.send(protocol.encode(message))

    def read_line(self, timeout: float) -> bytes:
        """One line, waiting at most ``timeout`` seconds of silence."""
        while b"\n" not in self._buffer:
            chunk = self.stream.recv(timeout)
            if chunk is None:
                raise SshError(self.host, f"connection lost: the host sent nothing for {timeout:.0f} s")
            if not chunk:
                raise self._ended()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def broken(self, exc: OSError) -> EngineError:
        """A send or a read failed with ``exc``: if the other end has ended (its channel
        closed: a host that gave up, an engine that died), why it did; else ``exc``."""
        if self.stream.exit_status() is not None:
            return self._ended()
        return SshError(self.host, f"connection lost: {exc}")

    def _ended(self) -> EngineError:
        """The error for a stream that ended, told by the other end's exit status."""
        status, line = self.stream.exit_status(), self.stream.last_error()
        detail = describe_end(status, line)
        if status == AGENT_CLIENT_GONE:  # the host gave up on us: stopped or cut off
            why = line[len(AGENT_SAYS):] if line.startswith(AGENT_SAYS) else "it heard nothing from this client"
            return HostGaveUp(self.host, f"connection lost: the host gave up ({why})")
        if self.stream.lost():
            return SshError(self.host, "connection lost" + (f" ({detail})" if detail else ""))
        return HostError(f"the mq engine on {self.host} ended unexpectedly" + (f": {detail}" if detail else "")
                         + BOOTSTRAP_HINTS.get(status, ""))

    def _ping_loop(self) -> None:
        while not self._closed.wait(self.keepalive):
            try:
                self.send_message({"op": "ping"})
            except Exception:
                return

    # -- requests --------------------------------------------------------------------
    def call(self, op: str, on_event: EventHandler | None = None, **args: Any) -> Any:
        self._next_id += 1
        request_id = self._next_id
        self.send_message({"id": request_id, "op": op, "args": args})
        try:
            result = self._reply(request_id, self.silence, on_event)
            if op == "wait":  # the host gives the grant back if this never arrives
                self._confirm(request_id)
            return result
        except Interrupted as exc:
            reply = self._abort(request_id, exc.signum)
            if op == "wait" and reply is not None and reply.get("ok"):  # the grant raced the signal
                result = dict(reply.get("result") or {})
                with contextlib.suppress(EngineError, OSError):
                    self.call("undo_grant", board=result.get("board"), key=result.get("key"),
                              grant=result.get("grant"))
            if op == "wait" and reply is None:
                raise Interrupted(exc.signum, unconfirmed=self.host) from None
            raise

    def _confirm(self, request_id: int) -> None:
        try:
            self.send_message({"op": "ack", "id": request_id})
        except OSError as exc:
            raise SshError(self.host, f"connection lost as the lock was granted; the host gives it back ({exc})") \
                from None

    def read_exact(self, size: int, silence: float) -> bytes:
        while len(self._buffer) < size:
            chunk = self.stream.recv(silence)
            if chunk is None:
                raise SshError(self.host, f"connection lost: the host sent nothing for {silence:.0f} s")
            if not chunk:
                raise self._ended()
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _reply(self, request_id: int, silence: float, on_event: EventHandler | None = None) -> Any:
        while True:
            message = protocol.decode(self.read_line(silence))
            if message.get("event"):
                payload = self.read_exact(int(message.get("n", 0)), silence) if message.get("n") else b""
                if message["event"] == protocol.NOTICE:
                    say_on_stderr(safe_text(str(message.get("text", "")), 500))
                elif on_event is not None and message.get("id") == request_id and message["event"] != "alive":
                    on_event(str(message["event"]), payload, message)
                continue
            if message.get("id") != request_id:
                continue
            if message.get("ok"):
                return message.get("result")
            raise protocol.error_from_wire(dict(message.get("error") or {}))

    def upload(self, path: str, name: str, progress: Progress | None = None) -> str:
        """Send a file as raw bytes after an ``upload`` request line (same connection)."""
        if not self._job_open:
            self.call("job_open")
            self._job_open = True
        size = os.path.getsize(path)
        self._next_id += 1
        request_id = self._next_id
        try:
            # Deferred: a signal is taken between chunks (or while a send is stuck), never
            # in the middle of one. The stream is then mid-transfer: it is cut, not aborted;
            # nothing is locked yet, and the host drops the partial upload when it sees EOF.
            with open(path, "rb") as handle, self._send_lock, GUARD.deferred():
                self.stream.send(protocol.encode({"id": request_id, "op": "upload",
                                                  "args": {"name": name, "size": size}}))
                while chunk := handle.read(CHUNK):
                    self.stream.send(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    GUARD.check()
        except Interrupted:
            self.close()
            raise
        try:
            return str(self._reply(request_id, self.silence))
        except Interrupted as exc:
            self._abort(request_id, exc.signum)
            raise

    def run_job(self, spec: dict[str, Any], on_event: EventHandler, keyboard: Keyboard | None) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        self._job_open = False
        with self._send_lock:
            if self._lock_lost is not None:  # the lock went before the job began: it never does
                return {"outcome": LOCK_LOST, "board": spec.get("target", ""), "notes": [], "powered_off": False,
                        "taken_by": self._lock_lost.get("taken_by")}
            self._running_job = True
            self.stream.send(protocol.encode({"id": request_id, "op": "job_run", "args": spec}))
        stop = threading.Event()
        forwarder = None
        if keyboard is not None:
            forwarder = threading.Thread(target=self._forward_keys, args=(keyboard, stop), daemon=True)
            forwarder.start()
        try:
            return dict(self._reply(request_id, self.silence, on_event))
        except Interrupted as exc:
            if self._abort(request_id, exc.signum) is None:
                raise Interrupted(exc.signum, unconfirmed=self.host) from None
            raise
        finally:
            stop.set()
            self._running_job = False

    def lock_lost(self, taken_by: str | None) -> None:
        """See ``Transport.lock_lost``: told to the host's job if one runs, else remembered."""
        with self._send_lock:
            self._lock_lost = {"op": LOCK_LOST_OP, "taken_by": taken_by}
            if self._running_job:
                with contextlib.suppress(OSError):  # the connection is gone: the host stops the job anyway
                    self.stream.send(protocol.encode(self._lock_lost))

    def _forward_keys(self, keyboard: Keyboard, stop: threading.Event) -> None:
        while not stop.is_set() and not keyboard.closed:
            ready, _, _ = select.select([keyboard.fd], [], [], 0.2)
            if not ready:
                continue
            for command, data in keyboard.read():
                try:
                    with self._send_lock:
                        self.stream.send(protocol.encode({"op": command, "n": len(data)}) + data)
                except OSError:
                    return

    def _abort(self, request_id: int, signum: int) -> dict[str, Any] | None:
        """Tell the host to stop and wait briefly for it to confirm (never hangs).

        A job gets longer: its console is stopped and the board powered off first.
        """
        with GUARD.deferred():
            grace = JOB_ABORT_GRACE if self._running_job else ABORT_GRACE
            deadline = time.monotonic() + grace
            try:
                self.send_message({"op": "abort", "signum": signum})
                while time.monotonic() < deadline:
                    message = protocol.decode(self.read_line(max(0.01, deadline - time.monotonic())))
                    if message.get("event"):
                        if message.get("n"):
                            self.read_exact(int(message["n"]), max(0.01, deadline - time.monotonic()))
                        continue
                    if message.get("id") == request_id:
                        return message
            except (EngineError, OSError, ValueError):
                return None
            return None

    def close(self) -> None:
        self._closed.set()
        self.stream.close()


