"""The lock directory on the lab host and mq's private state inside it.

``LabDir`` is the directory's paths and permissions (``labpaths``) together
with its parts, each in a module of its own: the audit log (``audit``), the
shared counters (``counters``), the ``run`` session locks (``sessions``) and
the grant records (``grant_records``). See ``labpaths`` for the layout.
"""

from __future__ import annotations

from mq.engine.core.names import user_name

from .audit import AuditLog
from .counters import Counters
from .grant_records import GrantRecords
from .labpaths import LabPaths
from .sessions import Sessions


class LabDir(LabPaths):
    """One lock directory: its paths, and its audit log, counters, sessions and grant records."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.audit = AuditLog(self)
        self.counters = Counters(self, self.audit)
        self.sessions = Sessions(self)
        self.records = GrantRecords(self)


__all__ = ["LabDir", "user_name"]
