"""Errors cross the wire as their kind and fields and come back as the same class."""

from __future__ import annotations

import json

import pytest

import mq.engine.host.boot
import mq.settings.errors
import mq.transport.base  # registers the client-side kinds too
from mq.engine.core import errors, protocol

SAMPLES: list[errors.EngineError] = [
    errors.EngineError("plain trouble"),
    errors.InventoryError("/lab/lab.toml", "systems.b1.boot", "unknown placeholder {sytem}"),
    errors.UnknownTargetError("nope", ["b1", "b2"], ["trio"]),
    errors.BadInputError("Key must not contain control characters such as newlines"),
    errors.NotAcquiredError("b1", "wait cancelled"),
    errors.NotAcquiredError("trio"),
    errors.NotHolderError("b1", "Lock for b1 is held with a different key", errors.NotHolderError.WRONG_KEY),
    errors.AlreadyHeldError("b1", "K", "K"),
    errors.BoardOfflineError("b1", "new firmware", "alice", 1767225600.0),
    errors.LockDirError("/var/cache/machinelocks", "lock directory is not writable by alice"),
    errors.DiskError("/var/cache/machinelocks/b1.lock", "disk full creating lock"),
    errors.Interrupted(15),
    errors.ProtocolMismatch("mq protocol mismatch"),
    mq.engine.host.boot.BootError("cannot start the boot command 'x'"),
]


@pytest.mark.parametrize("original", SAMPLES, ids=lambda e: type(e).__name__)
def test_error_round_trip(original: errors.EngineError) -> None:
    wire = json.loads(json.dumps(protocol.error_to_wire(original)))
    again = protocol.error_from_wire(wire)
    assert type(again) is type(original)
    assert again.fields() == original.fields()
    assert (again.message, again.exit_code) == (original.message, original.exit_code)


def test_every_engine_error_kind_is_covered() -> None:
    engine_kinds = {name for name, cls in errors.EngineError.kinds.items() if cls.__module__.startswith("mq.engine")}
    assert engine_kinds - {"ClientGone"} <= {type(e).__name__ for e in SAMPLES}


def test_unknown_kind_keeps_message_and_exit_code() -> None:
    again = protocol.error_from_wire({"type": "FutureError", "message": "from a newer host", "exit_code": 10})
    assert (type(again), again.message, again.exit_code) == (errors.EngineError, "from a newer host", 10)


def test_fields_that_do_not_fit_fall_back_to_the_message() -> None:
    again = protocol.error_from_wire({"type": "NotHolderError", "fields": {"name": "b1"}, "message": "odd",
                                      "exit_code": 3})
    assert (type(again), again.message, again.exit_code) == (errors.EngineError, "odd", 3)
