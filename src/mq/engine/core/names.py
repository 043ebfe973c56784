"""Strict checks for names and keys, applied before any file-system call."""

from __future__ import annotations

import re

from .errors import BadInputError

# System and pool names become file names in the lock directory. Always use
# valid_name() (fullmatch): ``$`` alone would also accept a trailing newline.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
MAX_KEY = 256
NO_KEY = "0"  # the key of a lock taken without -k


def valid_name(name: str) -> bool:
    """A system or pool name that is safe as a file name in the lock directory."""
    return NAME_RE.fullmatch(name) is not None and name not in (".", "..") and not name.endswith((".lock", ".key"))


def has_control(text: str) -> bool:
    """C0 controls and DEL: what could forge lines in one-line-per-lock outputs."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def check_key(key: str) -> str:
    """Keys are data: any printable text (quotes, ``$()``, ``;`` ...) is stored literally.

    Control characters (newline, NUL, escape ...) are refused: they would
    let a key forge extra lines in ``-mr-info``/``dumpall`` output.
    """
    if not key:
        raise BadInputError("Key must not be empty (omit -k for no key)")
    if len(key) > MAX_KEY:
        raise BadInputError(f"Key is longer than {MAX_KEY} characters")
    if has_control(key):
        raise BadInputError("Key must not contain control characters such as newlines")
    return key
def user_name(uid: int) -> str:
    """The login name of ``uid`` (its number when it has none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


