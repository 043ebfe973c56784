"""The command line as mq.sh users type it, checked before click parses it.

Click reads ``-wiat`` as ``-w iat`` (a value glued to a short option) and
``-help`` as ``-h`` followed by ``-e``...: a typo of an ``mq.sh``-style word
option would be taken as something else. Here, for the command being run:

* ``-help`` (what ``mq.sh`` users type) is ``--help``;
* any other single-dash word that is not one of the command's options is
  refused by name (``no such option -wiat (did you mean -wait?)``), unless it
  is the value of the option before it (``-k -wiat`` is a key).
"""

from __future__ import annotations

import difflib
import re
from typing import List

import click

from mq.settings.errors import UsageError

_WORD = re.compile(r"-[A-Za-z][A-Za-z-]+")


def _options(command: click.Command) -> dict[str, bool]:
    """Each option name of ``command`` -> whether it takes a value."""
    names: dict[str, bool] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            takes = not param.is_flag and not param.count
            for name in (*param.opts, *param.secondary_opts):
                names[name] = takes
    return names


def normalize(group: click.Group, args: List[str], start: int) -> List[str]:
    """``args`` with ``-help`` made ``--help`` (``mq -help`` as ``mq sem -help``: mq.sh users type it);
    ``start``: where the command's name is."""
    if start < len(args) and args[start] == "-help":
        return [*args[:start], "--help", *args[start + 1:]]
    if start >= len(args) or args[start] not in group.commands:
        return args
    options = _options(group.commands[args[start]])
    fixed = list(args)
    index = start + 1
    while index < len(fixed):
        word = fixed[index]
        if word == "--":
            break
        if word in options:
            index += 2 if options[word] else 1
            continue
        if word == "-help":
            fixed[index] = "--help"
        elif _WORD.fullmatch(word):
            close = difflib.get_close_matches(word, [n for n in options if len(n) > 2], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"no such option {word}{hint}")
        index += 1
    return fixed
