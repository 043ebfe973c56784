"""Entry point (``mq`` and ``mq.sh``): argv compatibility, errors to exit codes."""

from __future__ import annotations

import sys
from typing import List, Optional

from ..engine.errors import EXIT_USAGE, EngineError, Interrupted
from ..engine.signals import GUARD
from ..render import err


def normalize(argv: List[str]) -> List[str]:
    """Accept mq.sh spellings unchanged (they are also declared as option names)."""
    return list(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = normalize(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    import click
    import typer.main

    from .app import app

    command = typer.main.get_command(app)
    GUARD.install()
    try:
        result = command.main(args=args, prog_name="mq", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        err(f"mq: {exc.format_message()}")
        return EXIT_USAGE
    except click.exceptions.Abort:
        return 130
    except Interrupted as exc:
        err(exc.message)
        return exc.exit_code
    except EngineError as exc:
        err(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except Exception:
        if debug:
            raise
        err(f"mq: unexpected error: {sys.exc_info()[1]!r} (run with --debug for a traceback)")
        return 70
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
