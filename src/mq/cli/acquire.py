"""Taking a lock from the CLI: a grant is either reported or given back, never lost."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable

from mq.client import service
from mq.engine.core.signals import GUARD

if TYPE_CHECKING:
    from mq.engine.core.results import Grant


def acquire(lab: service.Lab, name: str, key: str, lock_timeout: int, period: float, retries: int,
            report: Callable[[Grant], None], show_wait: bool = False, priority: int | None = None) -> Grant:
    """Wait for the lock and ``report`` the grant; a signal before it is reported gives it back.
    ``show_wait``: the waiting line on stderr (``waitline``) while the wait lasts."""
    # Signals are taken only where nothing is half done: while waiting, or here
    # before the grant is reported (then it is given back). Once reported, it stands.
    line = None
    if show_wait:
        from mq.views.waitline import WaitLine

        line = WaitLine()
    with GUARD.deferred():
        try:
            grant = service.sem_wait(lab, name, key=key, lock_timeout=lock_timeout, period=period, retries=retries,
                                     on_queue=None if line is None else line.update, priority=priority)
        finally:
            if line is not None:
                line.close()
        if GUARD.pending is not None:
            service.undo_grant(lab, grant)
            GUARD.check()
        report(grant)
        sys.stdout.flush()
        service.confirm_grant(lab, grant)  # reported: the lock outlives this process now
    GUARD.settle()
    return grant
