"""Board lock files, byte-compatible with procmail ``lockfile(1)`` and ``mq.sh``.

``<base>/<board>.lock`` is created with O_CREAT|O_EXCL (never following a
symlink), mode 0444, owned by the holder; its content is the ``-T`` timeout
in seconds (``0`` = none). ``<base>/<board>.key`` holds the key (``0`` = none).
Anything at the lock path that is not a regular file (a planted symlink,
FIFO, socket, directory) counts as held and is never opened or followed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from typing import Optional, Tuple

from mq.engine.core import libc
from mq.engine.core.names import NO_KEY, user_name
from mq.engine.core.results import Holder

from .fsutil import create_exclusive, read_small, unlink_quiet, write_atomic

LOCK_MODE = 0o444


def lock_path(base: str, board: str) -> str:
    return os.path.join(base, board + ".lock")


def key_path(base: str, board: str) -> str:
    return os.path.join(base, board + ".key")


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "other"


def _parse_timeout(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    value = text.strip()
    return int(value) if value.isdigit() and len(value) < 12 else None


def read_holder(base: str, board: str) -> Optional[Holder]:
    """The current holder of ``board``, or None when the board is free."""
    path = lock_path(base, board)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = _kind(st.st_mode)
    timeout = _parse_timeout(read_small(path)) if kind == "file" else None
    key = _read_key(base, board, st.st_uid)
    return Holder(board=board, uid=st.st_uid, user=user_name(st.st_uid), since_ns=st.st_mtime_ns,
                  timeout=timeout, key=key, dev=st.st_dev, ino=st.st_ino, kind=kind,
                  zone=time.localtime(st.st_mtime).tm_gmtoff)


def _read_key(base: str, board: str, holder_uid: int) -> Optional[str]:
    """The key stored with the lock; a key file of another user than the lock's is a
    leftover of an earlier holder (a lock broken by ``lockfile -l`` or removed by hand),
    not this holder's key."""
    path = key_path(base, board)
    try:
        if os.lstat(path).st_uid != holder_uid:
            return None
    except OSError:
        return None
    text = read_small(path)
    return text.rstrip("\n") if text is not None else None


def try_create(base: str, board: str, timeout: int) -> Optional[os.stat_result]:
    """Create the lock; None if it exists. Other OSErrors propagate (nothing left behind)."""
    try:
        return create_exclusive(lock_path(base, board), f"{timeout}\n".encode(), LOCK_MODE)
    except FileExistsError:
        return None


def write_key(base: str, board: str, key: str, mode: int) -> None:
    """Store the key atomically (a stale key file of another user is replaced)."""
    write_atomic(key_path(base, board), (key + "\n").encode(), mode)


def _aside(base: str, name: str) -> str:
    return os.path.join(base, f".{name}.mq-release.{os.getpid()}.{time.monotonic_ns()}")


def remove_checked(base: str, holder: Holder) -> bool:
    """Remove exactly the lock described by ``holder``, never a successor's.

    Identity is device, inode, owner and modification time together (inode
    numbers are reused at once on ext4). The path is checked, renamed aside,
    and the renamed file checked again before it is deleted; a file that
    turns out not to be ours is put back without replacing anything.
    Returns False when the lock is gone or has changed. Raises OSError (for
    example EPERM in a sticky directory) when it may not be removed.
    """
    path = lock_path(base, holder.board)
    try:
        if not holder.same_file(os.lstat(path)):
            return False
    except FileNotFoundError:
        return False
    aside = _aside(base, holder.board + ".lock")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if not holder.same_file(os.lstat(aside)):
        put_back(aside, path)
        return False
    try:
        _discard(aside)
    except OSError:
        put_back(aside, path)  # nothing half-done: the lock path is as it was
        raise
    return True


def replace_checked(base: str, holder: Holder, timeout: int) -> Tuple[bool, Optional[os.stat_result]]:
    """Replace exactly the lock ``holder`` describes (never a successor's) with a new lock of
    this user's whose content is ``timeout``: (the old lock was removed, the new lock's stat).

    Where the kernel can swap two names (renameat2 RENAME_EXCHANGE) the path is never free,
    so ``lockfile(1)`` cannot slip in between: the new lock is made aside, swapped in, and the
    old one, checked again, deleted (or swapped back if it was not the one read). Elsewhere
    the old lock is removed as ``remove_checked`` does and the new one created: another tool
    may take the path in between (then the stat is None). ``(False, None)``: the lock is
    gone or has changed, nothing was touched. Raises OSError as ``remove_checked`` does.
    """
    path = lock_path(base, holder.board)
    try:
        if not holder.same_file(os.lstat(path)):
            return False, None
    except FileNotFoundError:
        return False, None
    aside = _aside(base, holder.board + ".lock")
    st = create_exclusive(aside, f"{timeout}\n".encode(), LOCK_MODE)
    try:
        swapped = rename_exchange(aside, path)
    except BaseException:
        unlink_quiet(aside)
        raise
    if not swapped:
        unlink_quiet(aside)
        if not remove_checked(base, holder):
            return False, None
        return True, try_create(base, holder.board, timeout)
    if not holder.same_file(os.lstat(aside)):  # changed between the check and the swap: swap back
        if rename_exchange(aside, path):
            unlink_quiet(aside)  # the new lock, aside again
        else:
            mine = os.lstat(path)
            if (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino):
                unlink_quiet(path)
            put_back(aside, path)
        return False, None
    with contextlib.suppress(OSError):  # else the old lock stays aside, hidden: the new one is in place
        _discard(aside)
    return True, st


def _discard(aside: str) -> None:
    """Delete what was renamed aside: a file, or an empty directory planted at the path."""
    try:
        os.unlink(aside)
    except IsADirectoryError:
        os.rmdir(aside)  # a non-empty one raises: it is not mq's to delete
    except FileNotFoundError:
        pass


def put_back(aside: str, path: str) -> None:
    """Return a file renamed aside by mistake, never replacing what is there now."""
    if rename_noreplace(aside, path):
        return
    try:
        os.link(aside, path, follow_symlinks=False)
    except OSError:
        return  # cannot restore without clobbering: leave it aside rather than delete it
    unlink_quiet(aside)


def rename_noreplace(src: str, dst: str) -> bool:
    """renameat2(RENAME_NOREPLACE) where the kernel and libc have it."""
    renameat2 = libc.function("renameat2")
    if renameat2 is None:
        return False
    at_fdcwd, noreplace = -100, 1
    return int(renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), noreplace)) == 0


def rename_exchange(first: str, second: str) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two names at once; False where the kernel, the file
    system or libc cannot (or the swap is refused: the caller then goes the slow way)."""
    renameat2 = libc.function("renameat2")
    if renameat2 is None:
        return False
    at_fdcwd, exchange = -100, 2
    return int(renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), exchange)) == 0


def drop_key(base: str, board: str, expected: Optional[str]) -> None:
    """Remove the key file, but only if it still carries the key we checked."""
    path = key_path(base, board)
    aside = _aside(base, board + ".key")
    try:
        os.rename(path, aside)
    except OSError:
        return
    text = read_small(aside)
    current = text.rstrip("\n") if text is not None else None
    if expected is not None and current != expected:
        put_back(aside, path)
        return
    try:
        _discard(aside)
    except OSError:
        put_back(aside, path)


def availability(base: str, board: str, now: float) -> Tuple[bool, Optional[float]]:
    """(can be taken now, when a held lock's ``-T`` expires): cheap, no user look-ups."""
    path = lock_path(base, board)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True, None
    if not stat.S_ISREG(st.st_mode):
        return False, None
    timeout = _parse_timeout(read_small(path))
    if not timeout:
        return False, None
    expires = st.st_mtime_ns / 1e9 + timeout
    return now > expires, expires


__all__ = ["LOCK_MODE", "NO_KEY", "Holder", "availability", "drop_key", "key_path", "lock_path", "put_back",
           "read_holder", "remove_checked", "rename_exchange", "rename_noreplace", "replace_checked", "try_create",
           "write_key"]
