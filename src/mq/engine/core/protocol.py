"""The versioned JSON-lines protocol between the client and the host agent.

Shared by both ends. One request per line from the client:
``{"id": N, "op": "wait", "args": {...}}``; replies carry the same id:
``{"id": N, "ok": true, "result": ...}`` or
``{"id": N, "ok": false, "error": {"type", "fields", "message", "exit_code"}}``.
While a request runs the agent may send ``{"id": N, "event": "alive"}``, or
``{"id": N, "event": "notice", "text": ...}`` (a line the client writes on stderr
at once: an audit record that could not be written, a long wait for the lab's
mutex), and the client may send ``{"op": "ping"}`` or ``{"op": "abort", "signum": S}``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Tuple

from . import errors
from .results import Holder, Offline, Ticket

PROTOCOL = 1
NOTICE = "notice"  # the event that carries a line for the user's stderr


MAX_EVENTS = 200_000  # the newest this many, at most, in one answer

def encode(message: Dict[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> Dict[str, Any]:
    value = json.loads(line.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("protocol message is not an object")
    return value


def to_wire(value: Any) -> Any:
    """Result objects (frozen dataclasses, lists of them) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


def error_to_wire(exc: errors.EngineError) -> Dict[str, Any]:
    """An error as its kind and fields (rebuilt as the same class by ``error_from_wire``);
    ``message`` and ``exit_code`` too, for a peer that does not know the kind."""
    return {"type": type(exc).__name__, "fields": to_wire(exc.fields()), "message": exc.message,
            "exit_code": exc.exit_code}


def error_from_wire(data: Dict[str, Any]) -> errors.EngineError:
    """Rebuild the engine error on the client: same class, same fields, same exit code."""
    fields = data.get("fields")
    if not isinstance(fields, dict):
        fields = {"message": data.get("message", "host error")}
    exc = errors.EngineError.rebuild(str(data.get("type", "")), fields)
    if type(exc) is errors.EngineError:  # an unknown kind keeps the host's message and status
        exc.message = str(data.get("message", exc.message))
        exc.exit_code = int(data.get("exit_code", errors.EXIT_HOST))
    return exc


def holder_from_wire(data: Optional[Dict[str, Any]]) -> Optional[Holder]:
    return None if data is None else Holder(**data)


def ticket_from_wire(data: Dict[str, Any]) -> Ticket:
    return Ticket(**{**data, "boards": tuple(data["boards"])})


def offline_from_wire(data: Optional[Dict[str, Any]]) -> Optional[Offline]:
    return None if data is None else Offline(**data)


def states_from_wire(data: List[Dict[str, Any]]
                     ) -> List[Tuple[str, Optional[Holder], Tuple[Ticket, ...], str, Optional[Offline]]]:
    """Board states as ``BoardState``'s fields in order (board, holder, waiters, unread, offline)."""
    return [(d["board"], holder_from_wire(d["holder"]), tuple(ticket_from_wire(t) for t in d["waiters"]),
             str(d.get("unread") or ""), offline_from_wire(d.get("offline"))) for d in data]
