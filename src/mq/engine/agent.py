"""The host-side agent: drives the engine from JSON-lines on stdin/stdout.

Started by the client over SSH (``python3 -m mq.engine.agent`` from the
cached copy). Only protocol messages ever reach the real stdout: fd 1 is
moved aside at start and pointed at stderr. The agent ends, cleaning up its
waiting ticket, on EOF, on ``abort``, or when the client's pings stop for
longer than the keepalive limit (a stopped client or a dead network).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from . import errors, protocol
from .inventory import Inventory, load_inventory
from .semaphore import Engine
from .signals import GUARD


class ClientGone(errors.EngineError):
    """The client closed the connection or stopped answering."""


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

    def next_line(self) -> Optional[bytes]:
        if b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            return line
        return None


class Agent:
    def __init__(self, base: str, lab: Optional[str], out_fd: int, in_fd: int = 0) -> None:
        self.base = base
        self.lab_path = lab or os.path.join(base, "lab.toml")
        self.out_fd = out_fd
        self.channel = LineChannel(in_fd)
        self.keepalive = 15.0
        self.last_heard = time.monotonic()
        self._engine: Optional[Engine] = None
        self._inventory: Optional[Inventory] = None
        self._current_id: Any = None
        self._last_sent = time.monotonic()

    # -- plumbing ----------------------------------------------------------------
    def send(self, message: Dict[str, Any]) -> None:
        self._last_sent = time.monotonic()
        data = protocol.encode(message)
        while data:
            data = data[os.write(self.out_fd, data):]

    def _read_message(self) -> Optional[Dict[str, Any]]:
        line = self.channel.next_line()
        if line is None:
            return None
        self.last_heard = time.monotonic()
        try:
            return protocol.decode(line)
        except ValueError:
            return {"op": "invalid"}

    def _on_input(self, _fd: int) -> None:
        """While a request runs: handle pings, aborts and EOF from the client."""
        self.channel.fill()
        while True:
            message = self._read_message()
            if message is None:
                break
            if message.get("op") == "abort":
                raise errors.Interrupted(int(message.get("signum", signal.SIGINT)))
        if self.channel.eof:
            raise ClientGone("client closed the connection")

    def engine(self) -> Engine:
        if self._engine is None:
            self._inventory = load_inventory(self.lab_path)
            self._engine = Engine(self.base, self._inventory)
        return self._engine

    # -- requests ----------------------------------------------------------------
    def dispatch(self, op: str, args: Dict[str, Any]) -> Any:
        handlers: Dict[str, Callable[..., Any]] = {
            "hello": self._hello, "inventory": self._inventory_op, "wait": self._wait,
            "signal": lambda **a: self.engine().signal(**a), "info": lambda **a: self.engine().info(**a),
            "cancel": lambda **a: self.engine().cancel(**a), "dumpall": lambda **a: self.engine().dumpall(),
        }
        if op not in handlers:
            raise errors.BadInputError(f"unknown request '{errors.safe_text(op)}'")
        return protocol.to_wire(handlers[op](**args))

    def _hello(self, protocol_version: int, keepalive: float = 15.0) -> Dict[str, Any]:
        if protocol_version != protocol.PROTOCOL:
            raise errors.EngineError(f"mq protocol mismatch: client speaks {protocol_version}, "
                                     f"host engine speaks {protocol.PROTOCOL}")
        self.keepalive = max(1.0, float(keepalive))
        return {"protocol": protocol.PROTOCOL, "user": self.engine().lab.user, "host": socket.gethostname(),
                "pid": os.getpid(), "python": list(sys.version_info[:3])}

    def _inventory_op(self) -> Dict[str, Any]:
        self.engine()
        assert self._inventory is not None
        inv = self._inventory
        return {"path": inv.path, "systems": [protocol.to_wire(s) for s in inv.systems.values()],
                "pools": [protocol.to_wire(p) for p in inv.pools.values()]}

    def _wait(self, **args: Any) -> Any:
        if self.channel.fd < 0:  # in-process (local transport): signals interrupt the wait
            return self.engine().wait(**args)
        return self.engine().wait(extra_fds=[self.channel.fd], on_extra=self._on_input, on_tick=self._tick,
                                  **args)

    def _tick(self) -> float:
        """During a wait: give up on a silent client, tell the client we are alive."""
        now = time.monotonic()
        if now - self.last_heard > self.keepalive * 3:
            raise ClientGone(f"client silent for {now - self.last_heard:.0f} s")
        if now - self._last_sent >= self.keepalive:
            self.send({"id": self._current_id, "event": "alive"})
        return self.keepalive

    def serve(self) -> int:
        while True:
            message = self._read_message()
            if message is None:
                if self.channel.eof:
                    return 0
                ready, _, _ = select.select([self.channel.fd], [], [], self.keepalive * 3)
                if not ready:
                    return 0  # the client stopped pinging: stopped, or the network is gone
                self.channel.fill()
                continue
            op = str(message.get("op", ""))
            if op in ("ping", "abort"):
                continue
            self._current_id = message.get("id")
            try:
                result = self.dispatch(op, dict(message.get("args") or {}))
            except ClientGone:
                return 0
            except errors.EngineError as exc:
                self.send({"id": self._current_id, "ok": False, "error": protocol.error_to_wire(exc)})
            except TypeError as exc:
                self.send({"id": self._current_id, "ok": False,
                           "error": {"type": "BadInputError", "message": f"bad request: {exc}",
                                     "exit_code": errors.EXIT_BAD_INPUT}})
            else:
                self.send({"id": self._current_id, "ok": True, "result": result})


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 1:
        sys.stderr.write("usage: agent BASE [LAB]\n")
        return errors.EXIT_USAGE
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol stream
    sys.stdout = sys.stderr
    GUARD.install()
    agent = Agent(args[0], args[1] if len(args) > 1 else None, out_fd)
    try:
        return agent.serve()
    except errors.Interrupted:
        return 0


if __name__ == "__main__":
    sys.exit(main())
