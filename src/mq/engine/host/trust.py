"""Whose file is this: may ``mq run`` execute the commands an inventory names?

``mq run`` runs a system's ``boot`` and ``power_off`` templates as the user who
runs it, so it takes them only from an inventory that no one else could have
written: a regular file owned by root, the lab's admin or the caller, writable
by its owner alone, reached through directories that no one else can write
(a directory with the sticky bit, such as ``/tmp``, protects the entries other
users do not own). A ``lab.toml`` in a group-writable lock directory fails the
last test: any member of the group could rename a file of theirs over it.

The lab's admin is the owner of the lock directory (who set the lab up:
``chown labadmin BASE`` names another).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import replace
from typing import FrozenSet, Optional, Sequence

from mq.engine.core.errors import InventoryError
from mq.engine.core.inventory import Inventory, parse_inventory, read_inventory_file
from mq.engine.core.names import user_name

ADVICE = ("move it out of the lock directory (for example to /etc/mq/lab.toml, owned by root, mode 0644) "
          "and set lab = in the configuration (or MQ_LAB)")


def trusted_owners(base: str) -> FrozenSet[int]:
    """root, the caller, and the owner of the lock directory ``base`` (the lab's admin)."""
    owners = {0, os.getuid()}
    with contextlib.suppress(OSError):
        owners.add(os.stat(base).st_uid)
    return frozenset(owners)


def file_problem(st: os.stat_result, owners: FrozenSet[int]) -> Optional[str]:
    """Why a file with status ``st`` may not be trusted (None: it may)."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in owners:
        return f"owned by {user_name(st.st_uid)}, who is not root, the lab's admin or you"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {st.st_mode & 0o7777:04o})"
    return None


def directory_problem(path: str, owners: FrozenSet[int]) -> Optional[str]:
    """Why an entry of directory ``path`` (and of each directory above it) could be replaced
    by someone not in ``owners`` (None: it could not)."""
    current = os.path.abspath(path)
    while True:
        try:
            st = os.stat(current)
        except OSError as exc:
            return f"cannot examine {current} ({os.strerror(exc.errno or 0)})"
        if st.st_uid not in owners:
            return f"its directory {current} belongs to {user_name(st.st_uid)}"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            who = "everyone" if st.st_mode & stat.S_IWOTH else "its group"
            return f"its directory {current} is writable by {who} (mode {st.st_mode & 0o7777:04o}), " \
                   f"so anyone there can rename another file over it"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def opened_file_problem(path: str, st: os.stat_result, owners: FrozenSet[int]) -> Optional[str]:
    """Why the file opened at ``path`` (``st``: its ``fstat``) may not be trusted. A symlink's
    own directory is judged as well as its target's: either could be swapped."""
    problem = file_problem(st, owners)
    if problem is None:
        problem = directory_problem(os.path.dirname(os.path.abspath(path)), owners)
    if problem is None and os.path.islink(path):
        problem = directory_problem(os.path.dirname(os.path.realpath(path)), owners)
    return problem


def load_judged_inventory(path: str, base: str) -> Inventory:
    """The inventory at ``path``, with ``untrusted`` saying why ``mq run`` may not execute its
    commands (judged on the very file that was read, not on a second look at the path)."""
    text, st = read_inventory_file(path)
    inventory = parse_inventory(text, path)
    return replace(inventory, untrusted=opened_file_problem(path, st, trusted_owners(base)))


def refusal(problem: str) -> str:
    """The one line said about an inventory ``mq run`` will not execute commands from."""
    return f"mq run will not run its commands: {problem}; {ADVICE}"


def refuse_untrusted(inventory: Inventory, boards: Sequence[str]) -> None:
    """Raise the refusal if the job on ``boards`` would run a command of an inventory someone
    else could have written (the client asks before copying images, the host before locking)."""
    if inventory.untrusted is None:
        return
    if any(inventory.systems[b].boot or inventory.systems[b].power_off for b in boards if b in inventory.systems):
        raise InventoryError(inventory.path, "", refusal(inventory.untrusted))


__all__ = ["ADVICE", "directory_problem", "file_problem", "load_judged_inventory", "opened_file_problem",
           "refusal", "refuse_untrusted", "trusted_owners"]
