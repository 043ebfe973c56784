"""The fallback TOML parser (mq.engine._toml) agrees with tomllib, or refuses."""

from __future__ import annotations

import importlib
import math
import random
from typing import Any, Optional, cast

import pytest

from mq.engine import _toml
from mq.engine.demo import DEMO_INVENTORY

tomllib: Optional[Any]
try:
    tomllib = importlib.import_module("tomllib")
except ImportError:  # Python < 3.11: compare with expected values only
    tomllib = None

needs_tomllib = pytest.mark.skipif(tomllib is None, reason="tomllib needs Python >= 3.11")


def typed(value: Any) -> Any:
    """A comparable form that keeps types apart (1 == 1.0 == True in Python) and nan == nan."""
    if isinstance(value, dict):
        return ("table", {k: typed(v) for k, v in value.items()}, list(value))
    if isinstance(value, list):
        return ("array", [typed(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


VALID = {
    "empty": "",
    "comments": "# only a comment\n\n   # indented comment\n",
    "demo": DEMO_INVENTORY,
    "tables": "[a]\nx = 1\n[b]\ny = 2\n[a.c]\nz = 3\n",
    "quoted headers": '[systems."odroid-c4"]\nx = 1\n[ systems . \'lit.key\' ]\ny = 2\n["a b".c]\n',
    "dotted keys": 'a.b = 1\na.c.d = "x"\n"q.k".e = true\n[t]\nu.v = 1\nu.w = 2\n',
    "dotted then subtable": '[fruit]\napple.color = "red"\n[fruit.apple.texture]\nsmooth = true\n',
    "super table later": "[x.y.z]\na = 1\n[x]\nb = 2\n",
    "bare keys": "bare_key-1 = 1\n1234 = 2\n\"\" = 3\n'lit' = 4\nA-_ = 5\n",
    "basic strings": r"""a = "tab\there"
b = "quote \" backslash \\ nl \n cr \r bs \b ff \f"
c = "\u00e9\U0001F600 \u0041"
d = ""
e = "# not a comment"
f = "unicode é ✓"
""",
    "literal strings": "a = 'C:\\Users\\x'\nb = '<\\i\\c*\\s*>'\nc = ''\nd = 'has \"quotes\"'\n",
    "multiline basic": 'a = """\nline1\nline2"""\nb = """no newline trim"""\n'
    'c = """\\\n    folded \\\n    text"""\nd = """one""two"""\ne = """x"""""\nf = """"x""""\n'
    'g = """tab\tand \\u00e9"""\n',
    "multiline literal": "a = '''\nraw \\n text\n'''\nb = '''it's'''\nc = ''''x'''''\n",
    "integers": "a = 0\nb = +99\nc = -17\nd = 1_000_000\ne = 0xDEAD_beef\nf = 0o755\ng = 0b1101\n"
    "h = -0\ni = +0\nj = 9223372036854775807\nk = 123456789012345678901234567890\n",
    "floats": "a = 1.0\nb = -3.1415\nc = 5e+22\nd = 1e06\ne = -2E-2\nf = 6.626e-34\ng = 224_617.445_991\n"
    "h = inf\ni = +inf\nj = -inf\nk = nan\nl = -nan\nm = 0.0\nn = -0.0\no = 1e1_0\n",
    "booleans": "t = true\nf = false\n",
    "arrays": 'a = [1, 2, 3]\nb = ["x", \'y\']\nc = [ ]\nd = [[1, 2], ["a"], []]\n'
    'e = [\n  1,\n  2, # comment\n\n  3,\n]\nf = [1.5, "mixed", true, {x = 1}]\ng=[1,]\n',
    "inline tables": 'a = { x = 1, y = "two" }\nb = {}\nc = { d.e = 1, d.f = 2 }\n'
    "g = { h = { i = [1, { j = 2 }] } }\nk={l=1}\n",
    "array of tables": '[[fruit]]\nname = "apple"\n[fruit.physical]\ncolor = "red"\n'
    '[[fruit.variety]]\nname = "red delicious"\n[[fruit]]\nname = "banana"\n[fruit.physical]\ncolor = "y"\n',
    "whitespace": "  a\t=\t1  # trailing\n\t[ t ]  \n\tb=2\n",
    "crlf": "a = 1\r\n[t]\r\nb = '''x\r\ny'''\r\nc = [\r\n1,\r\n]\r\n",
    "no final newline": "a = 1",
    "keys like values": "true = 1\nfalse = 2\ninf = 3\nnan = 4\n1 = 5\n-1 = 6\n",
    "numeric dotted key": "3.14 = 1\n[1.2]\nx = 1\n",
}

INVALID = {
    "duplicate key": "a = 1\na = 2\n",
    "duplicate quoted key": 'a = 1\n"a" = 2\n',
    "duplicate table": "[a]\n[a]\n",
    "table after dotted key": "a.b = 1\n[a]\n",
    "subtable of dotted key": "[x]\na.b = 1\n[x.a]\n",
    "dotted key into header table": "[a.b]\nx = 1\n[a]\nb.y = 2\n",
    "key over table": "[a.b]\n[a]\nb = 1\n",
    "value then table": "a = 1\n[a]\n",
    "value then dotted": "a = 1\na.b = 2\n",
    "extend inline table": "a = { x = 1 }\na.y = 2\n",
    "table over inline table": "a = { x = 1 }\n[a]\n",
    "subtable of inline table": "a = { x = 1 }\n[a.b]\n",
    "table in static array": "a = [{ x = 1 }]\n[a.b]\n",
    "aot over static array": "a = []\n[[a]]\n",
    "aot over table": "[a]\n[[a]]\n",
    "table over aot": "[[a]]\n[a]\n",
    "inline duplicate": "a = { x = 1, x = 2 }\n",
    "inline dotted duplicate": "a = { b.c = 1, b = 2 }\n",
    "inline trailing comma": "a = { x = 1, }\n",
    "inline newline": "a = { x = 1,\n y = 2 }\n",
    "inline unterminated": "a = { x = 1\n",
    "no value": "a =\n",
    "no equals": "a 1\n",
    "no key": "= 1\n",
    "two values": "a = 1 b = 2\n",
    "bare word": "a = hello\n",
    "leading zero": "a = 0123\n",
    "double underscore": "a = 1__0\n",
    "trailing underscore": "a = 1_\n",
    "leading underscore": "a = _1\n",
    "signed hex": "a = +0x10\n",
    "bad hex": "a = 0xG\n",
    "bad octal": "a = 0o8\n",
    "float no fraction": "a = 1.\n",
    "float no integer": "a = .5\n",
    "float dot exp": "a = 1.e5\n",
    "exp alone": "a = 1e\n",
    "two dots": "a = 1.2.3\n",
    "capital true": "a = True\n",
    "truex": "a = truex\n",
    "unterminated string": 'a = "abc\n',
    "unterminated literal": "a = 'abc\n",
    "unterminated multiline": 'a = """abc\n',
    "unterminated multiline literal": "a = '''abc\n",
    "six quotes": 'a = """x""""""\n',
    "bad escape": 'a = "\\x41"\n',
    "bad escape q": 'a = "\\q"\n',
    "short unicode escape": 'a = "\\u12"\n',
    "short long unicode escape": 'a = "\\U0041"',
    "surrogate escape": 'a = "\\uD800"\n',
    "too large escape": 'a = "\\U00110000"\n',
    "escape space in basic": 'a = "a\\ b"\n',
    "control char in string": 'a = "a\x01b"\n',
    "control char in literal": "a = 'a\x7fb'\n",
    "control char in comment": "# a\x00b\na = 1\n",
    "bare cr": "a = 1\rb = 2\n",
    "array no comma": "a = [1 2]\n",
    "array double comma": "a = [1,,2]\n",
    "array leading comma": "a = [,1]\n",
    "array unterminated": "a = [1, 2\n",
    "header unterminated": "[a\nb = 1\n",
    "empty header": "[]\n",
    "header trailing text": "[a] b = 1\n",
    "aot spaced brackets": "[[a] ]\n",
    "multiline key": '"""a""" = 1\n',
    "dot at end of key": "a. = 1\n",
    "empty dotted part": "a..b = 1\n",
    "space in bare key": "a b = 1\n",
    "newline in key": "a\n= 1\n",
}

# Valid TOML that the small parser deliberately refuses (tomllib accepts it).
UNSUPPORTED = {
    "offset datetime": "a = 1979-05-27T07:32:00Z\n",
    "local date": "a = 1979-05-27\n",
    "local time": "a = 07:32:00\n",
    "date in array": "a = [1, 1979-05-27]\n",
}


@pytest.mark.parametrize("name", sorted(VALID))
@needs_tomllib
def test_agrees_with_tomllib(name: str) -> None:
    assert tomllib is not None
    assert typed(_toml.loads(VALID[name])) == typed(tomllib.loads(VALID[name]))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rejects_malformed(name: str) -> None:
    with pytest.raises(_toml.TOMLDecodeError, match=r"at line \d+, column \d+"):
        _toml.loads(INVALID[name])


@pytest.mark.parametrize("name", sorted(INVALID))
@needs_tomllib
def test_corpus_is_really_malformed(name: str) -> None:
    assert tomllib is not None
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(INVALID[name])


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_dates_are_refused_clearly(name: str) -> None:
    with pytest.raises(_toml.TOMLDecodeError, match="dates and times are not supported"):
        _toml.loads(UNSUPPORTED[name])


def test_expected_values() -> None:
    doc = _toml.loads(
        '[systems."odroid-c4"]\ncores = 4\nram = "4GB"\nok = true\nr = 1.5\n'
        'l = [1, [2, "x"]]\nt = { a = 1, b = "x" }\ns = "\\u00e9\\t\\"q\\""\nm = """\nA\\\n  B"""\n'
    )
    assert doc == {
        "systems": {
            "odroid-c4": {
                "cores": 4,
                "ram": "4GB",
                "ok": True,
                "r": 1.5,
                "l": [1, [2, "x"]],
                "t": {"a": 1, "b": "x"},
                "s": 'é\t"q"',
                "m": "AB",
            }
        }
    }


def test_error_names_line_and_column() -> None:
    with pytest.raises(_toml.TOMLDecodeError) as caught:
        _toml.loads("a = 1\n\n[t]\nb = 1\nb = 2\n")
    assert "duplicate key t.b" in str(caught.value)
    assert "line 5, column 1" in str(caught.value)
    with pytest.raises(_toml.TOMLDecodeError, match="line 2"):
        _toml.loads("a = 1\r\nb = ?\r\n")


def test_error_is_value_error_and_rejects_bytes() -> None:
    assert issubclass(_toml.TOMLDecodeError, ValueError)
    with pytest.raises(TypeError):
        _toml.loads(cast(Any, b"a = 1"))


def _mutations(seed: int, count: int) -> list[str]:
    """Documents of the valid corpus with 1-3 random one-character edits."""
    rng = random.Random(seed)
    alphabet = [*"\"'[]{}=,.#\n \t\\_+-0x1e:", "true", '"""', "'''", "[[", "]]", "a.b"]
    docs = list(VALID.values())
    out = []
    for _ in range(count):
        doc = rng.choice(docs) or "a = 1\n"
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(doc) + 1)
            edit = rng.randrange(3)
            insert = rng.choice(alphabet) if edit != 1 else ""
            doc = doc[:pos] + insert + doc[pos + (edit != 0) :]
        out.append(doc)
    return out


@needs_tomllib
def test_mutated_documents_never_give_a_wrong_value() -> None:
    """Random edits of the valid corpus: same value as tomllib, or TOMLDecodeError."""
    assert tomllib is not None
    refused_valid = 0
    for doc in _mutations(seed=20240611, count=3000):
        try:
            expected = typed(tomllib.loads(doc))
        except tomllib.TOMLDecodeError:
            with pytest.raises(_toml.TOMLDecodeError):
                _toml.loads(doc)
            continue
        try:
            got = typed(_toml.loads(doc))
        except _toml.TOMLDecodeError as exc:  # only allowed for what is unsupported
            assert "dates and times" in str(exc), (doc, exc)
            refused_valid += 1
            continue
        assert got == expected, doc
    assert refused_valid < 100
