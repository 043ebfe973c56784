"""Small file-system helpers: safe opens, atomic writes, errno -> engine errors."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from typing import Optional, Tuple

from mq.engine.core.errors import DiskError, EngineError, LockDirError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}
_DIR_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR}

MAX_SMALL_FILE = 4096


def os_error(exc: OSError, path: str, action: str) -> EngineError:
    """Map an OSError to the engine error users should see (one clear line)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in _DISK_ERRNOS:
        return DiskError(path, f"cannot {action} ({reason})")
    if exc.errno in _DIR_ERRNOS:
        return LockDirError(path, f"cannot {action} ({reason})")
    return DiskError(path, f"cannot {action} ({reason})")


def read_small(path: str) -> Optional[str]:
    """Read a small regular file without following symlinks or blocking on FIFOs.

    Returns None when the path is missing, not a regular file, or unreadable.
    """
    got = _read_regular(path, MAX_SMALL_FILE, one_name=False)
    return None if got is None else got[0]


def read_owned(path: str, limit: int = MAX_SMALL_FILE) -> Optional[Tuple[str, os.stat_result]]:
    """The text of a small shared record (ticket, grant record, offline mark) and the status
    of the file it was read from, whose ``st_uid`` says who wrote it: the contents are never
    asked. Never follows a symlink, never blocks on a FIFO, reads at most ``limit`` bytes.
    None when the path is missing, unreadable, not a regular file, or has another name
    (a hard link: a record is never shared with a file elsewhere)."""
    return _read_regular(path, limit, one_name=True)


def _read_regular(path: str, limit: int, one_name: bool) -> Optional[Tuple[str, os.stat_result]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (one_name and st.st_nlink != 1):
            return None
        data = os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace"), st


def flock_held(path: str) -> Optional[bool]:
    """Whether a process holds an ``flock`` on ``path``: True (held), False (free), None (no such file).

    Probed with a shared lock that is dropped at once, without blocking, never
    following a symlink or hanging on a FIFO. Whatever cannot be opened or
    probed counts as held: a live holder is never taken for a dead one on a guess.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held; anything else: cannot tell
        return True
    finally:
        os.close(fd)
    return False


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def create_exclusive(path: str, data: bytes, mode: int) -> os.stat_result:
    """Create ``path`` with O_EXCL (never following symlinks) and fill it.

    Raises FileExistsError when something already exists there. On any other
    failure (disk full, ...) the half-made file is removed before raising.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        _unlink_quiet(path)
        raise
    os.close(fd)
    return st


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` via a private temporary file and rename."""
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp.{os.getpid()}"
    _unlink_quiet(tmp)
    try:
        create_exclusive(tmp, data, mode)
        os.rename(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


unlink_quiet = _unlink_quiet
