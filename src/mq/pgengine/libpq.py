"""libpq itself, through ctypes: the few calls a one-shot look at the queue makes (``reader``).

``import psycopg`` alone costs more than a whole ``mq sem -info`` on the file engine (about
70-120 ms: its adapters, its error classes, its C extension); loading libpq costs about
10 ms. So the commands that only look (``sem -info``, ``-mr-info``, ``dumpall``, ``status``,
``history``) talk to the server through this, and only a command that changes the queue loads
psycopg. The library is psycopg's own bundled libpq (the ``psycopg[binary]`` wheel, found
without importing it), else the system's ``libpq.so.5``; None of either: ``Unavailable``, and
the caller takes psycopg's path.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import json
import os
from typing import Any, Dict, List, Optional, Sequence

CONNECTION_OK = 0
PGRES_TUPLES_OK = 2
PG_DIAG_SQLSTATE = ord("C")
PG_DIAG_MESSAGE_PRIMARY = ord("M")
PG_DIAG_MESSAGE_DETAIL = ord("D")

_LIB: List[Any] = []


class Unavailable(Exception):
    """No libpq to load here."""


class Error(Exception):
    """An error of the server's (``sqlstate``) or of the connection (``sqlstate`` None)."""

    def __init__(self, message: str, sqlstate: Optional[str] = None, detail: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.primary = message
        self.detail = detail


def _candidates() -> List[str]:
    found: List[str] = []
    spec = importlib.util.find_spec("psycopg_binary")
    if spec is not None and spec.submodule_search_locations:
        root = os.path.dirname(next(iter(spec.submodule_search_locations)))
        found += sorted(glob.glob(os.path.join(root, "psycopg_binary.libs", "libpq-*.so*")))
    return [*found, "libpq.so.5"]


def library() -> Any:
    """libpq, loaded once (``Unavailable`` when there is none)."""
    if _LIB:
        return _LIB[0]
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError:
            continue
    else:
        raise Unavailable("no libpq")
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, restype, argtypes in (
            ("PQconnectdbParams", vp, [ctypes.POINTER(cp), ctypes.POINTER(cp), i]), ("PQstatus", i, [vp]),
            ("PQerrorMessage", cp, [vp]), ("PQfinish", None, [vp]),
            ("PQexecParams", vp, [vp, cp, i, vp, ctypes.POINTER(cp), vp, vp, i]), ("PQresultStatus", i, [vp]),
            ("PQresultErrorField", cp, [vp, i]), ("PQresultErrorMessage", cp, [vp]), ("PQntuples", i, [vp]),
            ("PQnfields", i, [vp]), ("PQgetvalue", cp, [vp, i, i]), ("PQgetisnull", i, [vp, i, i]),
            ("PQclear", None, [vp]), ("PQconninfoParse", vp, [cp, ctypes.POINTER(cp)]),
            ("PQconninfoFree", None, [vp]), ("PQfreemem", None, [vp])):
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    _LIB.append(lib)
    return lib


class _Option(ctypes.Structure):
    _fields_ = [("keyword", ctypes.c_char_p), ("envvar", ctypes.c_char_p), ("compiled", ctypes.c_char_p),
                ("val", ctypes.c_char_p), ("label", ctypes.c_char_p), ("dispchar", ctypes.c_char_p),
                ("dispsize", ctypes.c_int)]


def parse_conninfo(text: str) -> Dict[str, str]:
    """A connection string's parameters, as libpq parses it (``Error`` with libpq's words)."""
    lib = library()
    error = ctypes.c_char_p()
    options = lib.PQconninfoParse(text.encode(), ctypes.byref(error))
    if not options:
        message = (error.value or b"out of memory").decode("utf-8", "replace").strip()
        if error.value:
            lib.PQfreemem(ctypes.cast(error, ctypes.c_void_p))
        raise Error(message.splitlines()[0] if message else "invalid connection string")
    try:
        found: Dict[str, str] = {}
        array = ctypes.cast(options, ctypes.POINTER(_Option))
        index = 0
        while array[index].keyword is not None:
            if array[index].val is not None:
                found[array[index].keyword.decode()] = array[index].val.decode("utf-8", "replace")
            index += 1
        return found
    finally:
        lib.PQconninfoFree(options)


def _text(value: Any) -> Optional[bytes]:
    """A parameter as text (PostgreSQL's input syntax of its type)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, (list, tuple)):
        items = ["NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value]
        return ("{" + ",".join(items) + "}").encode()
    if isinstance(value, dict):
        return json.dumps(value).encode()
    return str(value).encode()


class Connection:
    """One connection (libpq's ``PQconnectdbParams``: blocking, within ``connect_timeout``)."""

    def __init__(self, conninfo: str, defaults: Optional[Dict[str, str]] = None) -> None:
        """``defaults``: libpq keywords the string may override (it is expanded after them)."""
        self.lib = library()
        keys = [*(defaults or {}), "dbname"]
        values = [*(defaults or {}).values(), conninfo]
        key_array = (ctypes.c_char_p * (len(keys) + 1))(*[k.encode() for k in keys], None)
        value_array = (ctypes.c_char_p * (len(values) + 1))(*[v.encode() for v in values], None)
        self.conn = self.lib.PQconnectdbParams(key_array, value_array, 1)
        if not self.conn or self.lib.PQstatus(self.conn) != CONNECTION_OK:
            message = self._message()
            self.close()
            raise Error(message)

    def _message(self) -> str:
        raw = self.lib.PQerrorMessage(self.conn) if self.conn else b""
        text = (raw or b"out of memory").decode("utf-8", "replace").strip()
        return text.splitlines()[0] if text else "cannot connect"

    def rows(self, query: str, params: Sequence[Any] = ()) -> List[List[Optional[str]]]:
        """``query`` ($1, $2, ... for ``params``): its rows, each value as text (None: NULL)."""
        values = (ctypes.c_char_p * max(1, len(params)))(*[_text(p) for p in params])
        result = self.lib.PQexecParams(self.conn, query.encode(), len(params), None, values, None, None, 0)
        if not result:
            raise Error(self._message())
        try:
            if self.lib.PQresultStatus(result) != PGRES_TUPLES_OK:
                state = self.lib.PQresultErrorField(result, PG_DIAG_SQLSTATE)
                primary = self.lib.PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)
                detail = self.lib.PQresultErrorField(result, PG_DIAG_MESSAGE_DETAIL)
                message = (primary or self.lib.PQresultErrorMessage(result) or b"").decode("utf-8", "replace")
                raise Error(message.strip() or self._message(), state.decode() if state else None,
                            detail.decode("utf-8", "replace") if detail else "")
            fields = self.lib.PQnfields(result)
            return [[None if self.lib.PQgetisnull(result, r, f) else
                     self.lib.PQgetvalue(result, r, f).decode("utf-8") for f in range(fields)]
                    for r in range(self.lib.PQntuples(result))]
        finally:
            self.lib.PQclear(result)

    def call(self, function: str, *args: Any) -> Any:
        """``SELECT function(args)`` of a function that returns jsonb: its value."""
        placeholders = ", ".join(f"${n + 1}" for n in range(len(args)))
        value = self.rows(f"SELECT {function}({placeholders})", args)[0][0]
        return None if value is None else json.loads(value)

    def close(self) -> None:
        if self.conn:
            self.lib.PQfinish(self.conn)
            self.conn = None


__all__ = ["Connection", "Error", "Unavailable", "library", "parse_conninfo"]
