"""Entry point (``mq`` and ``mq.sh``): argv compatibility, errors to exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import List, Optional, Tuple

from mq.engine.core.errors import EngineError, ExitCode, Interrupted
from mq.engine.core.signals import GUARD
from mq.views.render import diag, err

MQSH_NAME = "mq.sh"  # invoked under this name, mq is mq.sh (cli/mqsh.py)


def is_mqsh(argv0: str) -> bool:
    """Called by the name ``mq.sh`` (the console script, or any link of that name)."""
    return os.path.basename(argv0) == MQSH_NAME


def split_globals(args: List[str]) -> Tuple[dict[str, str], List[str]]:
    """``--host``/``--base``/``--debug`` given before the command, and the rest."""
    found: dict[str, str] = {}
    index = 0
    while index < len(args) and args[index].startswith("--"):
        name, eq, value = args[index].partition("=")
        if name in ("--host", "--base"):
            if not eq and index + 1 < len(args):
                index += 1
                value = args[index]
            found[name[2:]] = value
        elif name != "--debug":
            break
        index += 1
    return found, args[index:]


def connect_early(args: List[str], mqsh_name: bool) -> None:
    """Start a remote lab's connection before typer is even imported (overlaps ~0.1 s)."""
    if any(a in ("-h", "--help", "--version") for a in args) or not args:
        return
    try:
        from mq.settings.config import load_config
        from mq.transport import start_early

        given = split_globals(args)[0]
        start_early(load_config(host=given.get("host"), base=given.get("base"), mqsh=mqsh_name))
    except Interrupted:
        raise  # Ctrl+C while starting: reported by run()
    except EngineError:
        return  # reported properly when the command opens the lab


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prog = sys.argv[0] if prog is None else prog
    mqsh_name = is_mqsh(prog)
    if "_MQ_COMPLETE" in os.environ:  # shell completion (completions/*) under either name: the typer CLI answers
        return cli_main(args, mqsh_name=mqsh_name)
    # Until a command runs, nothing is held or queued: a signal ends mq at once with one
    # line (mq/engine/core/early_signals.py, installed by mq's first line). GUARD takes over just
    # before the command; from then on, one landing in an import waits for a safe point.
    if os.environ.get("MQ_NO_EARLY") != "1":
        connect_early(args, mqsh_name)
    if mqsh_name:
        from . import mqsh

        given, rest = split_globals(args)
        GUARD.install()
        return mqsh.main(rest, prog, given.get("host"), given.get("base"),
                         delegate=lambda words: cli_main(args[:len(args) - len(rest)] + words, mqsh_name=True))
    return cli_main(args)


def cli_main(args: List[str], mqsh_name: bool = False) -> int:
    """The typer CLI; as ``mq.sh``, SSH failures are left to ``mqsh.main``."""
    debug = "--debug" in args
    if debug:
        os.environ["MQ_DEBUG"] = "1"  # read by the transports (transport.remote.DEBUG_ENV)
    import click
    import typer.main

    from .app import app
    from .state import Globals

    command = typer.main.get_command(app)
    if "_MQ_COMPLETE" in os.environ:  # shell completion: typer's classes match completions/*
        from typer._completion_classes import completion_init

        completion_init()  # then typer answers from the words in the environment, and exits
        command.main(args=[], prog_name=MQSH_NAME if mqsh_name else "mq", complete_var="_MQ_COMPLETE",
                     obj=Globals(mqsh=mqsh_name))
    GUARD.install()  # the CLI is loaded; the command may now hold or queue something
    prog = MQSH_NAME if mqsh_name else "mq"
    rest = split_globals(args)[1]
    if not rest:  # `mq` alone: what it is and its commands; an incomplete command line
        err(command.get_help(click.Context(command, info_name=prog, **command.context_settings)))
        return ExitCode.USAGE
    try:
        from .argv import normalize

        assert isinstance(command, click.Group)
        args = normalize(command, args, len(args) - len(rest))
        result = command.main(args=args, prog_name=prog, standalone_mode=False, obj=Globals(mqsh=mqsh_name))
    except click.exceptions.UsageError as exc:
        return _failed(_once(exc.format_message()), ExitCode.USAGE, "UsageError", rest)
    except click.exceptions.Abort:
        return ExitCode.INTERRUPTED
    except Interrupted as exc:
        return _failed(exc.message, exc.exit_code, "Interrupted", rest)
    except EngineError as exc:
        from mq.transport.base import SshError

        if mqsh_name and isinstance(exc, SshError):
            raise  # mqsh.main says it as mq.sh does: on stdout, exit 1
        return _failed(exc.message, exc.exit_code, type(exc).__name__, rest)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.BROKEN_PIPE
    except Exception as exc:
        if debug:
            raise
        return _failed(f"unexpected error: {exc!r} (run with --debug for a traceback)", ExitCode.INTERNAL,
                       "InternalError", rest)
    return result if isinstance(result, int) else 0


def _failed(message: str, code: int, kind: str, rest: List[str]) -> int:
    """Say why on stderr; with ``--json``, also as an ``error`` envelope on stdout."""
    diag(message)
    options = rest[1:rest.index("--")] if "--" in rest else rest[1:]
    if "--json" in options:
        from mq.views.render import envelope, out

        with contextlib.suppress(OSError):
            out(envelope("error", {"error": kind, "message": message, "exit_code": int(code)}))
    return code


def _once(message: str) -> str:
    """Click's message with a sentence said twice said once (typer adds its own "Did you mean")."""
    import re

    text = re.sub(r"\s*\(Did you mean one of: [^)]*\)", "", message.strip())  # click's, after typer's
    sentences = re.split(r"(?<=[.?!])\s+", text)
    return " ".join(dict.fromkeys(sentences))


def run() -> None:
    """Console-script entry: flush and leave without the interpreter's exit-time GC.

    Tearing down paramiko, cryptography and typer objects at exit costs
    75-150 ms per command; the lab connection is already closed by now.
    """
    try:
        code = main()
        GUARD.finish()  # the result is out: a signal now changes nothing (no traceback at exit)
    except Interrupted as exc:  # a signal not taken by the command itself (mq.sh's own verbs)
        GUARD.finish()
        diag(exc.message)
        code = exc.exit_code
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or ExitCode.BROKEN_PIPE
    os._exit(code)
