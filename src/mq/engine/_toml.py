"""A small TOML 1.0 parser, used only where :mod:`tomllib` is missing (Python < 3.11).

It covers what a lab inventory or config needs: comments, ``[tables]`` (dotted
and quoted header keys), ``[[arrays of tables]]``, bare/quoted/dotted keys, all
four string kinds, integers (decimal, hex, octal, binary), floats, booleans,
arrays and inline tables.  Dates and times are *not* supported: they raise
:class:`TOMLDecodeError`, as does anything else malformed -- it never returns
a value that :func:`tomllib.loads` would not.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Set, Tuple

__all__ = ["TOMLDecodeError", "loads"]

Key = Tuple[str, ...]


class TOMLDecodeError(ValueError):
    """Malformed or unsupported TOML; the message gives the line and column."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ILLEGAL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters except tab
_ILLEGAL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # ... and newline
_LINE_CONTINUATION = re.compile(r"\\[ \t]*\n[ \t\n]*")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{2}:[0-9]{2}")
_DIGITS = r"[0-9](?:_?[0-9])*"
_DEC_INT = r"[+-]?(?:0|[1-9](?:_?[0-9])*)"
_EXP = rf"[eE][+-]?{_DIGITS}"
_NUMBER = re.compile(
    r"0x[0-9A-Fa-f](?:_?[0-9A-Fa-f])*|0o[0-7](?:_?[0-7])*|0b[01](?:_?[01])*"
    rf"|(?P<float>{_DEC_INT}(?:\.{_DIGITS}(?:{_EXP})?|{_EXP}))"
    rf"|(?P<int>{_DEC_INT})"
    r"|(?P<special>[+-]?(?:inf|nan))"
)
_VALUE_END = " \t\n,]}#"


class _Flags:
    """Which tables were declared (by header or dotted key) and which are frozen."""

    def __init__(self) -> None:
        self.explicit: Set[Key] = set()
        self.frozen: Set[Key] = set()  # inline tables and static arrays
        self.pending: List[Key] = []  # tables made by dotted keys in this section

    def is_frozen(self, key: Key) -> bool:
        return any(key[:n] in self.frozen for n in range(1, len(key) + 1))

    def finish_section(self) -> None:
        self.explicit.update(self.pending)
        self.pending.clear()

    def reset(self, key: Key) -> None:
        """Forget what is known under ``key`` (a new ``[[key]]`` element starts)."""
        self.explicit = {k for k in self.explicit if k[: len(key)] != key}
        self.frozen = {k for k in self.frozen if k[: len(key)] != key}


def _dotted(key: Key) -> str:
    return ".".join(k if _BARE_KEY.fullmatch(k) else repr(k) for k in key)


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def error(self, message: str, pos: int | None = None) -> TOMLDecodeError:
        pos = self.i if pos is None else pos
        line = self.s.count("\n", 0, pos) + 1
        column = pos - self.s.rfind("\n", 0, pos)
        return TOMLDecodeError(f"{message} (at line {line}, column {column})")

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def expect(self, token: str) -> None:
        if not self.s.startswith(token, self.i):
            raise self.error(f"expected {token!r}")
        self.i += len(token)

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            end = self.s.find("\n", self.i)
            end = len(self.s) if end < 0 else end
            bad = _ILLEGAL.search(self.s, self.i, end)
            if bad:
                raise self.error("control character in comment", bad.start())
            self.i = end

    def skip_blank(self) -> None:
        """Whitespace, comments and newlines (between array elements)."""
        while True:
            self.skip_ws()
            self.skip_comment()
            if self.peek() != "\n":
                return
            self.i += 1

    def end_of_line(self) -> None:
        self.skip_ws()
        self.skip_comment()
        if self.i < len(self.s):
            if self.peek() != "\n":
                raise self.error("expected end of line")
            self.i += 1

    def parse(self) -> Dict[str, Any]:
        root: Dict[str, Any] = {}
        flags = _Flags()
        header: Key = ()
        while True:
            self.skip_blank()
            if self.i >= len(self.s):
                return root
            start = self.i
            if self.peek(2) == "[[":
                self.i += 2
                header = self.key()
                self.expect("]]")
                flags.finish_section()
                if flags.is_frozen(header):
                    raise self.error(f"cannot append to {_dotted(header)}", start)
                flags.reset(header)
                flags.explicit.add(header)
                parent = self.nest(root, header[:-1], start)
                tables = parent.setdefault(header[-1], [])
                if not isinstance(tables, list):
                    raise self.error(f"{_dotted(header)} is not an array of tables", start)
                tables.append({})
            elif self.peek() == "[":
                self.i += 1
                header = self.key()
                self.expect("]")
                flags.finish_section()
                if header in flags.explicit or flags.is_frozen(header):
                    raise self.error(f"table {_dotted(header)} defined twice", start)
                flags.explicit.add(header)
                self.nest(root, header, start)
            else:
                self.key_value(root, header, flags)
            self.end_of_line()

    def nest(self, root: Dict[str, Any], key: Key, pos: int) -> Dict[str, Any]:
        """The table at ``key``, creating missing ones; the last element of arrays of tables."""
        table: Any = root
        for n, part in enumerate(key):
            table = table.setdefault(part, {})
            if isinstance(table, list):
                table = table[-1] if table else None
            if not isinstance(table, dict):
                raise self.error(f"{_dotted(key[: n + 1])} is already a value, not a table", pos)
        result: Dict[str, Any] = table
        return result

    def key_value(self, root: Dict[str, Any], header: Key, flags: _Flags) -> None:
        start = self.i
        key = header + self.key()
        self.expect("=")
        self.skip_ws()
        value = self.value()
        for n in range(len(header) + 1, len(key)):
            if key[:n] in flags.explicit:
                raise self.error(f"table {_dotted(key[:n])} defined twice", start)
            flags.pending.append(key[:n])
        if flags.is_frozen(key[:-1]):
            raise self.error(f"cannot add keys to {_dotted(key[:-1])}", start)
        table = self.nest(root, key[:-1], start)
        if key[-1] in table:
            raise self.error(f"duplicate key {_dotted(key)}", start)
        table[key[-1]] = value
        if isinstance(value, (dict, list)):
            flags.frozen.add(key)

    def key(self) -> Key:
        parts: List[str] = []
        while True:
            self.skip_ws()
            char = self.peek()
            if char in ('"', "'"):
                if self.peek(3) == char * 3:
                    raise self.error("multi-line strings cannot be keys")
                parts.append(self.string())
            else:
                match = _BARE_KEY.match(self.s, self.i)
                if not match:
                    raise self.error("expected a key")
                parts.append(match.group())
                self.i = match.end()
            self.skip_ws()
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1

    def value(self) -> Any:
        char = self.peek()
        if char in ('"', "'"):
            return self.multiline_string() if self.peek(3) == char * 3 else self.string()
        if char == "[":
            return self.array()
        if char == "{":
            return self.inline_table()
        for word, boolean in (("true", True), ("false", False)):
            if self.s.startswith(word, self.i) and self.ends_value(self.i + len(word)):
                self.i += len(word)
                return boolean
        if _DATE.match(self.s, self.i):
            raise self.error("dates and times are not supported")
        match = _NUMBER.match(self.s, self.i)
        if not match or not self.ends_value(match.end()):
            raise self.error("invalid value")
        self.i = match.end()
        text = match.group().replace("_", "")
        return float(text) if match.lastgroup in ("float", "special") else int(text, 0)

    def ends_value(self, pos: int) -> bool:
        return pos >= len(self.s) or self.s[pos] in _VALUE_END

    def string(self) -> str:
        quote = self.s[self.i]
        start = self.i
        self.i += 1
        out: List[str] = []
        while True:
            char = self.peek()
            if char == quote:
                self.i += 1
                return "".join(out)
            if char == "\\" and quote == '"':
                out.append(self.escape())
            elif not char or char == "\n":
                raise self.error("unterminated string", start)
            elif _ILLEGAL.match(char):
                raise self.error("control character in string")
            else:
                out.append(char)
                self.i += 1

    def multiline_string(self) -> str:
        quote = self.s[self.i]
        start = self.i
        self.i += 3
        if self.peek() == "\n":  # a newline right after the opening quotes is trimmed
            self.i += 1
        out: List[str] = []
        while True:
            char = self.peek()
            if self.peek(3) == quote * 3:
                end = self.i + 3
                while end < len(self.s) and self.s[end] == quote and end - self.i < 5:
                    end += 1
                out.append(quote * (end - self.i - 3))
                self.i = end
                return "".join(out)
            if char == "\\" and quote == '"':
                match = _LINE_CONTINUATION.match(self.s, self.i)
                if match:
                    self.i = match.end()
                else:
                    out.append(self.escape())
            elif not char:
                raise self.error("unterminated multi-line string", start)
            elif _ILLEGAL_MULTILINE.match(char):
                raise self.error("control character in string")
            else:
                out.append(char)
                self.i += 1

    def escape(self) -> str:
        start = self.i
        code = self.s[self.i + 1 : self.i + 2]
        if code in _ESCAPES:
            self.i += 2
            return _ESCAPES[code]
        if code in ("u", "U"):
            size = 4 if code == "u" else 8
            digits = self.s[self.i + 2 : self.i + 2 + size]
            if re.fullmatch(f"[0-9A-Fa-f]{{{size}}}", digits):
                point = int(digits, 16)
                if point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF:
                    self.i += 2 + size
                    return chr(point)
            raise self.error("invalid unicode escape", start)
        raise self.error("invalid escape sequence", start)

    def array(self) -> List[Any]:
        self.i += 1
        out: List[Any] = []
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.i += 1
                return out
            out.append(self.value())
            self.skip_blank()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "]":
                raise self.error("expected ',' or ']' in array")

    def inline_table(self) -> Dict[str, Any]:
        self.i += 1
        table: Dict[str, Any] = {}
        flags = _Flags()
        self.skip_ws()
        if self.peek() == "}":
            self.i += 1
            return table
        while True:
            self.key_value(table, (), flags)
            self.skip_ws()
            char = self.peek()
            self.i += 1
            if char == "}":
                return table
            if char != ",":
                raise self.error("expected ',' or '}' in inline table", self.i - 1)


def loads(text: str) -> Dict[str, Any]:
    """Parse a TOML document (the subset described in the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, not {type(text).__name__}")
    return _Parser(text.replace("\r\n", "\n")).parse()
