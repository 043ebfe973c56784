"""Errors raised by the host-side engine, each carrying its exit code.

The engine runs on the lab host with only the standard library, so these
live here rather than in ``mq.settings.errors`` (which re-exports them).
"""

from __future__ import annotations

import enum
import re
import signal
import time
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple, Type


class ExitCode(enum.IntEnum):
    """Every exit status ``mq`` and its host agent use, documented in README.md ("Exit codes")."""

    OK = 0
    UNKNOWN_TARGET = 1
    NOT_ACQUIRED = 2
    NOT_HOLDER = 3
    ALREADY_HELD = 4
    BAD_INPUT = 5
    CONFIG = 6
    LOCKDIR = 7
    DISK = 8
    SSH = 9
    HOST = 10
    RUN_ERROR_TEXT = 11  # run: the error text (-e) appeared
    RUN_TIMED_OUT = 12  # run: no completion text within -d
    RUN_CONSOLE_ENDED = 13  # run: the console ended before the completion text
    BOOT_FAILED = 14  # run: the boot command could not be started
    RUN_LOCK_LOST = 15  # run: the job's lock was broken or reclaimed behind its back; job stopped
    BOARD_OFFLINE = 16  # the board is out of service (mq offline): a wait for it alone, run, -signal of its lock
    NOTIFY_FAILED = 17  # holders --notify: the command failed for at least one holder
    USAGE = 64  # EX_USAGE
    INTERNAL = 70  # EX_SOFTWARE: an unexpected error
    AGENT_CLIENT_GONE = 75  # the host agent's own status when its client went silent or away
    SIGNALLED = 128  # ended by signal N: 128 + N
    INTERRUPTED = 130  # 128 + SIGINT (Ctrl+C)
    BROKEN_PIPE = 141  # 128 + SIGPIPE (the reader of stdout went away)

    @classmethod
    def for_signal(cls, signum: int) -> int:
        """The status of a command ended by signal ``signum``."""
        return cls.SIGNALLED + signum


# The same codes under their earlier names.
EXIT_OK, EXIT_UNKNOWN_TARGET, EXIT_NOT_ACQUIRED = ExitCode.OK, ExitCode.UNKNOWN_TARGET, ExitCode.NOT_ACQUIRED
EXIT_NOT_HOLDER, EXIT_ALREADY_HELD, EXIT_BAD_INPUT = ExitCode.NOT_HOLDER, ExitCode.ALREADY_HELD, ExitCode.BAD_INPUT
EXIT_CONFIG, EXIT_LOCKDIR, EXIT_DISK, EXIT_SSH = ExitCode.CONFIG, ExitCode.LOCKDIR, ExitCode.DISK, ExitCode.SSH
EXIT_HOST, EXIT_USAGE, AGENT_CLIENT_GONE = ExitCode.HOST, ExitCode.USAGE, ExitCode.AGENT_CLIENT_GONE


# Characters that could break a line or fool a terminal: C0/C1 controls, DEL, line and
# paragraph separators, bidirectional overrides, invisible (zero-width) characters. Everything else (backslashes, any
# printable script) is shown as it is: keys are data and read back literally.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def safe_text(value: str, limit: int = 64) -> str:
    """Render untrusted text on one line: control characters escaped, truncated."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), shown)


class EngineError(Exception):
    """Base of every error the engine reports; ``exit_code`` is the process status.

    An error crosses the wire as its kind (the class name) and ``wire_fields``,
    the constructor's arguments in order, stored under the same attribute
    names; ``rebuild`` makes the same class on the other side.
    """

    exit_code: int = ExitCode.UNKNOWN_TARGET
    wire_fields: ClassVar[Tuple[str, ...]] = ("message",)
    kinds: ClassVar[Dict[str, Type[EngineError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EngineError.kinds[cls.__name__] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def fields(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.wire_fields}

    @classmethod
    def rebuild(cls, kind: str, fields: Dict[str, Any]) -> EngineError:
        """The error ``kind`` made again from its fields (a plain EngineError if unknown)."""
        target = EngineError.kinds.get(kind, EngineError) if kind != "EngineError" else EngineError
        try:
            return target(*(fields[name] for name in target.wire_fields))
        except (KeyError, TypeError, ValueError):
            return EngineError(str(fields.get("message", "host error")))


class InventoryError(EngineError):
    """The lab inventory (lab.toml) is missing or wrong; names the file and key."""

    exit_code = ExitCode.CONFIG
    wire_fields = ("path", "key", "detail")

    def __init__(self, path: str, key: str, detail: str) -> None:
        super().__init__(f"{path}: {key}: {detail}" if key else f"{path}: {detail}")
        self.path = path
        self.key = key
        self.detail = detail


class UnknownTargetError(EngineError):
    """A name that is neither a system nor a pool of the inventory."""

    exit_code = ExitCode.UNKNOWN_TARGET
    wire_fields = ("name", "systems", "pools")

    def __init__(self, name: str, systems: Sequence[str], pools: Sequence[str]) -> None:
        super().__init__(
            f"Unknown system or pool '{safe_text(name)}'. "
            f"Valid systems: {' '.join(systems) or '(none)'}; pools: {' '.join(pools) or '(none)'}"
        )
        self.name = name
        self.systems = list(systems)
        self.pools = list(pools)


class BadInputError(EngineError):
    """A key or other argument that fails the strict input checks."""

    exit_code = ExitCode.BAD_INPUT


class NotAcquiredError(EngineError):
    """The wait budget ran out, or the wait was cancelled (mq.sh exit 2)."""

    exit_code = ExitCode.NOT_ACQUIRED
    wire_fields = ("name", "reason")

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(f"Failed to acquire lock for system ({name})" + (f": {reason}" if reason else ""))
        self.name = name
        self.reason = reason


class NotHolderError(EngineError):
    """Release of a lock the caller does not hold, or with the wrong key.

    ``why`` says which: ``not-held`` (free, or held by another user),
    ``wrong-key``, or ``changed`` (it changed hands while releasing).
    """

    exit_code = ExitCode.NOT_HOLDER
    wire_fields = ("name", "message", "why")
    NOT_HELD, WRONG_KEY, CHANGED = "not-held", "wrong-key", "changed"

    def __init__(self, name: str, message: str, why: str = NOT_HELD) -> None:
        super().__init__(message)
        self.name = name
        self.why = why


def not_held(name: str, key: Optional[str]) -> NotHolderError:
    """``run -n`` on a board the caller does not hold (with ``key``; None: with any key)."""
    what = "" if key is None else f" with key '{safe_text(key, 256)}'"
    return NotHolderError(name, f"You do not hold {name}{what} (run -n needs the lock first: "
                                f"mq sem -wait {name} -k KEY)")


class AlreadyHeldError(EngineError):
    """The caller already holds the lock with no key or the same key."""

    exit_code = ExitCode.ALREADY_HELD
    wire_fields = ("name", "held_key", "asked_key")

    def __init__(self, name: str, held_key: str = "0", asked_key: str = "0") -> None:
        super().__init__(
            f"You already hold the lock for {name} (key '{safe_text(held_key, 256)}'). "
            "Please explicitly release it first."
        )
        self.name = name
        self.held_key = held_key
        self.asked_key = asked_key


class BoardOfflineError(EngineError):
    """The board is out of service (``mq offline``): a wait for it alone, ``run`` on it, and a
    release of its maintenance lock are refused, with who took it offline, when and why."""

    exit_code = ExitCode.BOARD_OFFLINE
    wire_fields = ("name", "reason", "user", "since")

    def __init__(self, name: str, reason: str, user: str, since: float) -> None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(since))
        super().__init__(f"{name} is offline: {safe_text(reason, 256)} (by {safe_text(user)} since {when})")
        self.name = name
        self.reason = reason
        self.user = user
        self.since = since


class LockDirError(EngineError):
    """The lock directory is missing, not writable, or an operation was denied."""

    exit_code = ExitCode.LOCKDIR
    wire_fields = ("path", "detail")

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{detail}: {path}")
        self.path = path
        self.detail = detail


class DiskError(EngineError):
    """Disk or inodes full, or another I/O error; nothing was left half-written."""

    exit_code = ExitCode.DISK
    wire_fields = ("path", "detail")

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{detail}: {path}")
        self.path = path
        self.detail = detail


class Interrupted(EngineError):
    """A signal (SIGINT, SIGTERM, SIGHUP) ended the command; exit 128 + signal."""

    wire_fields = ("signum",)

    def __init__(self, signum: int, unconfirmed: str = "") -> None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if unconfirmed:  # the host did not answer the abort: never claim what it did not confirm
            super().__init__(f"mq: interrupted by {name}; {unconfirmed} did not confirm that nothing is left held "
                             f"or queued (its engine lets go when it finds this client gone): check with mq sem -info")
        else:
            super().__init__(f"mq: interrupted by {name}; nothing left held or queued")
        self.signame = name
        self.signum = signum
        self.exit_code = ExitCode.for_signal(signum)


class ProtocolMismatch(EngineError):
    """The client and the host engine speak different protocol versions."""

    exit_code = ExitCode.HOST


class ClientGone(EngineError):
    """On the host: the client closed the connection or stopped answering."""
