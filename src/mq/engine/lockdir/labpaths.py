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
* ``.mq/forged/``: records whose contents claimed another owner than the file's, set aside (``forged``).

When the lock directory is group-writable (several Unix users share it),
everything created here is group read/write and setgid directories keep
the group; nothing is ever world-writable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import threading
import time
from typing import Callable, Iterator, Optional, Set

from mq.engine.core.errors import LockDirError, safe_text
from mq.engine.core.names import user_name

from .fsutil import os_error

STATE_DIR = ".mq"
MUTEX_PATIENCE = 2.0  # seconds a command waits for the mutex before it says who holds it
MUTEX_NOTE = 32  # bytes of "PID TIME" the holder writes at the start of the mutex file


def mutex_holder(fd: int) -> str:
    """Who holds the flock on the open file ``fd``: the pid from /proc/locks (the kernel's word),
    its user and command, and since when (the holder's own note, when its pid agrees)."""
    st = os.fstat(fd)
    pid: Optional[int] = None
    with contextlib.suppress(OSError), open("/proc/locks", "rb") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 5 and fields[1] == b"FLOCK" and fields[5].rsplit(b":", 1)[-1] == str(st.st_ino).encode():
                pid = int(fields[4])
                break
    if pid is None:
        return "its holder cannot be told"
    who = f"pid {pid}"
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/status", "rb") as handle:
            uid = next(int(line.split()[1]) for line in handle if line.startswith(b"Uid:"))
        who += f" of {user_name(uid)}"
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").strip().decode("utf-8", "replace")
        who += f" ({safe_text(command, 80)})"
    with contextlib.suppress(OSError, ValueError, IndexError):
        note = os.pread(fd, MUTEX_NOTE, 0).split()
        if int(note[0]) == pid:
            who += f", holding it since {time.strftime('%H:%M:%S', time.localtime(float(note[1])))}"
    return f"held by {who}"


SYSTEM_INVENTORY = "/etc/mq/lab.toml"


def default_inventory(base: str) -> str:
    """The inventory of lock directory ``base`` when none is named: ``/etc/mq/lab.toml`` for a
    shared (group- or world-writable) lock directory when it exists, else ``BASE/lab.toml``.
    A host with several shared labs names each one's inventory (``lab =``, ``MQ_LAB``)."""
    try:
        shared = bool(os.stat(base).st_mode & (stat.S_IWGRP | stat.S_IWOTH))
    except OSError:
        shared = False
    if shared and os.path.isfile(SYSTEM_INVENTORY):
        return SYSTEM_INVENTORY
    return os.path.join(base, "lab.toml")


def say_on_stderr(text: str) -> None:
    """Where a notice goes in the client's own process (the local lab)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"mq: {text}\n")
        sys.stderr.flush()


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
        self.forged_dir = os.path.join(self.state, "forged")
        self.audit_path = os.path.join(self.base, "audit.jsonl")
        self.uid = os.getuid()
        self.user = user_name(self.uid)
        self._shared = False
        self._ready = False
        self._mutex_depth = 0  # how deep this LabPaths holds the mutex, in thread ``_mutex_owner``
        self._mutex_owner = 0
        # something the user must hear at once (an audit record not written, a long wait for the
        # mutex): on stderr here; the host agent sends it to its client instead (``notice`` events)
        self.on_notice: Callable[[str], None] = say_on_stderr
        self._noticed: Set[str] = set()

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

    def notice(self, text: str) -> None:
        """Tell the user ``text`` now (each text once per process)."""
        if text not in self._noticed:
            self._noticed.add(text)
            self.on_notice(text)

    # -- the mutex -----------------------------------------------------------
    @contextlib.contextmanager
    def mutex(self) -> Iterator[None]:
        """Exclusive flock over queue changes, grants and releases (held briefly). Re-entrant:
        a look that finds something to set right (``forged``) may take it again inside."""
        if self._mutex_depth and self._mutex_owner == threading.get_ident():
            self._mutex_depth += 1
            try:
                yield
            finally:
                self._mutex_depth -= 1
            return
        self.ensure()
        path = os.path.join(self.state, "mutex")
        fd = self.open_shared(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._wait_for_mutex(fd, path)
            with contextlib.suppress(OSError):  # who holds it, for whoever waits (``mutex_holder``)
                os.pwrite(fd, f"{os.getpid()} {time.time():.3f}\n".encode().ljust(MUTEX_NOTE), 0)
            self._mutex_depth, self._mutex_owner = 1, threading.get_ident()
            yield
        finally:
            self._mutex_depth = 0
            os.close(fd)

    def _wait_for_mutex(self, fd: int, path: str) -> None:
        """Block until the mutex is ours; past ``MUTEX_PATIENCE`` say who holds it, and go on waiting."""
        started = time.time()
        timer = threading.Timer(MUTEX_PATIENCE, lambda: self.notice(
            f"waiting for the lab's mutex {path} since {time.strftime('%H:%M:%S', time.localtime(started))}: "
            f"{mutex_holder(fd)}"))
        timer.daemon = True
        timer.start()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            timer.cancel()

    def open_shared(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open (creating) a file every user of the lab may write: group read/write. Never
        follows a symlink or blocks on a FIFO, and opens nothing but a regular file with one
        name: a planted FIFO, device or hard link to a file elsewhere is one clear error."""
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, self.file_mode)
        except OSError as exc:
            raise os_error(exc, path, "open") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise LockDirError(path, "not a regular file (something else was put there): remove it")
            if st.st_nlink != 1:
                raise LockDirError(path, f"has {st.st_nlink} names (a hard link to a file elsewhere?): remove it")
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):
            if st.st_uid == self.uid:
                os.fchmod(fd, self.file_mode)
        return fd


__all__ = ["MUTEX_PATIENCE", "STATE_DIR", "SYSTEM_INVENTORY", "LabPaths", "default_inventory", "mutex_holder",
           "say_on_stderr"]
