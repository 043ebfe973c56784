"""Command templates (a system's ``boot`` and ``power_off``): one definition of their syntax.

A template is split into words with shell rules (``shlex``); within a word,
``{name}`` (lower-case letters, digits, ``_``) is a placeholder, replaced by
whole arguments when the command runs (``boot.expand``). Other braces are
kept as they are (``awk '{print $1}'``, ``find -exec ... {} ;``,
``${HOME}``) but must pair up within their word: a ``{`` never closed, or a
``}`` never opened, is a mistake (``{files``). There is no escaping.

The inventory checks every template with ``problems`` when it is read, so a
misspelt placeholder is reported with the file, system and key before
anything is locked; ``boot.expand`` reads templates with the same ``tokens``.
"""

from __future__ import annotations

import re
import shlex
from typing import List, Optional, Sequence, Set, Tuple

from .tomlparse import quoted

PLACEHOLDERS = ("system", "files", "dtb", "bitstream", "linux", "python",
                "completion", "error", "timeout", "dtb_flag", "bitstream_flag", "keep_alive")
"""Every placeholder but ``{fileN}`` (N from 1 to the system's ``files``). The last six pass
``mq run``'s options on as mq.sh's runner gives them to a lab's reboot script (``boot.expand``)."""
PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")
_FILE_N = re.compile(r"file([1-9][0-9]*)")
_NAME_START = re.compile(r"[a-z0-9_]+")
_LOOKALIKE = re.compile(r"\{([A-Za-z0-9_]*[A-Z][A-Za-z0-9_]*)\}")  # {System}: literal text, as written

Token = Tuple[bool, str]
"""(is a placeholder, its name) or (False, literal text)."""


def file_number(name: str) -> Optional[int]:
    """N for the placeholder name ``fileN`` (N >= 1), else None."""
    numbered = _FILE_N.fullmatch(name)
    return int(numbered.group(1)) if numbered else None


def is_known(name: str) -> bool:
    return name in PLACEHOLDERS or file_number(name) is not None


def split(template: str) -> List[str]:
    """The template's words (shell rules); ValueError for an unclosed quote or a trailing backslash."""
    return shlex.split(template)


def tokens(word: str) -> List[Token]:
    """A word as literal text and placeholders, in order (brace balance is ``word_problems``' business)."""
    found: List[Token] = []
    start = 0
    for match in PLACEHOLDER.finditer(word):
        if match.start() > start:
            found.append((False, word[start:match.start()]))
        found.append((True, match.group(1)))
        start = match.end()
    if start < len(word):
        found.append((False, word[start:]))
    return found


def problems(template: str, files: Optional[int]) -> List[str]:
    """What is wrong with ``template`` for a system taking ``files`` images (None: not known),
    one message each, in order; empty when it is fine."""
    try:
        words = split(template)
    except ValueError as exc:
        return [f"cannot split command: {exc}"]
    if not words:
        return ["command is empty"]
    if not words[0]:
        return ["the program to run (the first word) is empty"]
    found: List[str] = []
    for word in words:
        for problem in word_problems(word, files):
            if problem not in found:
                found.append(problem)
    return found


def word_problems(word: str, files: Optional[int]) -> List[str]:
    found = [_unknown(name, files) for placeholder, name in tokens(word) if placeholder and not is_known(name)]
    if files is not None:
        found += [f"placeholder {{{name}}} is beyond the system's {_images(files)} (files = {files}): "
                  f"use {_file_range(files)}"
                  for placeholder, name in tokens(word)
                  if placeholder and (file_number(name) or 0) > files]
    unbalanced = _unbalanced(word)
    if unbalanced:
        found.append(unbalanced)
    return found


def uses_images(template: str) -> bool:
    """The template passes ``mq run``'s images on (``{files}`` or a ``{fileN}``)."""
    return any(name == "files" or file_number(name) for name in used(template))


def used(template: str) -> Set[str]:
    """The placeholder names a template uses (none if it cannot be split)."""
    try:
        words = split(template)
    except ValueError:
        return set()
    return {name for word in words for placeholder, name in tokens(word) if placeholder}


def _unbalanced(word: str) -> str:
    """'' when every literal brace of ``word`` pairs up, else what is wrong."""
    opened: List[int] = []
    position = 0
    while position < len(word):
        placeholder = PLACEHOLDER.match(word, position)
        if placeholder:
            position = placeholder.end()
            continue
        char = word[position]
        if char == "{":
            opened.append(position)
        elif char == "}":
            if not opened:
                return f'unbalanced brace: "}}" with no "{{" before it in {quoted(word)}'
            opened.pop()
        position += 1
    if not opened:
        return ""
    after = _NAME_START.match(word, opened[-1] + 1)
    hint = f" (did you mean {{{after.group()}}}?)" if after and is_known(after.group()) else ""
    return f'unbalanced brace: "{{" never closed in {quoted(word)}{hint}'


def _unknown(name: str, files: Optional[int]) -> str:
    known = _known_list(files)
    message = f"unknown placeholder {{{name}}} (known: {', '.join(known)})"
    from difflib import get_close_matches  # only for a mistake

    if re.fullmatch(r"file0+", name):
        return message + "; image numbers start at 1: {file1}"
    close = get_close_matches(f"{{{name}}}", known, n=1, cutoff=0.6)
    return message + (f"; did you mean {close[0]}?" if close else "")


def _known_list(files: Optional[int]) -> List[str]:
    if files is None:
        numbered = ["{file1}", "{file2}", "..."]
    elif files <= 3:
        numbered = [f"{{file{n}}}" for n in range(1, files + 1)]
    else:
        numbered = [_file_range(files)]
    return [f"{{{name}}}" for name in PLACEHOLDERS[:2]] + numbered + [f"{{{name}}}" for name in PLACEHOLDERS[2:]]


def _file_range(files: int) -> str:
    return "{file1}" if files == 1 else f"{{file1}} to {{file{files}}}"


def _images(files: int) -> str:
    return "1 image file" if files == 1 else f"{files} image files"


def warnings(boot: Optional[str], power_off: Optional[str], files: int, dtb: bool,
             pxe_linux: bool) -> Sequence[Tuple[str, str]]:
    """(attribute, message) for what is allowed but probably not meant in a system's templates."""
    found: List[Tuple[str, str]] = []
    if boot and not problems(boot, files) and not uses_images(boot):
        found.append(("boot", f"uses neither {{files}} nor {_file_range(files)}: the images given to "
                              "mq run -f never reach the board"))
    for attr, template in (("boot", boot), ("power_off", power_off)):
        names = used(template) if template and not problems(template, files) else set()
        if "dtb" in names and not dtb:
            found.append((attr, "{dtb} is always empty: the system takes no DTB (dtb = false)"))
        if "linux" in names and not pxe_linux:
            found.append((attr, "{linux} is always empty: the system does not PXE-boot Linux (pxe_linux = false)"))
        for name in dict.fromkeys(_LOOKALIKE.findall(template or "")):
            if is_known(name.lower()):
                found.append((attr, f"{{{name}}} is not a placeholder (they are lower case: {{{name.lower()}}}): "
                                    "it is passed on as written"))
    return found


__all__ = ["PLACEHOLDER", "PLACEHOLDERS", "file_number", "is_known", "problems", "split", "tokens", "used",
           "uses_images", "warnings"]
