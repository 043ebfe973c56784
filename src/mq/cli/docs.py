"""Generate the man page, the command reference and shell completions from the CLI itself.

``python3 -m mq.cli.docs`` rewrites ``man/mq.1``, ``docs/reference.md`` and ``completions/``; a test
fails when the committed files drift from what this produces. The commands and
options come from the typer app, the exit statuses from ``ExitCode``; the rest
of the page (environment, files, examples, installation) is written here.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import List, Tuple

import click
import typer.main

from mq import __version__
from mq.engine.core.errors import ExitCode

from .app import app
from .completions import COMPLETE_VAR, COMPLETIONS, completion

ROOT = Path(__file__).resolve().parents[3]

# What each exit status means (README.md, "Exit codes"); every ExitCode must have one.
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "Success.",
    ExitCode.UNKNOWN_TARGET: "Unknown system or pool (the message lists the valid names).",
    ExitCode.NOT_ACQUIRED: "Lock not acquired: the wait budget ran out or the wait was cancelled "
                           "(\"Failed to acquire lock for system (NAME)\").",
    ExitCode.NOT_HOLDER: "Not the holder: releasing a lock that is free, held by someone else, "
                         "or held with another key.",
    ExitCode.ALREADY_HELD: "You already hold this lock with no key or the same key (\"Please explicitly release\").",
    ExitCode.BAD_INPUT: "Bad input: a bad key, a negative -w, a bad -c or -e regular expression, "
                        "an unreadable -l, conflicting options.",
    ExitCode.CONFIG: "Configuration or inventory error (the file and key are named).",
    ExitCode.LOCKDIR: "Lock directory missing, not writable, or an operation denied "
                      "(for example reclaiming in a sticky directory).",
    ExitCode.DISK: "Disk or inodes full, or another I/O error (nothing is left half-written).",
    ExitCode.SSH: "\"Unable to ssh to HOST\": connection or authentication failure, connection lost.",
    ExitCode.HOST: "The lab host cannot run the engine (no python3 >= 3.9, the engine ended unexpectedly, "
                   "protocol mismatch), or the PostgreSQL queue database cannot be reached.",
    ExitCode.RUN_ERROR_TEXT: "run: the error text (-e) appeared.",
    ExitCode.RUN_TIMED_OUT: "run: no completion text within -d seconds.",
    ExitCode.RUN_CONSOLE_ENDED: "run: the console command ended before the completion text.",
    ExitCode.BOOT_FAILED: "run: the boot command could not be started.",
    ExitCode.RUN_LOCK_LOST: "run: the job's lock was taken away behind its back (lockfile -l, a -T reclaim, "
                            "a forced release; on the PostgreSQL queue also a client cut off for longer than "
                            "the grace period): the console is stopped, power_off is run, the new holder's "
                            "lock is left alone and stderr names who holds the board now.",
    ExitCode.BOARD_OFFLINE: "The board is out of service (mq offline): a wait for it alone, run on it, or a "
                            "release of its maintenance lock; the message gives the reason, who and since when.",
    ExitCode.NOTIFY_FAILED: "holders --notify: the command failed, could not start or ran over 60 s for at "
                            "least one holder (each is named on stderr; the others were still notified).",
    ExitCode.USAGE: "Command-line usage error.",
    ExitCode.INTERNAL: "Unexpected internal error (--debug shows the traceback).",
    ExitCode.AGENT_CLIENT_GONE: "Never mq's own status: the host-side engine's, when its client went silent "
                                "or away (the client then exits 9).",
    ExitCode.SIGNALLED: "Ended by signal N (shown as 128+N): 129 SIGHUP, 143 SIGTERM; "
                        "nothing is left held or queued.",
    ExitCode.INTERRUPTED: "Ctrl+C (SIGINT); nothing is left held or queued.",
    ExitCode.BROKEN_PIPE: "The reader of standard output went away (SIGPIPE).",
}
EXIT_MQSH = ("Under the name mq.sh, sem exits only 0, 1 or 2 (or 128+N), an SSH failure of any command "
             "exits 1, and mq.sh with no command prints its usage and exits 255, as mq.sh does; "
             "run and the listings keep the statuses above.")

ENVIRONMENT = [
    ("MQ_HOST", "The lab host: a name your ssh_config(5) knows, [user@]host, or \"local\" (no SSH). "
                "Wins over the configuration file; --host wins over it."),
    ("MQ_BASE", "The lock directory on the lab host; --base wins over it."),
    ("MQ_LAB", "The inventory file (default: BASE/lab.toml; /etc/mq/lab.toml, when it exists, for a shared "
               "lock directory)."),
    ("MQ_SSH_CONFIG", "The OpenSSH client configuration to use instead of ~/.ssh/config."),
    ("MQ_BACKEND", "A PostgreSQL connection string (postgresql://USER@HOST/DB, or libpq keywords): the queue, "
                   "the locks and the inventory live in that database (see mq admin); libpq's own PGPASSWORD, "
                   "PGSSLMODE, PGSERVICE, ~/.pgpass and service files apply."),
    ("MQ_CONFIG", "The configuration file to read instead of ~/.config/mq/config.toml (it must exist)."),
    ("XDG_CONFIG_HOME", "The configuration file is $XDG_CONFIG_HOME/mq/config.toml (default ~/.config)."),
    ("XDG_DATA_HOME", "The demo lab lives in $XDG_DATA_HOME/mq (default ~/.local/share)."),
    ("XDG_CACHE_HOME", "The cache directory, $XDG_CACHE_HOME/mq (default ~/.cache/mq): the completion cache "
                       "on the client; the engine and the jobs' images on the lab host."),
    ("HOME", "Where ~/.mq, ~/.config, ~/.cache and ~/.ssh are."),
    ("SSH_AUTH_SOCK", "The ssh-agent whose keys are offered."),
    ("MQ_NO_INOTIFY", "Set to 1, waiters poll the lock files instead of using inotify (for testing)."),
    ("MQ_NO_EARLY", "Set to 1, the connection to the lab host is not started before the command is parsed."),
    (COMPLETE_VAR, "Set by the completion scripts: print completions for the words in the environment "
                   "instead of running a command (never opens a connection)."),
]

FILES = [
    ("~/.config/mq/config.toml", "The configuration: host, base, lab, ssh_config, transport "
                                 "(\"paramiko\" or \"openssh\"), backend (a PostgreSQL queue)."),
    ("~/.mq", "mq.sh's configuration, its HOST= and BASE= lines (read, never executed). Under the name mq.sh "
              "it wins over config.toml; under the name mq it is read only when there is no config.toml."),
    ("~/.local/share/mq/", "The demo lab (lab.toml and its lock directory), created the first time mq runs "
                           "with nothing configured; never used under the name mq.sh."),
    ("~/.cache/mq/inventory-HOST-BASE.json", "The completion cache: a remote lab's system and pool names, "
                                             "written whenever a command reads the lab's inventory (mq sem "
                                             "refreshes it when it lacks the name given)."),
    ("~/.ssh/config", "The OpenSSH client configuration (HostName, User, Port, IdentityFile, ProxyJump, "
                      "ProxyCommand, UserKnownHostsFile ...)."),
    ("BASE/lab.toml", "The lab inventory: [systems.NAME] and [pools.NAME] tables, [queue] (the queue "
                      "policy: fifo or priority, aging, priorities by user and key; grace: how long a "
                      "client of a PostgreSQL queue that lost its connection keeps its place; max_priority: "
                      "the largest priority a member without mq_admin may ask for there) and [audit] "
                      "(syslog = true: audit records to syslog too). mq run executes its commands only if no one "
                      "but root, the lab's admin (the lock directory's owner) or the caller can replace it."),
    ("/etc/mq/lab.toml", "A shared lab's inventory (root-owned, 0644), used when the lock directory is "
                         "group- or world-writable and no inventory is named."),
    ("BASE/NAME.lock", "The lock of system NAME, as lockfile(1) makes it: mode 0444, owned by the holder, "
                       "its content the -T timeout (0: none)."),
    ("BASE/NAME.key", "The key stored with that lock (0: none)."),
    ("BASE/.mq/", "mq's own state: queue/ (one ticket per waiter), holders/ (grant records), sessions/ "
                  "(run jobs), offline/ (boards out of service), health/ (each board's row of board failures, for "
                  "health_limit), forged/ (records that claimed another owner, set aside), the counters grants "
                  "and seq, and the mutex."),
    ("BASE/audit.jsonl", "The audit log: one JSON object per grant, release, force, reclaim, cancel, "
                         "timeout, dead waiter, health, offline and online."),
    ("~/.cache/mq/engine-HASH/", "On the lab host: the engine the client shipped there."),
    ("~/.cache/mq/jobs/", "On the lab host: each run's private directory for its images."),
]

EXAMPLES = [
    ("A CI job: take a board of a pool, run the image on it, release it (the board's name is the last line "
     "-wait prints):",
     ['board=$(mq sem -wait odroidc4_pool -k "$CI_JOB_ID" | tail -n 1)',
      'mq run -n -s "$board" -k "$CI_JOB_ID" -f sel4test.img -c "All is well" -e "FAILED" -d 600',
      'mq sem -signal "$board" -k "$CI_JOB_ID"']),
    ("The same in one command: the first free board of the pool, released at the end:",
     ['mq run -s odroidc4_pool -f examples/sel4test-pass.img -c "All is well"']),
    ("Who holds what, and who waits:",
     ["mq sem -info odroidc4_pool", "mq sem -mr-info odroidc4_1", "mq sem dumpall", "mq systems"]),
    ("Reserve a board until Enter or Ctrl+D, on another lab:",
     ["mq --host tftp.lab --base /var/cache/machinelocks run -s odroidc4_1 -r"]),
    ("An unchanged mq.sh command line:",
     ["mq.sh sem -wait odroidc4_1 -k mykey -w 8 -t 10"]),
    ("Take a board out of service, and back:",
     ["mq offline odroidc4_2 --reason 'UART cable loose; fixed by Friday'", "mq online odroidc4_2"]),
    ("The lab host's lockbot (a cron job): a mail to each holder of a lock older than two hours:",
     ["mq holders --older-than 2h --notify 'mail -s \"you have held {board} since {since}\" {user}'"]),
]

INSTALL = [
    ("bash (with bash-completion)",
     ["dir=${XDG_DATA_HOME:-$HOME/.local/share}/bash-completion/completions",
      "mkdir -p $dir && cp completions/mq.bash completions/mq.sh.bash $dir/"],
     "or, without bash-completion, in ~/.bashrc: source /path/to/completions/mq.bash"),
    ("zsh",
     ["mkdir -p ~/.zfunc && cp completions/_mq ~/.zfunc/"],
     "and in ~/.zshrc, before compinit: fpath=(~/.zfunc $fpath); autoload -Uz compinit; compinit. "
     "If the completion does not appear, remove the stale ~/.zcompdump and start a new shell."),
    ("fish",
     ["cp completions/mq.fish completions/mq.sh.fish ~/.config/fish/completions/"],
     ""),
    ("this page",
     ["mkdir -p ~/.local/share/man/man1 && cp man/mq.1 ~/.local/share/man/man1/",
      "ln -sf mq.1 ~/.local/share/man/man1/mq.sh.1"],
     "man finds it when ~/.local/bin is on PATH (otherwise add ~/.local/share/man to MANPATH); "
     "system-wide, use /usr/local/share/man/man1. man -l man/mq.1 reads it from the source tree."),
]


def _roff(text: str) -> str:
    """Text for a roff line: every character prints as itself in ASCII (a backslash, a hyphen-minus,
    straight quotes), and no line begins as a control line (``.`` or ``'``)."""
    escaped = (text.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq").replace('"', "\\(dq")
               .replace("`", "\\(ga"))
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in escaped.splitlines())


def _paragraph(text: str) -> list[str]:
    """Help text as paragraphs: lines joined, blank lines become paragraph breaks."""
    blocks = [" ".join(block.split()) for block in text.strip().split("\n\n")]
    out: list[str] = []
    for block in filter(None, blocks):
        if out:
            out.append(".PP")
        out.append(_roff(block))
    return out


def _tagged(term: str, text: str, bold: bool = True) -> list[str]:
    return [".TP", (".B " if bold else "") + _roff(term), *_paragraph(text)]


def _example(lines: list[str]) -> list[str]:
    return [".PP", ".RS 4", ".nf", *(_roff(line) for line in lines), ".fi", ".RE"]


def man_page() -> str:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    ctx = click.Context(group, info_name="mq")
    lines = [
        f'.TH MQ 1 "" "mq {__version__}" "User Commands"',
        ".nh", ".ad l",  # no hyphenation (names and paths print whole), ragged right
        ".SH NAME", "mq, mq.sh \\- a fair machine queue for shared embedded test boards",
        ".SH SYNOPSIS", ".B mq", "[\\-\\-host HOST] [\\-\\-base DIR] [\\-\\-debug] COMMAND ...",
        ".br", ".B mq.sh", "COMMAND ...",
        ".SH DESCRIPTION", *_paragraph(group.help or ""),
        ".PP", _roff("Under the name mq.sh, mq behaves as the seL4 project's mq.sh does: the same command "
                     "lines, output and exit statuses (see EXIT STATUS)."),
        ".SH GLOBAL OPTIONS",
    ]
    lines += _options(group, ctx)
    lines.append(".SH COMMANDS")
    for name, command, sub in _commands(group, ctx):
        lines += [".SS " + _roff(" ".join(command.collect_usage_pieces(sub)).join([f"mq {name} ", ""])),
                  *_paragraph(command.help or "")]
        lines += _options(command, sub)
    lines += [".SH EXIT STATUS"]
    missing = set(ExitCode) - set(EXIT_MEANINGS)
    assert not missing, f"EXIT_MEANINGS lacks {sorted(missing)}"
    for code, meaning in EXIT_MEANINGS.items():
        lines += _tagged("128+N" if code == ExitCode.SIGNALLED else str(int(code)), meaning)
    lines += [".PP", *_paragraph(EXIT_MQSH)]
    lines.append(".SH ENVIRONMENT")
    for variable, meaning in ENVIRONMENT:
        lines += _tagged(variable, meaning)
    lines.append(".SH FILES")
    for path, meaning in FILES:
        lines += _tagged(path, meaning)
    lines.append(".SH EXAMPLES")
    for text, commands in EXAMPLES:
        lines += [".PP", *_paragraph(text), *_example(commands)]
    lines += [".SH INSTALLATION", *_paragraph(
        "The completion scripts and this page are in the source tree, generated from the CLI by "
        "python3 -m mq.cli.docs: completions/ and man/mq.1. From its top directory:")]
    for shell, commands, note in INSTALL:
        lines += [".TP", ".B " + _roff(shell), ".nf", *(_roff(line) for line in commands), ".fi"]
        if note:
            lines += [".sp", *_paragraph(note)]
    lines += [".SH SEE ALSO", "lockfile(1), ssh_config(5)"]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Help text as Markdown paragraphs (lines joined; ``|`` escaped for tables)."""
    blocks = [" ".join(block.split()) for block in text.strip().split("\n\n")]
    return "\n\n".join(filter(None, blocks))


def _md_options(command: click.Command, ctx: click.Context) -> list[str]:
    declared = _declared_help(command)
    rows = [record for param in command.get_params(ctx)
            if (record := _help_record(param, declared.get(param.name or ""))) is not None]
    if not rows:
        return []
    return ["| option | meaning |", "| --- | --- |",
            *(f"| `{term}` | {' '.join(text.split()).replace('|', '&#124;')} |" for term, text in rows), ""]


def reference_page() -> str:
    """docs/reference.md: every command and option, from the CLI itself (as the man page)."""
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    ctx = click.Context(group, info_name="mq")
    lines = ["# Command reference", "",
             "Generated by `python3 -m mq.cli.docs` from the CLI's own definitions (a test fails when this "
             "page drifts from them); the same as `mq COMMAND --help` and `man mq`.", "",
             _md(group.help or ""), "", "## Global options", "", *_md_options(group, ctx)]
    for name, command, sub in _commands(group, ctx):
        usage = " ".join(command.collect_usage_pieces(sub))
        lines += [f"## mq {name}", "", f"```text\nmq {name} {usage}\n```", "", _md(command.help or ""), ""]
        lines += _md_options(command, sub)
    lines += ["## Exit status", "", "| status | meaning |", "| --- | --- |"]
    for code, meaning in EXIT_MEANINGS.items():
        lines.append(f"| {'128+N' if code == ExitCode.SIGNALLED else int(code)} | {_md(meaning)} |")
    lines += ["", _md(EXIT_MQSH), "", "## Environment", "", "| variable | meaning |", "| --- | --- |"]
    lines += [f"| `{variable}` | {_md(meaning)} |" for variable, meaning in ENVIRONMENT]
    lines += ["", "## Examples", ""]
    for text, commands in EXAMPLES:
        lines += [_md(text), "", "```sh", *commands, "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _commands(group: click.Group, ctx: click.Context, prefix: str = "") -> List[Tuple[str, click.Command,
                                                                                    click.Context]]:
    """Every command, and after a group (``mq admin``) its own: (name, command, context)."""
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        sub = click.Context(command, info_name=name, parent=ctx)
        found.append((prefix + name, command, sub))
        if isinstance(command, click.Group):
            found += _commands(command, sub, f"{prefix}{name} ")
    return found


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


def generated() -> dict[Path, str]:
    files = {ROOT / "man" / "mq.1": man_page(), ROOT / "docs" / "reference.md": reference_page()}
    for name, shell in COMPLETIONS.items():
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
