"""Running an mq.sh lab's shell code for ``mq import-mqsh``: one shell, a clean environment, a time limit.

This module owns everything that happens inside the shell and how its answers come back: the
driver script (``_DRIVER``: the record protocol on fd 3, sourcing each file safely, calling a
function, probing a power-off), the ``plan`` of steps and the ``driver`` that runs them, starting
and stopping the shell (``run_shell``, with ``CLEAN_PATH``), decoding its ``records`` into
``Output`` and ``ask_shell``, which ties these together. ``_said`` turns what the shell said on
stderr into a message, without the place in the driver that the shell puts first. What the
answers mean is ``mqsh_import``'s business.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mq.engine.core.errors import BadInputError, safe_text

from .mqsh_lab import FLAG_FIELDS, TEXT_FIELDS, Finding, LabFile, _shown

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
_DRIVER_PLACE = re.compile(r"^\S*/mq-import-[^/]*/import\.sh: (line )?[0-9]+: ")


def _said(stderr: str) -> str:
    """`` (its last line)`` of what a shell said on stderr, for a message ('' when it said nothing),
    without the place in this module's own script that the shell puts first."""
    lines = stderr.strip().splitlines()
    return f" ({safe_text(_DRIVER_PLACE.sub('', lines[-1]), 200)})" if lines else ""


# The shell side: one record of three NUL-terminated fields (status, text, stderr) per step, on
# fd 3, which the lab's code never sees; what it prints itself goes to /dev/null. "none": no such
# function. A file is sourced twice: in a subshell first, to see that it neither exits nor fails
# to parse (either would end the shell), then for real. A power-off probe's text is R and what
# RebootShutdown was given, or E and the function's status.
_DRIVER = r"""exec 3>&1 >/dev/null </dev/null
__mqi_err=$1
__mqi_emit() { printf '%s\0%s\0%s\0' "$1" "$2" "$3" >&3; }
__mqi_stderr() { if [ -s "$__mqi_err" ]; then cat "$__mqi_err"; fi; }
__mqi_load() {
    if [ "$( { . "$1"; } >/dev/null 2>"$__mqi_err" 3>&-; printf x )" = x ]; then
        . "$1" >/dev/null 2>&1 3>&-
        __mqi_emit 0 "" "$(__mqi_stderr)"
    else
        __mqi_emit 1 "" "$(__mqi_stderr)"
    fi
}
__mqi_call() {
    __mqi_f=$1
    shift
    if ! command -v "$__mqi_f" >/dev/null 2>&1; then
        __mqi_emit none "" ""
        return
    fi
    __mqi_v=$("$__mqi_f" "$@" 2>"$__mqi_err" 3>&-)
    __mqi_s=$?
    if [ "$__mqi_s" -eq 0 ]; then
        __mqi_emit 0 "$__mqi_v" ""
    else
        __mqi_emit "$__mqi_s" "$__mqi_v" "$(__mqi_stderr)"
    fi
}
__mqi_power_off() {
    if ! command -v "$1" >/dev/null 2>&1; then
        __mqi_emit none "" ""
        return
    fi
    __mqi_v=$(
        exec 4>&1 >/dev/null 2>"$__mqi_err" 3>&-
        RebootShutdown() { printf 'R%s' "$1" >&4; exit 0; }
        PATH=/nonexistent
        "$1"
        printf 'E%s' "$?" >&4
    )
    __mqi_emit 0 "$__mqi_v" "$(__mqi_stderr)"
}
"""


@dataclass(frozen=True)
class Output:
    """What one step in the shell gave: its status (None: no such function), text and stderr."""

    status: Optional[str]
    text: str
    stderr: str

    def failure(self) -> str:
        """Why the function gave no value ('' when it did)."""
        if self.status is None:
            return "function not defined"
        if self.status != "0":
            return f"exited {self.status}{_said(self.stderr)}"
        return ""


@dataclass(frozen=True)
class Step:
    """One thing the shell does for a lab file: ``load`` it, ``call`` a function, probe a power-off."""

    owner: str  # the file's ``where``
    key: str  # what it is for: load, files, files -L, name, arch ..., power_off, members
    command: Tuple[str, ...]  # the driver's function and its arguments


def plan(systems: Sequence[LabFile], pools: Sequence[LabFile]) -> List[Step]:
    """Every step, in order: load the systems, then the pools (which may call the systems'
    functions), then ask each system and pool for its values."""
    steps = [Step(f.where, "load", ("__mqi_load", f.path)) for f in (*systems, *pools)]
    for system in systems:
        name = system.name
        steps.append(Step(system.where, "files", ("__mqi_call", f"SystemNumFiles_{name}")))
        steps.append(Step(system.where, "files -L", ("__mqi_call", f"SystemNumFiles_{name}", "-L")))
        steps.append(Step(system.where, "name", ("__mqi_call", f"SystemName_{name}")))
        steps += [Step(system.where, attr, ("__mqi_call", f"{prefix}_{name}"))
                  for prefix, attr in (*TEXT_FIELDS, *FLAG_FIELDS)]
        steps.append(Step(system.where, "power_off", ("__mqi_power_off", f"SystemPowerOff_{name}")))
    steps += [Step(pool.where, "members", ("__mqi_call", f"Systems_{pool.name}")) for pool in pools]
    return steps


def driver(steps: Sequence[Step], systems: Sequence[LabFile], pools: Sequence[LabFile]) -> str:
    """The shell script that runs ``steps``: the protocol, mq.sh's list helpers, one line a step."""
    def lister(function: str, files: Sequence[LabFile]) -> str:
        names = " ".join(shlex.quote(f.name) for f in files)
        return f"{function}() {{ printf '%s\\n' {names}; }}" if files else f"{function}() {{ :; }}"

    lines = [_DRIVER, lister("SystemList", systems), lister("PoolList", pools)]
    lines += [" ".join(shlex.quote(word) for word in step.command) for step in steps]
    return "\n".join(lines) + "\n"


def run_shell(script: str, shell: str, directory: str, time_limit: float) -> Tuple[List[Output], str, bool]:
    """Run ``script`` in ``shell`` with a clean environment; its records, its own stderr, and whether
    it was stopped at ``time_limit`` (with all it started)."""
    with tempfile.TemporaryDirectory(prefix="mq-import-") as scratch:
        path = os.path.join(scratch, "import.sh")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(script)
        env = {"PATH": CLEAN_PATH, "HOME": scratch, "SCRIPT_PATH": directory, "LC_ALL": "C"}
        try:
            proc = subprocess.Popen([shell, path, os.path.join(scratch, "stderr")], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=scratch,
                                    start_new_session=True)
        except OSError as exc:
            raise BadInputError(f"cannot run the shell {_shown(shell)}: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=time_limit)
            stopped = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            stopped = True
    return records(out), err.decode("utf-8", "replace"), stopped


def records(out: bytes) -> List[Output]:
    """The shell's records; a field that is not UTF-8 becomes the replacement character (``_value``
    refuses it)."""
    fields = out.split(b"\0")[:-1]
    decoded = [part.decode("utf-8", "replace") for part in fields]
    return [Output(None if decoded[i] == "none" else decoded[i], decoded[i + 1], decoded[i + 2])
            for i in range(0, len(decoded) - 2, 3)]


def ask_shell(systems: Sequence[LabFile], pools: Sequence[LabFile], shell: str, directory: str,
              time_limit: float) -> Tuple[Dict[Tuple[str, str], Output], List[Finding]]:
    """Every step's output by (file, key), and an error for a step the shell never finished."""
    steps = plan(systems, pools)
    outputs, stderr, stopped = run_shell(driver(steps, systems, pools), shell, directory, time_limit)
    found: List[Finding] = []
    if len(outputs) < len(steps):
        step = steps[len(outputs)]
        why = f"did not finish within {time_limit:g} s" if stopped else f"ended the shell{_said(stderr)}"
        found.append(Finding(step.owner, _shown_function(step), why + ": nothing after it was read"))
    return {(step.owner, step.key): output for step, output in zip(steps, outputs, strict=False)}, found


def _shown_function(step: Step) -> str:
    return "" if step.key == "load" else " ".join(step.command[1:])


__all__ = ["CLEAN_PATH", "Output", "Step", "ask_shell", "driver", "plan", "records", "run_shell"]
