"""Records that lie about who wrote them: set aside once, audited once, never believed.

Who wrote a ticket, a grant record or an offline mark is the owner of its file
(``st_uid``), which no lab member can fake; what the file says is only believed
where it agrees. A record whose contents claim another user (a ticket naming
alice written by mallory, a grant record for alice's lock written by mallory)
is ignored, moved into ``.mq/forged/`` and recorded in the audit log as
``forged``; ``mq check --host`` fails while anything lies there.
"""

from __future__ import annotations

import contextlib
import os
import time

from mq.engine.core.errors import DiskError, LockDirError
from mq.engine.core.names import user_name

from .labdir import LabDir


def set_aside(lab: LabDir, path: str, st: os.stat_result, kind: str, claimed: str) -> None:
    """Move the forged record at ``path`` (``st``: the file that was read) into ``.mq/forged``
    and audit it. Under the lab mutex, and only if ``path`` is still that file: a genuine
    record written since is never moved. Best effort: where this user may not move it,
    it stays ignored."""
    with contextlib.suppress(LockDirError, DiskError, OSError), lab.mutex():
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return
        lab.ensure()
        lab._mkdir(lab.forged_dir)
        name = f"{kind}-{os.path.basename(path)}-{time.time_ns()}"
        os.rename(path, os.path.join(lab.forged_dir, name))
        lab.audit.record("forged", kind=kind, file=os.path.basename(path), set_aside=name,
                         owner=user_name(st.st_uid), claimed=claimed[:200])


__all__ = ["set_aside"]
