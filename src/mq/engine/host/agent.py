"""The host-side agent: drives the engine from JSON-lines on stdin/stdout.

Started by the client over SSH (``python3 -m mq.engine.host.agent`` from the
cached copy). Only protocol messages ever reach the real stdout: fd 1 is
moved aside at start and pointed at stderr. The agent ends, cleaning up its
waiting ticket, on EOF, on ``abort``, or when the client's pings stop for
longer than the keepalive limit (a stopped client or a dead network).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from mq.engine.core import arguments, errors, protocol
from mq.engine.core.interface import EngineFactory, LockEngine
from mq.engine.core.inventory import Inventory, system_from_wire
from mq.engine.core.names import NO_KEY, user_name
from mq.engine.core.protocol import NOTICE
from mq.engine.core.results import BoardState, Grant, Offline, Released
from mq.engine.core.signals import GUARD
from mq.engine.lockdir import fsutil
from mq.engine.lockdir.labpaths import default_inventory

from . import trust
from .job_io import RemoteJobIO
from .wire import OPERATIONS, LineChannel, abort_signal, operation

if TYPE_CHECKING:  # the job modules load only when a client runs a job (sem stays light)
    from .jobdir import JobDir

ClientGone = errors.ClientGone
LOCAL_PROGRESS_TICK = 60.0  # in-process waits with a waiting line: how often a waiter far back looks at its place

def _lock_directory_engine(base: str, inventory: Inventory) -> LockEngine:
    """The file engine (imported when first used: an agent in front of another engine never loads it)."""
    from mq.engine.lockdir.semaphore import Engine

    return Engine(base, inventory)


class Agent:
    """Serves one client: its requests go to the engine ``open_engine`` makes for the lab."""

    def __init__(self, base: str, lab: Optional[str], out_fd: int, in_fd: int = 0,
                 open_engine: Optional[EngineFactory] = None) -> None:
        self.base = base
        self.open_engine = open_engine or _lock_directory_engine
        self.lab_path = lab or default_inventory(base)
        self.out_fd = out_fd
        self.channel = LineChannel(in_fd)
        self.keepalive = 15.0
        self._unconfirmed: Optional[Dict[str, Any]] = None  # a wait's grant sent, not yet acknowledged
        self.silence = 45.0  # a client silent this long is gone
        self.last_heard = time.monotonic()
        self._engine: Optional[LockEngine] = None
        self._current_id: Any = None  # the request being served (its events carry its id)
        self.on_event: Optional[Callable[[str, bytes, Dict[str, Any]], None]] = None  # in-process: events here
        self._last_sent = time.monotonic()
        self._job: Optional[JobDir] = None

    # -- plumbing ----------------------------------------------------------------
    @property
    def current_id(self) -> Any:
        return self._current_id

    def send(self, message: Dict[str, Any], payload: bytes = b"") -> None:
        """Write one message; a client that reads nothing for the silence limit (stopped
        with Ctrl+Z, a stalled network) is gone, even while a busy console fills the pipe."""
        self._last_sent = time.monotonic()
        data = memoryview(protocol.encode(message) + payload)
        deadline: Optional[float] = None
        while data:
            try:
                data = data[os.write(self.out_fd, data):]
                deadline = None
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + self.silence
                if now >= deadline:
                    raise ClientGone(f"client read nothing for {self.silence:.0f} s") from None
                select.select([], [self.out_fd], [], deadline - now)

    def read_message(self) -> Optional[Dict[str, Any]]:
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
            message = self.read_message()
            if message is None:
                break
            if message.get("op") == "abort":
                raise errors.Interrupted(abort_signal(message))
        if self.channel.eof:
            raise ClientGone("client closed the connection")

    def engine(self) -> LockEngine:
        if self._engine is None:
            self._check_base()
            self._engine = self.open_engine(self.base, trust.load_judged_inventory(self.lab_path, self.base))
            lab = getattr(self._engine, "lab", None)
            if lab is not None and self.channel.fd >= 0:  # over a connection: the client says it
                lab.on_notice = self._send_notice
        return self._engine

    def _send_notice(self, text: str) -> None:
        """A ``notice`` event: the client writes it on stderr at once (``base.AgentClient``)."""
        with contextlib.suppress(ClientGone, OSError):
            self.send({"id": self._current_id, "event": NOTICE, "text": text})

    def _check_base(self) -> None:
        """A missing or unreachable lock directory is named as such (exit 7), before its
        inventory would be reported missing."""
        if os.path.dirname(os.path.abspath(self.lab_path)) != os.path.abspath(self.base):
            return  # the inventory lives elsewhere: listings work without the lock directory
        if os.path.isdir(self.base) and os.access(self.base, os.X_OK):
            return
        where = f" on {socket.gethostname()}" if self.out_fd >= 0 else ""
        if not os.path.exists(self.base):
            raise errors.LockDirError(self.base, f"the lock directory does not exist{where}")
        raise errors.LockDirError(self.base,
                                  f"the lock directory cannot be entered by {user_name(os.getuid())}{where}")

    # -- requests ----------------------------------------------------------------
    def dispatch(self, op: str, args: Dict[str, Any]) -> Any:
        """Run request ``op``, its arguments checked first (``arguments``): nothing a client
        sends reaches the engine unchecked."""
        found = OPERATIONS.get(op)
        if found is None:
            raise errors.BadInputError(f"unknown request '{errors.safe_text(op)}'")
        if not found.checked_by_handler:
            arguments.check_arguments(op, args, found.accepted, found.required)
        return protocol.to_wire(found.handler(self, **args))

    @operation("hello")
    def _hello(self, protocol_version: int, keepalive: float = 15.0, count: int = 3) -> Dict[str, Any]:
        if protocol_version != protocol.PROTOCOL:
            raise errors.ProtocolMismatch(f"mq protocol mismatch: client speaks {protocol_version}, "
                                          f"host engine speaks {protocol.PROTOCOL}")
        self.keepalive = max(1.0, float(keepalive))
        self.silence = self.keepalive * max(1, int(count))  # ServerAliveInterval x ServerAliveCountMax
        # The lock directory and its inventory are looked at by the first request that needs them, not
        # here: a bare job (the PostgreSQL queue's) runs on a host that has neither.
        return {"protocol": protocol.PROTOCOL, "user": user_name(os.getuid()), "host": socket.gethostname(),
                "pid": os.getpid(), "python": list(sys.version_info[:3])}

    @operation("inventory")
    def _inventory_op(self) -> Dict[str, Any]:
        inv = self.engine().inventory
        return {"path": inv.path, "untrusted": inv.untrusted,
                "systems": [protocol.to_wire(s) for s in inv.systems.values()],
                "pools": [protocol.to_wire(p) for p in inv.pools.values()], "queue": protocol.to_wire(inv.queue)}

    @operation("whoami")
    def _whoami(self) -> Dict[str, Any]:
        """Who this client is to the engine (the name its locks and waits carry): ``--mine``."""
        return {"user": self.engine().user}

    @operation("wait")
    def _wait(self, name: str, key: str = NO_KEY, timeout: int = 0, budget: Optional[float] = None,
              session: bool = False, boards: Optional[Sequence[str]] = None, progress: bool = False,
              priority: Optional[int] = None) -> Grant:
        on_progress = self._progress_reporter(name, key) if progress else None
        if self.channel.fd < 0:  # in-process (local transport): signals interrupt the wait
            return self.engine().wait(name, key, timeout, budget, session=session, boards=boards,
                                      on_tick=(lambda: LOCAL_PROGRESS_TICK) if progress else None,
                                      on_progress=on_progress, priority=priority)
        return self.engine().wait(name, key, timeout, budget, extra_fds=[self.channel.fd], on_extra=self._on_input,
                                  on_tick=self.tick, session=session, boards=boards, on_progress=on_progress,
                                  priority=priority)

    def _progress_reporter(self, name: str, key: str) -> Callable[[int, int], None]:
        """A wait's ``queue`` events: its place, who holds its boards, its projected start."""
        from mq.engine.core.waitinfo import queue_event

        def report(position: int, total: int) -> None:
            event = queue_event(self.engine(), name, key, position, total)
            if event is None:
                return
            if self.channel.fd < 0:
                if self.on_event is not None:
                    self.on_event("queue", b"", event)
            else:
                self.send({"id": self._current_id, "event": "queue", **event})

        return report

    @operation("cancel")
    def _cancel(self, name: str, key: str = NO_KEY, force: bool = False) -> int:
        return self.engine().cancel(name, key, force)

    @operation("confirm")
    def _confirm(self, board: str, grant: int) -> bool:
        return self.engine().confirm(board, grant)

    @operation("undo_grant")
    def _undo_grant(self, board: str, key: str, grant: int, reason: str = "interrupted") -> bool:
        return self.engine().undo_grant(board, key, grant, reason)

    @operation("signal")
    def _signal(self, name: str, key: str = NO_KEY, force: bool = False) -> List[Released]:
        return self.engine().signal(name, key, force)

    @operation("info")
    def _info(self, name: str) -> List[BoardState]:
        return self.engine().info(name)

    @operation("dumpall")
    def _dumpall(self, order: str = "inventory") -> List[BoardState]:
        return self.engine().dumpall(order)

    @operation("events")
    def _events(self, scope: Optional[str] = None, since: Optional[float] = None) -> List[Dict[str, Any]]:
        return self.engine().events(scope, since)

    @operation("status")
    def _status(self, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        return self.engine().status(names)

    @operation("offline")
    def _offline(self, board: str, reason: str) -> Offline:
        return self.engine().set_offline(board, reason)

    @operation("online")
    def _online(self, board: str) -> Optional[Offline]:
        return self.engine().set_online(board)

    @operation("check_host")
    def _check_host(self) -> Dict[str, Any]:
        """``mq check --host``: the lock directory, ``lockfile(1)`` and whether the inventory
        may be trusted here (nothing else of the inventory is needed)."""
        from . import hostcheck

        return hostcheck.check_host(self.base, self.lab_path)

    @operation("job_open")
    def _job_open(self) -> Dict[str, Any]:
        from .jobdir import JobDir

        self._job = JobDir()
        return {"dir": self._job.path}

    @operation("upload")
    def _upload(self, name: str, size: int) -> str:
        """Raw bytes follow the request line; stored in the job's private directory."""
        if self._job is None:
            raise errors.BadInputError("upload before job_open")
        path = self._job.place(name)
        remaining = int(size)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while remaining:
                chunk = self.channel.read_exact(min(remaining, 1 << 20), self.silence)
                remaining -= len(chunk)
                while chunk:
                    chunk = chunk[os.write(fd, chunk):]
        except OSError as exc:
            raise fsutil.os_error(exc, path, "store uploaded image") from None
        finally:
            os.close(fd)
        return path

    @operation("job_run")
    def _job_run(self, **args: Any) -> Dict[str, Any]:
        from . import run_host

        fields = dataclasses.fields(run_host.JobSpec)
        arguments.check_arguments("job_run", args, [f.name for f in fields], [
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ], arguments.JOB_ARGUMENTS)
        spec = run_host.JobSpec(**args)
        job_dir, self._job = self._job, None
        io = RemoteJobIO(self)
        try:
            if spec.system is None:
                return run_host.run_job(self.engine(), spec, io, job_dir)
            from .bare import BareEngine

            bare = BareEngine(system_from_wire(spec.system))
            result = run_host.run_job(bare, spec, io, job_dir)
            result["health"] = bare.verdict  # the client counts it where the lock is (None: nothing to say)
            return result
        finally:
            io.close()

    def tick(self) -> float:
        """During a wait: give up on a silent client, tell the client we are alive."""
        now = time.monotonic()
        if now - self.last_heard > self.silence:
            raise ClientGone(f"client silent for {now - self.last_heard:.0f} s")
        if now - self._last_sent >= self.keepalive:
            self.send({"id": self._current_id, "event": "alive"})
        return self.keepalive

    def _unconfirmed_id(self) -> Any:
        return None if self._unconfirmed is None else self._unconfirmed["id"]

    @staticmethod
    def _gone(why: str) -> int:
        """The client went away: say so on stderr and exit with a status it can recognise."""
        sys.stderr.write(f"mq agent: {why}\n")
        return errors.ExitCode.AGENT_CLIENT_GONE

    def serve(self) -> int:
        try:
            return self._serve()
        finally:
            self._give_back_unconfirmed()

    def _give_back_unconfirmed(self) -> None:
        """A ``sem -wait`` grant whose client never confirmed it (it stopped or its network
        went while the reply was on the way) is released: the user was told nothing."""
        grant, self._unconfirmed = self._unconfirmed, None
        if grant is not None:
            with contextlib.suppress(errors.EngineError, OSError):
                self.engine().undo_grant(grant["board"], grant["key"], grant["grant"],
                                         reason="client gone before receiving its grant")

    def _serve(self) -> int:
        while True:
            message = self.read_message()
            if message is None:
                if self.channel.eof:
                    return 0
                ready, _, _ = select.select([self.channel.fd], [], [], self.silence)
                if not ready:  # the client stopped pinging: stopped, or the network is gone
                    return self._gone(f"client silent for {self.silence:.0f} s")
                self.channel.fill()
                continue
            op = str(message.get("op", ""))
            args = message.get("args") or {}
            if op in ("ping", "abort", "lock_lost"):  # lock_lost: for a job that has ended already
                continue
            if op == "ack":  # the client has a wait's grant in hand
                if message.get("id") == self._unconfirmed_id():
                    self._unconfirmed = None
                continue
            self._unconfirmed = None  # any later request: it had the reply before asking again
            self._current_id = message.get("id")
            with GUARD.deferred():  # a result is sent before a signal ends the agent
                try:
                    if not isinstance(args, dict):
                        raise errors.BadInputError("bad request: 'args' must be an object")
                    result = self.dispatch(op, args)
                except ClientGone as exc:
                    return self._gone(exc.message)
                except errors.EngineError as exc:
                    self.send({"id": self._current_id, "ok": False, "error": protocol.error_to_wire(exc)})
                except TypeError as exc:
                    self.send({"id": self._current_id, "ok": False,
                               "error": {"type": "BadInputError", "message": f"bad request: {exc}",
                                         "exit_code": errors.ExitCode.BAD_INPUT}})
                else:
                    if op == "wait" and isinstance(result, dict):
                        self._unconfirmed = {"id": self._current_id, "board": result.get("board"),
                                             "key": result.get("key"), "grant": result.get("grant")}
                    self.send({"id": self._current_id, "ok": True, "result": result})
            if GUARD.received is not None:
                return 0  # SIGHUP/SIGTERM: the session is over


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 1:
        sys.stderr.write("usage: agent BASE [LAB]\n")
        return errors.ExitCode.USAGE
    out_fd = os.dup(1)
    os.set_blocking(out_fd, False)  # see Agent.send
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol stream
    sys.stdout = sys.stderr
    GUARD.install()
    agent = Agent(args[0], args[1] if len(args) > 1 else None, out_fd)
    try:
        return agent.serve()
    except ClientGone as exc:  # while sending a reply
        return agent._gone(exc.message)
    except errors.Interrupted:
        return 0
    finally:
        if agent._job is not None:  # uploaded but never run: the client went away
            agent._job.remove()


if __name__ == "__main__":
    sys.exit(main())
