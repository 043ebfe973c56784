"""How a ``run`` job ends: its outcomes, each with its exit code (README "Exit codes"), shared by
the host that runs the job and the client that reports it."""

from __future__ import annotations

from .errors import ExitCode

COMPLETED, ERROR_TEXT, TIMED_OUT, CONSOLE_ENDED, DETACHED = "completed", "error", "timeout", "console-ended", "detached"
LOCK_LOST = "lock-lost"  # the job's lock was broken or reclaimed behind its back (engine.lockwatch)
RELEASED = "released"  # its holder released the job's lock (sem -signal with the key): the job ended quietly
OUTCOME_EXIT = {COMPLETED: ExitCode.OK, ERROR_TEXT: ExitCode.RUN_ERROR_TEXT, TIMED_OUT: ExitCode.RUN_TIMED_OUT,
                CONSOLE_ENDED: ExitCode.RUN_CONSOLE_ENDED, LOCK_LOST: ExitCode.RUN_LOCK_LOST,
                RELEASED: ExitCode.OK}
# The client prints this line on stdout (and in -l) after a -d expiry, as the seL4 lab's
# reboot scripts do: the seL4 CI reads it to classify the run.
TIMEOUT_MARKER = "[[Timeout]]"
EXIT_BOOT_FAILED = ExitCode.BOOT_FAILED

__all__ = ["COMPLETED", "CONSOLE_ENDED", "DETACHED", "ERROR_TEXT", "EXIT_BOOT_FAILED", "LOCK_LOST", "OUTCOME_EXIT",
           "RELEASED", "TIMED_OUT", "TIMEOUT_MARKER"]
