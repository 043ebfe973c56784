"""Generate the man page and shell completions from the CLI itself.

``python3 -m mq.cli.docs`` rewrites ``man/mq.1`` and ``completions/``; a test
fails when the committed files drift from what this produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import typer.main

from .. import __version__
from .app import app

ROOT = Path(__file__).resolve().parents[3]
SHELLS = {"bash": "mq.bash", "zsh": "_mq", "fish": "mq.fish"}


def _roff(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-").replace("'", "\\'")


def man_page() -> str:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    ctx = click.Context(group, info_name="mq")
    lines = [
        f'.TH MQ 1 "" "mq {__version__}" "User Commands"',
        ".SH NAME", "mq, mq.sh \\- a fair machine queue for shared embedded test boards",
        ".SH SYNOPSIS", ".B mq", "[\\-\\-host HOST] [\\-\\-base DIR] [\\-\\-debug] COMMAND ...",
        ".SH DESCRIPTION", _roff(group.help or ""),
        ".SH GLOBAL OPTIONS",
    ]
    lines += _options(group, ctx)
    lines.append(".SH COMMANDS")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        sub = click.Context(command, info_name=name, parent=ctx)
        lines += [".SS " + _roff(" ".join(command.collect_usage_pieces(sub)).join([f"mq {name} ", ""])),
                  _roff(command.help or "")]
        lines += _options(command, sub)
    lines += [".SH EXIT STATUS", "See README.md, section \\(lqExit codes\\(rq: 0 success, 1 unknown system or pool, "
              "2 lock not acquired, 3 not the holder, 4 already held, 5 bad input, 6 configuration, "
              "7 lock directory, 8 disk full, 9 Unable to ssh, 10 host engine, 11\\(en14 run outcomes, "
              "64 usage, 128+N signal N.",
              ".SH FILES", "~/.config/mq/config.toml, <base>/lab.toml, <base>/*.lock, <base>/audit.jsonl",
              ".SH SEE ALSO", "lockfile(1), ssh_config(5)"]
    return "\n".join(lines) + "\n"


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    lines: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        lines += [".TP", ".B " + _roff(record[0]), _roff(record[1])]
    return lines


def completion(shell: str) -> str:
    from click.shell_completion import get_completion_class
    from typer._completion_classes import completion_init

    completion_init()  # the classes typer answers with at run time (``complete_bash`` style)
    cls = get_completion_class(shell)
    assert cls is not None
    return cls(typer.main.get_command(app), {}, "mq", "_MQ_COMPLETE").source()


def generated() -> dict[Path, str]:
    files = {ROOT / "man" / "mq.1": man_page()}
    for shell, name in SHELLS.items():
        files[ROOT / "completions" / name] = completion(shell)
    return files


def main() -> int:
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
