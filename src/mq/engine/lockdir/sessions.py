"""Session locks: a ``run`` job holds an flock on ``.mq/sessions/<board>`` for as long as it lives.

The kernel drops the flock when the job's process dies (kill -9 included),
so a lock whose session flock is free belongs to a dead job and may be
reclaimed. This process's own session flocks are kept here until released.
"""

from __future__ import annotations

import fcntl
import os
from typing import Dict, List, Optional

from .fsutil import flock_held
from .labpaths import LabPaths


class Sessions:
    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths
        self._held: Dict[str, int] = {}  # board -> fd holding its session flock

    def path(self, board: str) -> str:
        return os.path.join(self.paths.sessions_dir, board)

    def hold(self, board: str) -> None:
        """Take the board's session flock for this process (call with the mutex held)."""
        fd = self.paths.open_shared(self.path(board))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            raise
        self._held[board] = fd

    def end(self, board: str) -> None:
        """Let go of this process's session flock on ``board``, if it holds one."""
        fd = self._held.pop(board, None)
        if fd is not None:
            os.close(fd)

    def identity(self, board: str) -> Optional[List[int]]:
        """``[dev, ino]`` of the board's session file (None: there is none), kept in the grant
        record so that a file put in its place is not taken for the job's."""
        try:
            st = os.lstat(self.path(board))
        except OSError:
            return None
        return [st.st_dev, st.st_ino]

    def has_file(self, board: str) -> bool:
        return os.path.exists(self.path(board))

    def alive(self, board: str) -> bool:
        """Some process holds the board's session flock (or it cannot be told: never reclaim on a guess)."""
        return bool(flock_held(self.path(board)))


__all__ = ["Sessions"]
