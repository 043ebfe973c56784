"""TOML through tomllib or tomli (mq.engine.core.tomlparse): errors name the file and the key, with
either parser; without tomllib (Python < 3.11) tomli is used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC
from mq.engine.core.errors import InventoryError
from mq.engine.core.inventory import load_inventory, parse_inventory
from mq.settings.config import load_config
from mq.settings.errors import ConfigError


def inventory_error(text: str, path: str = "lab.toml") -> InventoryError:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, path)
    return caught.value


@pytest.mark.parametrize(("text", "message"), [
    ('[systems.a]\narch = "x"\narch = "y"\n', "duplicate key systems.a.arch (at line 3, column 1)"),
    ("[systems.a]\n[systems.a]\n", "table systems.a defined twice (at line 2, column 1)"),
    ('[systems.a]\n[pools.p]\nsystems = ["a"]\n[systems.b]\ncores = 1\ncores = 2  # again\n',
     "duplicate key systems.b.cores (at line 6, column 1)"),
    ('[systems.a]\nx.y = 1\nx.y = 2\n', "duplicate key systems.a.x.y (at line 3, column 1)"),
    ('[systems."a\\nb"]\ncpu = "x"\ncpu = "y"\n', 'duplicate key systems."a\\nb".cpu (at line 3, column 1)'),
    ("[[systems]]\n[[systems]]\nx = 1\nx = 2\n", "duplicate key systems.x (at line 4, column 1)"),
    ('[systems.a]\narch = "x"\r\narch = "y"\r\n', "duplicate key systems.a.arch (at line 3, column 1)"),
])
def test_a_key_defined_twice_is_named(parser: str, text: str, message: str) -> None:
    error = inventory_error(text)
    assert (error.path, error.key) == ("lab.toml", "")
    assert str(error) == f"lab.toml: invalid TOML: {message}"


@pytest.mark.parametrize("text", [
    "[systems.a\n",  # not a duplicate: the parser's own words
    "a = { x = 1, x = 2 }\n",  # inside an inline table: not told apart
    '[systems.a]\n"c=d" = 1\n"c=d" = 2\n',  # a quoted key with "=": not told apart
])
def test_other_errors_keep_the_parsers_words_and_line(parser: str, text: str) -> None:
    error = inventory_error(text)
    assert str(error).startswith("lab.toml: invalid TOML: ")
    assert "line" in str(error) and "\n" not in str(error)


def test_duplicate_after_a_multiline_string(parser: str) -> None:
    error = inventory_error('[systems.a]\nboot = """\nx = 1\n"""\nboot = "y"\n')
    assert str(error) == "lab.toml: invalid TOML: duplicate key systems.a.boot (at line 5, column 1)"


def test_semantic_errors_name_file_and_key(parser: str, tmp_path: Path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text('[systems.a]\nfiles = "four"\n')
    with pytest.raises(InventoryError) as caught:
        load_inventory(str(lab))
    assert (caught.value.path, caught.value.key) == (str(lab), "systems.a.files")
    assert str(caught.value) == f'{lab}: systems.a.files: expected an integer >= 1, got "four"'


def test_dates_are_values_of_the_wrong_type(parser: str) -> None:
    assert str(inventory_error("[systems.a]\nboot = 1979-05-27\n")) == \
        "lab.toml: systems.a.boot: expected a string, got a date"


def test_config_file_errors_name_the_file(parser: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('host = "a"\nhost = "b"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(env={"MQ_CONFIG": str(config), "HOME": str(tmp_path)})
    assert str(caught.value).startswith(f"{config}: not valid TOML (")
    config.write_text('host = "labhost"\nbase = "/locks"\n')
    assert (load_config(env={"MQ_CONFIG": str(config), "HOME": str(tmp_path)}).host) == "labhost"


FALLBACK = """
import json, sys
sys.modules["tomllib"] = None  # as on Python 3.9 and 3.10
from mq.engine.core import tomlparse
from mq.engine.core.inventory import parse_inventory
try:
    parse_inventory('[systems.a]\\narch = "x"\\narch = "y"\\n', "lab.toml")
except Exception as exc:
    error = str(exc)
inventory = parse_inventory('[systems.a]\\narch = "arm"\\n[pools.p]\\nmatch = { arch = "arm" }\\n', "lab.toml")
print(json.dumps({"parser": tomlparse.loads.__module__, "pool": list(inventory.members("p")), "error": error}))
"""


def test_without_tomllib_tomli_is_used() -> None:
    proc = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, timeout=30,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "parser": "tomli._parser", "pool": ["a"],
        "error": "lab.toml: invalid TOML: duplicate key systems.a.arch (at line 3, column 1)"}
