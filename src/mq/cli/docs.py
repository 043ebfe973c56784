"""Generate the man page and shell completions from the CLI itself.

``python3 -m mq.cli.docs`` rewrites ``man/mq.1`` and ``completions/``; a test
fails when the committed files drift from what this produces.
"""

from __future__ import annotations

import inspect
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
              "15 run: the job's lock was taken away (job stopped, board powered off), 64 usage, 128+N signal N.",
              ".SH FILES", "~/.config/mq/config.toml, <base>/lab.toml, <base>/*.lock, <base>/audit.jsonl",
              ".SH SEE ALSO", "lockfile(1), ssh_config(5)"]
    return "\n".join(lines) + "\n"


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    lines: list[str] = []
    declared = _declared_help(command)
    for param in command.get_params(ctx):
        record = _help_record(param, declared.get(param.name or ""))
        if record is None:
            continue
        lines += [".TP", ".B " + _roff(record[0]), _roff(record[1])]
    return lines


def _declared_help(command: click.Command) -> dict[str, str]:
    """Each parameter's help as declared in the typer function (``typer.Argument(help=...)``).

    Click 8.5 gave ``click.Argument`` a ``help`` of its own, which overwrites the one typer
    stores on its arguments, so the declaration is the version-independent source.
    """
    if command.callback is None:
        return {}
    from typer.models import ParameterInfo
    from typer.utils import get_params_from_function

    declared = get_params_from_function(inspect.unwrap(command.callback))
    return {name: meta.default.help for name, meta in declared.items()
            if isinstance(meta.default, ParameterInfo) and meta.default.help}


def _help_record(param: click.Parameter, declared_help: str | None) -> tuple[str, str] | None:
    """``(term, help)`` for one parameter, rendered from attributes that are stable across click
    versions (``get_help_record`` changed in click 8.5), in click's own layout."""
    if getattr(param, "hidden", False):
        return None
    help_text = declared_help or getattr(param, "help", None) or ""
    extra: list[str] = []
    if isinstance(param, click.Option):
        term = " / ".join(_option_term(param, opts) for opts in (param.opts, param.secondary_opts) if opts)
        default = _default_text(param)
        if default:
            extra.append(f"default: {default}")
    else:
        term = param.metavar or (param.name or "").upper()
        if param.nargs != 1:
            term += "..."
        if not param.required and not term.startswith("["):
            term = f"[{term}]"
    if param.required:
        extra.append("required")
    if extra:
        help_text = f"{help_text}  [{'; '.join(extra)}]" if help_text else f"[{'; '.join(extra)}]"
    return term, help_text


def _option_term(option: click.Option, opts: list[str]) -> str:
    """``-k, --key TEXT``: the names, shortest prefix first, then the metavar unless a flag."""
    names = ", ".join(sorted(opts, key=lambda opt: len(opt) - len(opt.lstrip(opt[:1]))))
    if option.is_flag or option.count:
        return names
    if option.metavar is not None:
        metavar = option.metavar
    elif isinstance(option.type, click.Choice):
        metavar = "[" + "|".join(str(choice) for choice in option.type.choices) + "]"
    else:
        metavar = option.type.name.upper()
    return f"{names} {metavar}{'...' if option.nargs != 1 else ''}"


def _default_text(option: click.Option) -> str:
    """The ``[default: X]`` text, or "" when none is shown (flags, None, empty lists)."""
    if isinstance(option.show_default, str):
        return f"({option.show_default})"
    default = option.default
    if not option.show_default or option.is_flag or default is None or default is False or callable(default):
        return ""
    if isinstance(default, (list, tuple)):
        return ", ".join(str(item) for item in default)
    return str(default)


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
