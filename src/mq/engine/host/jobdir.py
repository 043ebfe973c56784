"""A ``run`` job's private image directory on the lab host, and the sweep of those left behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from typing import List, Optional

from mq.engine.lockdir.fsutil import flock_held


class JobDir:
    """A private directory for one job's images, removed when the job ends.

    The job holds a flock on ``.owner`` inside it for as long as it lives, so a
    directory left by a job whose process was killed (kill -9 of the host-side
    engine) is recognised and swept when the next job of that user starts.
    """

    OWNER = ".owner"
    ORPHAN_AGE = 600.0  # a directory without an owner file this old is a leftover, not one being made

    def __init__(self) -> None:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "mq", "jobs")
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix="job-", dir=root)
        self._owner: Optional[int] = os.open(os.path.join(self.path, self.OWNER),
                                             os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                             0o600)
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        self.swept = sweep_jobs(root, keep=self.path)

    def place(self, name: str) -> str:
        safe = os.path.basename(name).lstrip(".") or "image"
        safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", safe)[:100]
        path = os.path.join(self.path, safe)
        stem, counter = path, 1
        while os.path.exists(path):
            counter += 1
            path = f"{stem}.{counter}"
        return path

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None


def sweep_jobs(root: str, keep: str = "") -> List[str]:
    """Remove the job directories under ``root`` whose job is gone; returns their names."""
    swept: List[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return swept
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith("job-") or path == keep:
            continue
        owner = flock_held(os.path.join(path, JobDir.OWNER))
        if owner is None:  # no owner file: a leftover once old enough, else one being made
            with contextlib.suppress(OSError):
                if time.time() - os.lstat(path).st_mtime > JobDir.ORPHAN_AGE:
                    shutil.rmtree(path, ignore_errors=True)
                    swept.append(name)
        elif not owner:  # its job is gone
            shutil.rmtree(path, ignore_errors=True)
            swept.append(name)
    return swept


__all__ = ["JobDir", "sweep_jobs"]
