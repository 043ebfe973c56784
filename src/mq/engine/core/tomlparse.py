"""TOML for the engine and the client: the standard library's ``tomllib``, else ``tomli``.

``tomllib`` came with Python 3.11; on older ones (a lab host's 3.9 or 3.10)
``tomli``, the same parser, is used: it is a dependency of mq and the one
package shipped with the engine beyond the standard library
(``mq.transport.bundle``).

``explain`` words a parse error for people: a key or table defined twice is
named (the parsers say only "Cannot overwrite a value").
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional, Tuple

try:  # mypy checks for Python 3.10, which has no tomllib
    from tomllib import TOMLDecodeError, loads  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python < 3.11
    from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "explain", "loads"]

_PROBE = "mq probe"  # a key added to a prefix of the document to find the table it ends in
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted_key(*parts: str) -> str:
    """A dotted TOML key for messages; odd parts quoted and escaped, long ones cut."""
    return ".".join(part if _BARE_KEY.fullmatch(part) and len(part) <= 64 else quoted(part) for part in parts)


def quoted(text: str) -> str:
    """``text`` as a TOML (JSON) string on one line, cut after 64 characters."""
    return json.dumps(text if len(text) <= 64 else text[:64] + "...")


def explain(text: str, exc: TOMLDecodeError) -> str:
    """The error's message; one naming the key when its line defines a key or table again."""
    line = _error_line(text, exc)
    twice = _defined_twice(text, line) if line is not None else None
    return f"{twice} (at line {line}, column 1)" if twice else str(exc)


def _error_line(text: str, exc: TOMLDecodeError) -> Optional[int]:
    """The line of the error: tomli >= 2.1 and Python >= 3.14 say it; older tomllib only in its
    text, so the document is parsed again with tomli for it."""
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    try:
        import tomli

        tomli.loads(text)
    except ImportError:
        return None
    except tomli.TOMLDecodeError as again:
        found = getattr(again, "lineno", None)
        return found if isinstance(found, int) else None
    return None


def _defined_twice(text: str, lineno: int) -> Optional[str]:
    """"duplicate key K" or "table K defined twice" when line ``lineno`` is a ``key = value``
    or ``[table]`` line whose key the lines before it already define."""
    lines = text.splitlines()
    if not 1 <= lineno <= len(lines):
        return None
    before, line = "\n".join(lines[: lineno - 1]) + "\n", lines[lineno - 1].strip()
    try:
        document = loads(before)
        if line.startswith("["):  # a [table] or [[array of tables]] header
            path = _only_path(loads(line))
        else:
            key_text, equals, _ = line.partition("=")
            if not equals:
                return None
            table = _table_of(loads(f'{before}"{_PROBE}" = 0\n'), _PROBE)
            if table is None:
                return None
            path = table + _only_path(loads(f"{key_text} = 0"))
    except TOMLDecodeError:
        return None
    if not path or not _defines(document, path):
        return None
    return f"table {dotted_key(*path)} defined twice" if line.startswith("[") else f"duplicate key {dotted_key(*path)}"


def _only_path(document: Dict[str, Any]) -> Tuple[str, ...]:
    """The keys down the only branch of a one-line document (``a.b = 0``, ``[a.b]``, ``[[a]]``)."""
    path: Tuple[str, ...] = ()
    node: Any = document
    while isinstance(node, dict) and len(node) == 1:
        key = next(iter(node))
        path += (key,)
        node = node[key]
        if isinstance(node, list) and len(node) == 1:
            node = node[0]
    return path


def _table_of(node: Any, key: str, path: Tuple[str, ...] = ()) -> Optional[Tuple[str, ...]]:
    """The path of the table that holds ``key`` (arrays of tables: in any element)."""
    if isinstance(node, list):
        return next((found for item in node if (found := _table_of(item, key, path)) is not None), None)
    if not isinstance(node, dict):
        return None
    if key in node:
        return path
    return next((found for name, value in node.items() if (found := _table_of(value, key, (*path, name))) is not None),
                None)


def _defines(document: Dict[str, Any], path: Tuple[str, ...]) -> bool:
    """``document`` has ``path`` (arrays of tables: in their last element, the current one)."""
    node: Any = document
    for key in path:
        if isinstance(node, list) and node and isinstance(node[-1], dict):
            node = node[-1]
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True
