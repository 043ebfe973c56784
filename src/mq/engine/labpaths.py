"""The lock directory itself: its paths, who we are in it, its permissions, its mutex.

Layout (``base`` is the lock directory, shared with procmail ``lockfile``):

* ``<board>.lock`` / ``<board>.key``: the board locks (see ``boardlock``).
* ``audit.jsonl``: append-only audit log of grants, releases, ... (``audit``).
* ``.mq/mutex``: flock that serialises queue changes, grants and releases.
* ``.mq/grants``: the fencing-token counter; ``.mq/seq``: ticket arrival counter (``counters``).
* ``.mq/holders/<board>.json``: grant records for locks ``mq`` made (``grant_records``).
* ``.mq/sessions/<board>``: flocks held by ``run`` jobs (``sessions``).
* ``.mq/queue/``: one ticket per waiter (see ``queue``).
* ``.mq/offline/<board>.json``: a board out of service, and its maintenance lock (``offline_marks``).

When the lock directory is group-writable (several Unix users share it),
everything created here is group read/write and setgid directories keep
the group; nothing is ever world-writable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import stat
from typing import Iterator

from .errors import LockDirError
from .fsutil import os_error

STATE_DIR = ".mq"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class LabPaths:
    """Paths, permissions and the mutex of one lock directory."""

    def __init__(self, base: str) -> None:
        self.base = os.path.abspath(base)
        self.state = os.path.join(self.base, STATE_DIR)
        self.queue_dir = os.path.join(self.state, "queue")
        self.holders_dir = os.path.join(self.state, "holders")
        self.sessions_dir = os.path.join(self.state, "sessions")
        self.offline_dir = os.path.join(self.state, "offline")
        self.health_dir = os.path.join(self.state, "health")
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
        for path in (self.state, self.queue_dir, self.holders_dir, self.sessions_dir, self.offline_dir,
                     self.health_dir):
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
        fd = self.open_shared(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def open_shared(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open (creating) a file every user of the lab may write: group read/write."""
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, self.file_mode)
        except OSError as exc:
            raise os_error(exc, path, "open") from None
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_uid == self.uid:
                os.fchmod(fd, self.file_mode)
        return fd


__all__ = ["STATE_DIR", "LabPaths", "user_name"]
