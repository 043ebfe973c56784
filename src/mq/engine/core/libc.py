"""The C library of the running process, through ctypes: the one place it is loaded.

Used for what the standard library lacks: inotify (``notify``),
renameat2(RENAME_NOREPLACE) (``boardlock``) and prctl(PR_SET_PDEATHSIG)
(``boot``). ``ctypes`` is imported on first use, not at start-up, and never
``ctypes.util``: it is slow to import.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import ctypes


@functools.lru_cache(maxsize=1)
def load() -> Optional[ctypes.CDLL]:
    """The process's own C library (errno kept for ``ctypes.get_errno``), or None."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def function(name: str) -> Optional[Callable[..., Any]]:
    """The C function ``name``, or None where this libc (or kernel headers) lack it."""
    lib = load()
    if lib is None:
        return None
    try:
        found: Callable[..., Any] = getattr(lib, name)
    except AttributeError:
        return None
    return found


def last_error(path: Optional[str] = None) -> OSError:
    """The OSError for ``errno`` as the last C call left it (FileNotFoundError for ENOENT, ...)."""
    import ctypes
    import os

    err = ctypes.get_errno()
    return OSError(err, os.strerror(err)) if path is None else OSError(err, os.strerror(err), path)


__all__ = ["function", "last_error", "load"]
