"""The transport interface and the protocol client shared by the SSH transports."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from ..engine import protocol
from ..engine.errors import EXIT_HOST, EXIT_SSH, EngineError, Interrupted
from ..engine.signals import GUARD

ABORT_GRACE = 1.0  # seconds to wait for the host to confirm an abort


class Transport(Protocol):
    """What the service needs from a lab connection."""

    host: str

    def call(self, op: str, **args: Any) -> Any:
        """Run one engine request on the lab host; returns wire data or raises EngineError."""
        ...

    def close(self) -> None: ...


class SshError(EngineError):
    """Connection or authentication failure. The first line is what the seL4 CI greps for."""

    exit_code = EXIT_SSH

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"Unable to ssh to {host}\n{reason}")
        self.host = host
        self.reason = reason


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

    def diagnose(self) -> str:
        """Why the stream ended (exit status, stderr), for error messages."""
        ...


class AgentClient:
    """Speaks the JSON-lines protocol over a stream, with keepalives both ways."""

    def __init__(self, stream: Stream, host: str, keepalive: float) -> None:
        self.stream = stream
        self.host = host
        self.keepalive = keepalive
        self._buffer = b""
        self._next_id = 0
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._pinger = threading.Thread(target=self._ping_loop, name="mq-keepalive", daemon=True)

    def start(self) -> dict[str, Any]:
        hello: dict[str, Any] = self.call("hello", protocol_version=protocol.PROTOCOL, keepalive=self.keepalive)
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

    def _ended(self) -> EngineError:
        detail = self.stream.diagnose()
        return HostError(f"the mq engine on {self.host} ended unexpectedly" + (f": {detail}" if detail else ""))

    def _ping_loop(self) -> None:
        while not self._closed.wait(self.keepalive):
            try:
                self.send_message({"op": "ping"})
            except Exception:
                return

    # -- requests --------------------------------------------------------------------
    def call(self, op: str, **args: Any) -> Any:
        self._next_id += 1
        request_id = self._next_id
        self.send_message({"id": request_id, "op": op, "args": args})
        try:
            return self._reply(request_id, self.keepalive * 3)
        except Interrupted as exc:
            self._abort(request_id, exc.signum)
            raise

    def _reply(self, request_id: int, silence: float) -> Any:
        while True:
            message = protocol.decode(self.read_line(silence))
            if message.get("id") != request_id or message.get("event"):
                continue
            if message.get("ok"):
                return message.get("result")
            raise protocol.error_from_wire(dict(message.get("error") or {}))

    def _abort(self, request_id: int, signum: int) -> None:
        """Tell the host to stop and wait briefly for it to confirm (never hangs)."""
        with GUARD.deferred():
            deadline = time.monotonic() + ABORT_GRACE
            try:
                self.send_message({"op": "abort", "signum": signum})
                while time.monotonic() < deadline:
                    message = protocol.decode(self.read_line(max(0.01, deadline - time.monotonic())))
                    if message.get("id") == request_id and not message.get("event"):
                        return
            except (EngineError, OSError, ValueError):
                return

    def close(self) -> None:
        self._closed.set()
        self.stream.close()


