"""The lock directory on the lab host and mq's private state inside it.

Layout (``base`` is the lock directory, shared with procmail ``lockfile``):

* ``<board>.lock`` / ``<board>.key``: the board locks (see ``boardlock``).
* ``audit.jsonl``: append-only audit log of grants, releases, ...
* ``.mq/mutex``: flock that serialises queue changes, grants and releases.
* ``.mq/grants``: the fencing-token counter; ``.mq/seq``: ticket arrival counter.
* ``.mq/holders/<board>.json``: grant metadata for locks ``mq`` made.
* ``.mq/queue/``: one ticket per waiter (see ``queue``).

When the lock directory is group-writable (several Unix users share it),
everything created here is group read/write and setgid directories keep
the group; nothing is ever world-writable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import stat
import time
from typing import Any, Dict, Iterator, Optional

from .errors import DiskError, LockDirError
from .fsutil import os_error, read_small, unlink_quiet, write_all, write_atomic

STATE_DIR = ".mq"
COUNTER_WIDTH = 20
AUDIT_TAIL = 4 << 20  # bytes of the audit log read back to recover a damaged grant counter


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class LabDir:
    """Paths, permissions and shared counters of one lock directory."""

    def __init__(self, base: str) -> None:
        self.base = os.path.abspath(base)
        self.state = os.path.join(self.base, STATE_DIR)
        self.queue_dir = os.path.join(self.state, "queue")
        self.holders_dir = os.path.join(self.state, "holders")
        self.sessions_dir = os.path.join(self.state, "sessions")
        self.audit_path = os.path.join(self.base, "audit.jsonl")
        self.uid = os.getuid()
        self.user = user_name(self.uid)
        self._shared = False
        self._ready = False

    # -- set-up --------------------------------------------------------------
    def check(self, writable: bool) -> None:
        """Fail with one clear line if the directory is missing or unusable."""
        try:
            st = os.stat(self.base)
        except OSError as exc:
            raise LockDirError(self.base, "lock directory does not exist" if exc.errno == errno.ENOENT
                               else f"cannot open lock directory ({os.strerror(exc.errno or 0)})") from None
        if not stat.S_ISDIR(st.st_mode):
            raise LockDirError(self.base, "lock directory is not a directory")
        self._shared = bool(st.st_mode & stat.S_IWGRP)
        if writable and not os.access(self.base, os.W_OK | os.X_OK):
            raise LockDirError(self.base, "lock directory is not writable by " + self.user)

    @property
    def file_mode(self) -> int:
        return 0o660 if self._shared else 0o600

    @property
    def read_mode(self) -> int:
        """Files others in the group may read but never change (keys, tickets, grants)."""
        return 0o640 if self._shared else 0o600

    @property
    def dir_mode(self) -> int:
        return 0o2770 if self._shared else 0o700

    def ensure(self) -> None:
        """Create ``.mq`` and its sub-directories (idempotent, race-safe)."""
        if self._ready:
            return
        self.check(writable=True)
        for path in (self.state, self.queue_dir, self.holders_dir, self.sessions_dir):
            self._mkdir(path)
        self._ready = True

    def _mkdir(self, path: str) -> None:
        try:
            os.mkdir(path, self.dir_mode)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise LockDirError(path, "expected a directory, found something else") from None
            return
        except OSError as exc:
            raise os_error(exc, path, "create state directory") from None
        with contextlib.suppress(OSError):
            os.chmod(path, self.dir_mode)

    # -- the mutex -----------------------------------------------------------
    @contextlib.contextmanager
    def mutex(self) -> Iterator[None]:
        """Exclusive flock over queue changes, grants and releases (held briefly)."""
        self.ensure()
        path = os.path.join(self.state, "mutex")
        fd = self._open_shared(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open_shared(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open (creating) a file every user of the lab may write: group read/write."""
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, self.file_mode)
        except OSError as exc:
            raise os_error(exc, path, "open") from None
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_uid == self.uid:
                os.fchmod(fd, self.file_mode)
        return fd

    # -- counters (call with the mutex held) ----------------------------------
    def next_number(self, name: str) -> int:
        """Increment and return a fixed-width counter; rewrites in place (no new blocks)."""
        path = os.path.join(self.state, name)
        fd = self._open_shared(path)
        try:
            raw = os.pread(fd, 4 * COUNTER_WIDTH, 0)
            digits = raw.strip()
            if digits.isdigit() and len(digits) <= COUNTER_WIDTH and raw.count(b"\n") <= 1:
                value = int(digits) + 1
            else:  # new, or damaged: never go back below a number already handed out
                floor = self._floor(name)
                value = floor + 1
                if raw or floor:
                    self.audit("counter-recovered", counter=name, found=raw[:40].decode("ascii", "replace"),
                               restarted_at=value)
            data = f"{value:0{COUNTER_WIDTH}d}\n".encode()
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(errno.ENOSPC, "short write")
            os.ftruncate(fd, len(data))  # nothing of a longer, damaged content stays behind
        except OSError as exc:
            raise os_error(exc, path, "update counter") from None
        finally:
            os.close(fd)
        return value

    def _floor(self, name: str) -> int:
        """The highest number of counter ``name`` still in evidence (queued tickets for
        ``seq``; holder records and the audit log for ``grants``)."""
        best = 0
        if name == "seq":
            with contextlib.suppress(OSError):
                for entry in os.listdir(self.queue_dir):
                    digits = entry[1:].split("-", 1)[0]
                    if entry.startswith("T") and digits.isdigit():
                        best = max(best, int(digits))
            return best
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.holders_dir):
                with contextlib.suppress(OSError, ValueError, TypeError), \
                        open(os.path.join(self.holders_dir, entry), encoding="utf-8") as handle:
                    best = max(best, int(json.load(handle).get("grant", 0)))
        with contextlib.suppress(OSError), open(self.audit_path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - AUDIT_TAIL))
            for line in handle.read().splitlines():
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    best = max(best, int(json.loads(line).get("grant", 0)))
        return best

    # -- session locks: a ``run`` holds an flock here for as long as it lives -------
    def session_path(self, board: str) -> str:
        return os.path.join(self.sessions_dir, board)

    def hold_session(self, board: str) -> int:
        """Take the board's session flock (call with the mutex held); returns its fd."""
        fd = self._open_shared(self.session_path(board))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            raise
        return fd

    def has_session_file(self, board: str) -> bool:
        return os.path.exists(self.session_path(board))

    def session_alive(self, board: str) -> bool:
        try:
            fd = os.open(self.session_path(board), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: never reclaim on a guess
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    # -- grant metadata --------------------------------------------------------
    def holder_path(self, board: str) -> str:
        return os.path.join(self.holders_dir, board + ".json")

    def write_holder_meta(self, board: str, meta: Dict[str, Any]) -> None:
        path = self.holder_path(board)
        try:
            write_atomic(path, json.dumps(meta, sort_keys=True).encode(), self.read_mode)
        except OSError as exc:
            raise os_error(exc, path, "record grant") from None

    def read_holder_meta(self, board: str) -> Optional[Dict[str, Any]]:
        text = read_small(self.holder_path(board))
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def drop_holder_meta(self, board: str) -> None:
        unlink_quiet(self.holder_path(board))

    # -- audit log ---------------------------------------------------------------
    def audit(self, event: str, **fields: Any) -> None:
        """Append one JSON line; best effort (a full disk must not stop a release)."""
        record: Dict[str, Any] = {"time": round(time.time(), 3), "event": event, "user": self.user}
        record.update(fields)
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        try:
            fd = self._open_shared(self.audit_path, os.O_WRONLY | os.O_APPEND)
        except (LockDirError, DiskError):  # not Interrupted: a signal is never swallowed here
            return
        try:
            write_all(fd, line)
        except OSError:
            pass
        finally:
            os.close(fd)


__all__ = ["LabDir", "user_name"]
