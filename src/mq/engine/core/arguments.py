"""The checks every request's arguments pass at the agent boundary, before the engine sees them.

The host engine does not trust a client to have checked what the CLI checks
(any program can speak the protocol, and JSON brings ``-5``, ``1e99``,
``NaN``, ``true`` or a list where a number is meant): every field of every
request is checked here for its type and range, and a request with a field
missing or one it does not take is refused. A refusal is ``BadInputError``
(exit 5), naming the request, the field and what it must be.

An argument means the same in every request that takes it (``name``,
``key``, ``timeout`` ...), so the checks are looked up by argument name;
``job_run`` takes the fields of ``run_host.JobSpec``, checked by
``JOB_ARGUMENTS``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Collection, Dict, Mapping, Optional

from .errors import BadInputError, safe_text
from .names import MAX_KEY, check_key, has_control, valid_name
from .policy import MAX_PRIORITY

MAX_LOCK_TIMEOUT = 999_999_999
"""The largest ``-T``, in seconds (about 31 years): nine digits, what a lock file holds and
``lockfile``/``mq.sh`` read back as a timeout."""
MAX_SECONDS = 999_999_999.0
"""The longest wait budget (``-w`` x ``-t``) and ``run -d``, in seconds (about 31 years): longer is
forever in practice, and the host's timers cannot hold much more."""
MAX_TEXT = 4096  # names, reasons, completion texts, file names
MAX_UPLOAD = 1 << 40  # bytes in one uploaded image
MAX_GRANT = (1 << 63) - 1
MAX_KEEPALIVE = 86400.0  # seconds between keepalives (hello)
MAX_COUNT = 1_000_000  # keepalives missed before the client is gone (hello)

Check = Callable[[str, Any], None]
"""Raises ``BadInputError`` (via ``refuse``) unless the value of the named field is acceptable."""


KEY_PREFIX = "offline: "  # of a maintenance lock's key (maintenance.lock_key)
MAX_REASON = MAX_KEY - len(KEY_PREFIX)  # the reason is the maintenance lock's key, which mq.sh shows


def check_reason(reason: str) -> str:
    """An offline reason, trimmed: not empty, at most ``MAX_REASON`` characters, no control characters."""
    text = reason.strip()
    if not text:
        raise BadInputError("--reason must say why the board is out of service (it is shown to everyone)")
    if len(text) > MAX_REASON:
        raise BadInputError(f"--reason is longer than {MAX_REASON} characters")
    if has_control(text):
        raise BadInputError("--reason must not contain control characters such as newlines")
    return text


def refuse(field: str, value: Any, wanted: str) -> BadInputError:
    return BadInputError(f"bad request: '{field}' must be {wanted}, not {safe_text(repr(value), 40)}")


def text(limit: int = MAX_TEXT) -> Check:
    def check(field: str, value: Any) -> None:
        if not isinstance(value, str) or len(value) > limit:
            raise refuse(field, value, f"a string of at most {limit} characters")

    return check


def board(field: str, value: Any) -> None:
    if not isinstance(value, str) or not valid_name(value):
        raise refuse(field, value, "a system name")


def key(field: str, value: Any) -> None:
    if not isinstance(value, str):
        raise refuse(field, value, "a string")
    check_key(value)


def boolean(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise refuse(field, value, "true or false")


def integer(low: int, high: int) -> Check:
    def check(field: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise refuse(field, value, f"a whole number from {low} to {high}")

    return check


def number(low: Optional[float] = None, high: Optional[float] = None) -> Check:
    """A finite number (int or float, never a bool) within the bounds given."""
    if low is not None and high is not None:
        wanted = f"a finite number from {low:g} to {high:g}"
    elif low is not None:
        wanted = f"a finite number >= {low:g}"
    elif high is not None:
        wanted = f"a finite number <= {high:g}"
    else:
        wanted = "a finite number"

    def check(field: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse(field, value, wanted)
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite or (low is not None and value < low) or (high is not None and value > high):
            raise refuse(field, value, wanted)

    return check


def optional(inner: Check) -> Check:
    """``inner``, or null."""

    def check(field: str, value: Any) -> None:
        if value is not None:
            inner(field, value)

    return check


def each(inner: Check) -> Check:
    """A list (a tuple in process) whose every item passes ``inner``."""

    def check(field: str, value: Any) -> None:
        if not isinstance(value, (list, tuple)):
            raise refuse(field, value, "a list")
        for item in value:
            inner(field, item)

    return check


def table(field: str, value: Any) -> None:
    if not isinstance(value, dict) or len(value) > 64:
        raise refuse(field, value, "a table")


def choice(*allowed: str) -> Check:
    def check(field: str, value: Any) -> None:
        if not isinstance(value, str) or value not in allowed:
            raise refuse(field, value, "one of " + ", ".join(repr(a) for a in allowed))

    return check


ARGUMENTS: Dict[str, Check] = {
    "name": text(),  # a system or pool (an unknown one is UnknownTargetError), or an upload's file name
    "board": board,
    "boards": optional(each(board)),
    "key": key,
    "timeout": integer(0, MAX_LOCK_TIMEOUT),  # -T
    "budget": optional(number(0, MAX_SECONDS)),  # -w x -t; null: forever
    "session": boolean,
    "priority": optional(integer(-MAX_PRIORITY, MAX_PRIORITY)),  # wait: null: the inventory's [queue]
    "progress": boolean,  # wait: send ``queue`` events (place, holders, projected start)
    "force": boolean,
    "order": choice("inventory", "directory"),
    "grant": integer(0, MAX_GRANT),
    "reason": text(),
    "names": optional(each(text())),  # status: systems or pools, or null (all)
    "scope": optional(text()),  # events: a system or pool, or null (all)
    "since": optional(number(0)),  # events: Unix seconds
    "size": integer(0, MAX_UPLOAD),
    "protocol_version": integer(0, 1 << 31),
    "keepalive": number(0, MAX_KEEPALIVE),
    "count": integer(0, MAX_COUNT),
}

JOB_ARGUMENTS: Dict[str, Check] = {
    "target": text(),
    "boards": each(board),
    "key": key,
    "mode": choice("run", "held", "reserve"),
    "owner_only": boolean,  # held: the caller's lock whatever its key (mq.sh's -n)
    "completion": optional(text()),
    "error": optional(text()),
    "timeout": number(high=MAX_SECONDS),  # -d; < 0: none
    "budget": optional(number(0, MAX_SECONDS)),
    "priority": optional(integer(-MAX_PRIORITY, MAX_PRIORITY)),
    "interactive": boolean,
    "files": each(text()),
    "dtb": text(),
    "bitstream": text(),
    "linux": boolean,
    "system": optional(table),  # a bare job's system (checked whole by inventory.system_from_wire)
}


def check_arguments(op: str, args: Mapping[str, Any], accepted: Collection[str], required: Collection[str],
                    checks: Mapping[str, Check] = ARGUMENTS) -> None:
    """Refuse a request ``op`` whose ``args`` miss a ``required`` field, carry one not
    ``accepted``, or hold a value its check refuses."""
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise BadInputError(f"bad request: {safe_text(op)} takes no field '{safe_text(str(unknown[0]))}'")
    missing = sorted(set(required) - set(args))
    if missing:
        raise BadInputError(f"bad request: {safe_text(op)} needs the field '{missing[0]}'")
    for field, value in args.items():
        checks[field](field, value)


__all__ = ["ARGUMENTS", "JOB_ARGUMENTS", "MAX_LOCK_TIMEOUT", "Check", "check_arguments"]
