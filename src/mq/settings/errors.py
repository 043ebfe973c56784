"""Client-side errors; the engine's (with their exit codes) are re-exported here."""

from __future__ import annotations

from mq.engine.core.errors import (
    EXIT_ALREADY_HELD,
    EXIT_BAD_INPUT,
    EXIT_CONFIG,
    EXIT_DISK,
    EXIT_HOST,
    EXIT_LOCKDIR,
    EXIT_NOT_ACQUIRED,
    EXIT_NOT_HOLDER,
    EXIT_OK,
    EXIT_SSH,
    EXIT_UNKNOWN_TARGET,
    EXIT_USAGE,
    AlreadyHeldError,
    BadInputError,
    DiskError,
    EngineError,
    ExitCode,
    Interrupted,
    InventoryError,
    LockDirError,
    NotAcquiredError,
    NotHolderError,
    UnknownTargetError,
)

MqError = EngineError

__all__ = [
    "EXIT_ALREADY_HELD", "EXIT_BAD_INPUT", "EXIT_CONFIG", "EXIT_DISK", "EXIT_HOST", "EXIT_LOCKDIR",
    "EXIT_NOT_ACQUIRED", "EXIT_NOT_HOLDER", "EXIT_OK", "EXIT_SSH", "EXIT_UNKNOWN_TARGET", "EXIT_USAGE",
    "AlreadyHeldError", "BadInputError", "ConfigError", "DiskError", "EngineError", "ExitCode", "Interrupted",
    "InventoryError", "LockDirError", "MqError", "NotAcquiredError", "NotHolderError", "UnknownTargetError",
    "UsageError",
]


class UsageError(EngineError):
    """The command line is incomplete or malformed (exit 64, as for parser errors)."""

    exit_code = EXIT_USAGE


class ConfigError(EngineError):
    """mq's own configuration is wrong; names the file (or variable) and key."""

    exit_code = EXIT_CONFIG

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key
