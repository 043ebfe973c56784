"""``mq holders``: the locks held longer than a limit, and a command run for each (the lab's lockbot).

``--notify 'COMMAND {user} {board} ...'`` is split with shell-word rules and
its placeholders are replaced by whole arguments, as a system's ``boot``
template is: no shell ever sees a user name or key, however it is written.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import typer

from mq.engine.core.errors import BadInputError, ExitCode, safe_text
from mq.views import render

from .state import open_from

if TYPE_CHECKING:
    import subprocess

    from mq.engine.core.results import BoardState, Offline

DEFAULT_OLDER_THAN = "2h"  # the old mail script's two hours
PLACEHOLDERS = ("user", "board", "since", "key", "held", "grant")
NOTIFY_TIMEOUT = 60.0  # seconds one notification may take before it is killed (with its children)

Template = list[list[tuple[bool, str]]]  # words, each as literal text and placeholders (templates.tokens)


@dataclass(frozen=True)
class Held:
    """One lock held longer than the limit."""

    board: str
    user: str
    key: Optional[str]  # None: no key file (a lockfile(1) lock)
    since: float  # Unix seconds
    held: float  # seconds
    grant: Optional[int]
    offline: Optional[Offline]  # the board was taken offline: the maintenance lock follows this release

    def to_json(self) -> dict[str, Any]:
        offline = self.offline
        return {"board": self.board, "user": self.user, "key": self.key, "since": self.since,
                "held": round(self.held, 3), "grant": self.grant,
                "offline": None if offline is None else {"reason": offline.reason, "user": offline.user,
                                                         "since": offline.since}}

    def values(self) -> dict[str, str]:
        """What each ``--notify`` placeholder becomes."""
        return {"user": self.user, "board": self.board, "key": "0" if self.key is None else self.key,
                "since": _iso(self.since),
                "held": render.duration(self.held), "grant": "" if self.grant is None else str(self.grant)}


def parse_duration(text: str) -> float:
    """``--older-than``: ``2h``, ``90m``, ``1d``, ``1h30m``, ``45s`` or plain seconds; BadInputError (5) else."""
    from mq.client.since import span_seconds

    seconds = span_seconds(text.strip())
    if seconds is None:
        raise BadInputError(f"--older-than {safe_text(text)}: not a duration (90m, 2h, 1d, 1h30m, or seconds)")
    return seconds


def parse_template(text: str) -> Template:
    """``--notify``'s words, checked before anything runs: every placeholder known."""
    from mq.engine.core import templates  # here: `mq --help` loads no inventory code

    try:
        words = templates.split(text)
    except ValueError as exc:
        raise BadInputError(f"--notify: cannot split the command: {exc}") from None
    if not words or not words[0]:
        raise BadInputError("--notify: the command is empty")
    parsed = [templates.tokens(word) for word in words]
    for tokens in parsed:
        for placeholder, name in tokens:
            if placeholder and name not in PLACEHOLDERS:
                known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                raise BadInputError(f"--notify: unknown placeholder {{{name}}} (known: {known})")
    return parsed


def expand(template: Template, values: dict[str, str]) -> list[str]:
    """The argv: each word with its placeholders replaced; one word stays one argument (even empty)."""
    return ["".join(values[text] if placeholder else text for placeholder, text in tokens) for tokens in template]


def select(states: list[BoardState], limit: float, now: float) -> list[Held]:
    """The locks held at least ``limit`` seconds, in inventory order; a maintenance lock (a board
    taken offline, ``mq offline``) is nobody's to give back and is left out."""
    found = []
    for state in states:
        holder = state.holder
        if holder is None or (state.offline is not None and state.offline.locked):
            continue
        since = holder.since_ns / 1e9
        held = max(0.0, now - since)
        if held >= limit:
            found.append(Held(board=state.board, user=holder.user, key=holder.key, since=since, held=held,
                              grant=holder.grant, offline=state.offline))
    return found


def table(found: list[Held], now: float) -> list[str]:
    rows = [["BOARD", "USER", "KEY", "SINCE", "HELD", "GRANT"]]
    rows += [[h.board, safe_text(h.user), safe_text("0" if h.key is None else h.key, 40), render.clock(h.since, now),
              render.duration(h.held), "" if h.grant is None else f"#{h.grant}"] for h in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        offline = found[index - 1].offline if index else None
        if offline is not None:
            lines.append(f"    offline: {safe_text(offline.reason, 256)} (by {safe_text(offline.user)}): "
                         "the maintenance lock takes its place when released")
    return lines


def _iso(when: float) -> str:
    from datetime import datetime  # here: `mq --help` loads none of what holders needs

    return datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def notify(argv: list[str]) -> Optional[str]:
    """Run one notification (no shell; stdin empty, its output to stderr); why it failed, or None."""
    import subprocess

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=_stderr_fd(), start_new_session=True)
    except OSError as exc:
        return f"cannot run {safe_text(argv[0], 200)}: {os.strerror(exc.errno) if exc.errno else exc}"
    try:
        code = proc.wait(timeout=NOTIFY_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return f"timed out after {NOTIFY_TIMEOUT:.0f} s"
    except BaseException:  # Ctrl+C: the command's whole group goes too
        _kill(proc)
        raise
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit {code}" if code else None


def _stderr_fd() -> Optional[int]:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
        return sys.stderr.fileno()
    return None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    import signal

    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def holders(ctx: typer.Context,
            older_than: str = typer.Option(DEFAULT_OLDER_THAN, "--older-than", metavar="DURATION",
                                           help="List locks held at least this long: 90m, 2h, 1d, 1h30m, or "
                                                "seconds (0: every lock)."),
            notify_template: Optional[str] = typer.Option(
                None, "--notify", metavar="COMMAND",
                help="Run COMMAND once per such lock, without a shell; {user} {board} {since} {key} {held} "
                     "{grant} become whole arguments."),
            as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Locks held longer than a limit (default 2h), and a command to nag each holder.

    One line per lock, in inventory order: board, user, key, since, how long, grant. A board
    taken offline keeps its maintenance lock out of this list (see `mq status`). With
    --notify, COMMAND runs once per lock listed (a cron job's lockbot), split with shell-word
    rules, never through a shell: {since} is the date (ISO 8601), {held} the span (3h05m),
    {key} 0 when there is none, {grant} empty for a lock mq did not grant. Its output goes
    to stderr; one that fails or runs over 60 s is named on stderr
    (`mq: notify for b1 (alice) failed: exit 1`), the others still run, and mq exits 17.
    """
    limit = parse_duration(older_than)
    template = parse_template(notify_template) if notify_template is not None else None
    from mq.client import service

    states = service.sem_dumpall(open_from(ctx))
    now = time.time()
    found = select(states, limit, now)
    if as_json:
        render.out(render.envelope("holders", [h.to_json() for h in found]))
    elif found:
        render.write_lines(table(found, now))
    for line in render.unread_lines(states):
        render.diag(line)
    if not found:
        render.diag(f"no lock held longer than {safe_text(older_than.strip())}")
    if template is None:
        return
    sys.stdout.flush()
    failed = 0
    for item in found:
        why = notify(expand(template, item.values()))
        if why is not None:
            failed += 1
            render.diag(f"notify for {item.board} ({safe_text(item.user)}) failed: {why}")
    if failed:
        raise typer.Exit(ExitCode.NOTIFY_FAILED)
