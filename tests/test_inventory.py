"""The lab inventory (lab.toml): parsing, pools, and errors that name file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mq.engine.core.errors import InventoryError, UnknownTargetError
from mq.engine.core.inventory import (
    Inventory,
    Pool,
    System,
    check_inventory,
    is_valid_name,
    load_inventory,
    parse_inventory,
)
from mq.engine.host.boot import Images, expand
from mq.engine.host.demo import DEMO_INVENTORY

GOOD = """
[systems.b2]
arch = "arm"
cores = 2
ram = 512
max_clk = "1GHz"
[systems.a1]
arch = "arm"
soc = "imx8"
files = 3
pxe_linux = true
dtb = true
boot = "echo boot"
power_off = "echo off"
[systems.x1]
arch = "x86"
soc = "imx8"

[pools.mixed]
systems = ["x1"]
match = { arch = "arm" }
[pools.imx]
match = { soc = "imx8", arch = "arm" }
"""


def inventory_error(text: str, path: str = "lab.toml") -> InventoryError:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, path)
    return caught.value


def test_parse_good_inventory(parser: str) -> None:
    inv = parse_inventory(GOOD, "lab.toml")
    assert list(inv.systems) == ["b2", "a1", "x1"]
    assert inv.systems["b2"] == System("b2", arch="arm", cores="2", ram="512", max_clk="1GHz")
    a1 = inv.systems["a1"]
    assert (a1.files, a1.pxe_linux, a1.dtb, a1.boot, a1.power_off) == (3, True, True, "echo boot", "echo off")
    assert inv.systems["x1"].files == 1 and inv.systems["x1"].boot is None
    # explicit list first, then matches in declaration order
    assert inv.pools["mixed"] == Pool("mixed", ("x1", "b2", "a1"))
    assert inv.pools["imx"].members == ("a1",)
    assert inv.members("mixed") == ("x1", "b2", "a1")
    assert inv.members("b2") == ("b2",)
    assert inv.is_pool("imx") and not inv.is_pool("a1") and not inv.is_pool("nope")
    assert inv.pools_of("a1") == ("mixed", "imx")
    assert inv.pools_of("x1") == ("mixed",)
    assert inv.pools_of("nope") == ()
    assert inv.path == "lab.toml"


def test_no_duplicate_members() -> None:
    inv = parse_inventory(
        '[systems.a]\narch = "arm"\n[systems.b]\narch = "arm"\n'
        '[pools.p]\nsystems = ["b", "a"]\nmatch = { arch = "arm" }\n',
        "lab.toml",
    )
    assert inv.members("p") == ("b", "a")


def test_demo_inventory(parser: str) -> None:
    inv = parse_inventory(DEMO_INVENTORY, "demo.toml")
    assert list(inv.systems) == ["odroidc4_1", "odroidc4_2", "sabre", "tx2", "pc99"]
    assert inv.members("odroidc4_pool") == ("odroidc4_1", "odroidc4_2")
    assert inv.members("arm_pool") == ("odroidc4_1", "odroidc4_2", "sabre", "tx2")
    assert inv.pools_of("odroidc4_1") == ("odroidc4_pool", "arm_pool")
    c4 = inv.systems["odroidc4_2"]
    assert (c4.soc, c4.arch, c4.isa, c4.sel4_plat, c4.cores, c4.ram, c4.max_clk) == (
        "amlogic-s905x3", "arm", "aarch64", "odroidc4", "4", "4GB", "2.0GHz",
    )  # fmt: skip
    assert inv.systems["sabre"].soc == "imx6" and inv.systems["sabre"].pxe_linux is False
    assert inv.systems["tx2"].dtb and inv.systems["tx2"].pxe_linux
    assert inv.systems["pc99"].files == 2 and inv.systems["pc99"].isa == "x86_64"
    boots = {system.boot for system in inv.systems.values()}
    assert boots == {"{python} -m mq.engine.host.simboard {system} {files}"}
    # the demo run powers its board off, as the README says: every demo board has a power_off
    assert {system.power_off for system in inv.systems.values()} == \
        {"{python} -m mq.engine.host.simboard --power-off {system}"}


def test_attribute() -> None:
    system = System("s", arch="arm", cores="4")
    assert system.attribute("arch") == "arm"
    assert system.attribute("cores") == "4"
    assert system.attribute("name") == "s"
    assert system.attribute("boot") is None
    with pytest.raises(KeyError):
        system.attribute("members")


def test_unknown_target() -> None:
    inv = parse_inventory(DEMO_INVENTORY, "demo.toml")
    with pytest.raises(UnknownTargetError) as caught:
        inv.members("nope")
    message = str(caught.value)
    assert message == (
        "Unknown system or pool 'nope'. Valid systems: odroidc4_1 odroidc4_2 sabre tx2 pc99; "
        "pools: odroidc4_pool arm_pool"
    )
    assert caught.value.exit_code == 1


@pytest.mark.parametrize("name", ["a\nb", "a\x00b", "\x1b[31mred", "x" * 4096, "a'b"])
def test_unknown_target_hostile_name_prints_on_one_line(name: str) -> None:
    inv = parse_inventory(DEMO_INVENTORY, "demo.toml")
    with pytest.raises(UnknownTargetError) as caught:
        inv.members(name)
    message = str(caught.value)
    assert "\n" not in message and "\x00" not in message and "\x1b" not in message
    assert len(message) < 300


def test_error_names_file_and_key() -> None:
    error = inventory_error('[systems.sabre]\nfiles = "two"\n')
    assert str(error) == 'lab.toml: systems.sabre.files: expected an integer >= 1, got "two"'
    assert (error.path, error.key) == ("lab.toml", "systems.sabre.files")
    assert error.exit_code == 6


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("[systems.s]\nfiles = 0\n", "systems.s.files", "expected an integer >= 1, got 0"),
        ("[systems.s]\nfiles = true\n", "systems.s.files", "expected an integer >= 1, got true"),
        ("[systems.s]\nfiles = 1.5\n", "systems.s.files", "expected an integer >= 1, got 1.5"),
        ('[systems.s]\nfiles = "4"\n', "systems.s.files", 'expected an integer >= 1, got "4"'),
        ("[systems.s]\ncores = true\n", "systems.s.cores", "expected a string or an integer, got true"),
        ("[systems.s]\narch = 64\n", "systems.s.arch", "expected a string, got 64"),
        ("[systems.s]\nram = true\n", "systems.s.ram", "expected a string or an integer, got true"),
        ("[systems.s]\nram = [1]\n", "systems.s.ram", "expected a string or an integer, got an array"),
        ('[systems.s]\ndtb = "yes"\n', "systems.s.dtb", 'expected true or false, got "yes"'),
        ("[systems.s]\npxe_linux = 1\n", "systems.s.pxe_linux", "expected true or false, got 1"),
        ('[systems.s]\nboot = ""\n', "systems.s.boot", "expected a command, got an empty string"),
        ("[systems.s]\nboot = 1\n", "systems.s.boot", "expected a string, got 1"),
        ('[systems.s]\nsoc = "a\\nb"\n', "systems.s.soc", "must not contain control characters"),
        ('[systems.s]\ncolour = "red"\n', "systems.s.colour", "unknown attribute"),
        ('[systems.s]\n"we.ird" = 1\n', 'systems.s."we.ird"', "unknown attribute"),
        ("[systems.s.sub]\n", "systems.s.sub", "unknown attribute"),
        ("systems = 1\n", "systems", "expected a table, got 1"),
        ("systems.s = 1\n", "systems.s", "expected a table, got 1"),
        ("", "systems", "no systems defined"),
        ("[pools.p]\nsystems = []\n", "systems", "no systems defined"),
        ("[system.s]\n", "system", "unknown section"),
        ("[systems.s]\n[pools]\np = 1\n", "pools.p", "expected a table, got 1"),
        ('[systems.s]\n[pools.p]\nsystems = "s"\n', "pools.p.systems", 'expected an array of system names, got "s"'),
        ("[systems.s]\n[pools.p]\nsystems = [1]\n", "pools.p.systems", "expected a system name, got 1"),
        ('[systems.s]\n[pools.p]\nsystems = ["t"]\n', "pools.p.systems", 'unknown system "t" (systems: s)'),
        ('[systems.s]\n[pools.p]\nsystems = ["s", "s"]\n', "pools.p.systems", 'system "s" is listed twice'),
        ("[systems.s]\n[pools.p]\nsystems = []\n", "pools.p", "pool has no members"),
        ("[systems.s]\n[pools.p]\n", "pools.p", "pool has no members"),
        ('[systems.s]\narch = "arm"\n[pools.p]\nmatch = { arch = "x86" }\n', "pools.p", "match selects no system"),
        ("[systems.s]\n[pools.p]\nmatch = {}\n", "pools.p.match", "expected at least one attribute"),
        ('[systems.s]\n[pools.p]\nmatch = "arm"\n', "pools.p.match", 'expected a table, got "arm"'),
        ('[systems.s]\n[pools.p]\nmatch = { colour = "red" }\n', "pools.p.match.colour", "unknown attribute"),
        ('[systems.s]\n[pools.p]\nmatch = { files = "2" }\n', "pools.p.match.files", "expected an integer"),
        ('[systems.s]\n[pools.p]\nmembers = ["s"]\n', "pools.p.members", "unknown key"),
        ('[systems.s]\n[pools.s]\nsystems = ["s"]\n', "pools.s", "cannot have the name of a system"),
        (  # a pool is not a system
            '[systems.s]\n[pools.p]\nsystems = ["s"]\n[pools.q]\nsystems = ["p"]\n',
            "pools.q.systems",
            'unknown system "p"',
        ),
    ],
)
def test_errors(parser: str, text: str, key: str, message: str) -> None:
    error = inventory_error(text)
    assert error.key == key
    assert message in str(error)
    assert str(error).startswith(f"lab.toml: {key}: ")


def test_match_coerces_like_attributes() -> None:
    inv = parse_inventory(
        '[systems.a]\nram = "512"\ncores = 2\n[systems.b]\nram = 512\npxe_linux = true\n'
        "[pools.small]\nmatch = { ram = 512 }\n[pools.two]\nmatch = { cores = 2 }\n"
        "[pools.pxe]\nmatch = { pxe_linux = true }\n",
        "lab.toml",
    )
    assert inv.members("small") == ("a", "b")
    assert inv.members("two") == ("a",)
    assert inv.members("pxe") == ("b",)


@pytest.mark.parametrize(
    "text",
    [
        "[systems.a]\narch = 'x'\narch = 'y'\n",  # duplicate key
        "[systems.a]\n[systems.a]\n",  # redefined table
        "[systems.a\n",
    ],
)
def test_invalid_toml(parser: str, text: str) -> None:
    error = inventory_error(text)
    assert error.key == ""
    assert str(error).startswith("lab.toml: invalid TOML: ")
    assert "line" in str(error)


def test_dates_are_rejected(parser: str) -> None:
    error = inventory_error("[systems.a]\nboot = 1979-05-27\n")
    assert str(error) == "lab.toml: systems.a.boot: expected a string, got a date"


HOSTILE = ["../x", "a/b", "..", ".", "", "x" * 4096, "-rf", "a\x00b", "a\nb", "ok\n", "a b", "a.lock", "b.key", "é"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_system_names_rejected(parser: str, name: str) -> None:
    error = inventory_error(f"[systems.{json.dumps(name)}]\n")
    assert error.key.startswith("systems.")
    assert "invalid name" in str(error)
    assert "\n" not in str(error) and "\x00" not in str(error)
    assert len(str(error)) < 300


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_pool_names_rejected(parser: str, name: str) -> None:
    error = inventory_error(f'[systems.s]\n[pools.{json.dumps(name)}]\nsystems = ["s"]\n')
    assert error.key.startswith("pools.")
    assert "invalid name" in str(error)
    assert "\n" not in str(error) and "\x00" not in str(error)


def test_hostile_member_name_printed_safely() -> None:
    error = inventory_error('[systems.s]\n[pools.p]\nsystems = ["a\\nb"]\n')
    assert 'unknown system "a\\nb"' in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize("name", ["a", "A9", "odroidc4_1", "x86-64+v2.1", "9" * 64, "a.locks"])
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)
    assert name in parse_inventory(f'[systems."{name}"]\n', "lab.toml").systems


def test_name_length_limit() -> None:
    assert is_valid_name("a" * 64)
    assert not is_valid_name("a" * 65)


def test_load_inventory(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(DEMO_INVENTORY, encoding="utf-8")
    inv = load_inventory(str(path))
    assert isinstance(inv, Inventory)
    assert inv.path == str(path)
    assert inv == parse_inventory(DEMO_INVENTORY, str(path))


def test_load_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.key == ""
    assert str(caught.value) == f"{path}: no such file"


def test_load_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not a regular file"):
        load_inventory(str(tmp_path))  # a directory
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[systems.a]\narch = '\xff'\n")
    with pytest.raises(InventoryError, match="not valid UTF-8"):
        load_inventory(str(bad))


def test_duplicate_key_is_named() -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory('[systems.a]\narch = "x"\narch = "y"\n', "lab.toml")
    assert "systems.a.arch" in caught.value.message and "line 3" in caught.value.message


# -- command templates (boot, power_off): checked when the inventory is read ----------------------
RUNNER = "{completion}, {error}, {timeout}, {dtb_flag}, {bitstream_flag}, {keep_alive}"  # mq.sh's runner's options


@pytest.mark.parametrize(
    ("template", "files", "message"),
    [
        ("boot-it {sytem} {files}", 1, "unknown placeholder {sytem} (known: {system}, {files}, {file1}, {dtb}, "
                                       f"{{bitstream}}, {{linux}}, {{python}}, {RUNNER}); did you mean {{system}}?"),
        ("boot-it {system} {files", 1, 'unbalanced brace: "{" never closed in "{files" (did you mean {files}?)'),
        ("boot-it {system} files}", 1, 'unbalanced brace: "}" with no "{" before it in "files}"'),
        ("boot-it {file1} {file2}", 1, "placeholder {file2} is beyond the system's 1 image file (files = 1): use "
                                       "{file1}"),
        ("boot-it {file5}", 4, "placeholder {file5} is beyond the system's 4 image files (files = 4): use {file1} "
                               "to {file4}"),
        ("boot-it {file0}", 2, "unknown placeholder {file0} (known: {system}, {files}, {file1}, {file2}, {dtb}, "
                               f"{{bitstream}}, {{linux}}, {{python}}, {RUNNER}); image numbers start at 1: {{file1}}"),
        ("sh -c 'boot-it {system}", 1, "cannot split command: No closing quotation"),
        ("boot-it \\", 1, "cannot split command: No escaped character"),
        ("''", 1, "the program to run (the first word) is empty"),
        ("boot-it {home}", 1, "unknown placeholder {home} (known: {system}, {files}, {file1}, {dtb}, {bitstream}, "
                              f"{{linux}}, {{python}}, {RUNNER})"),
    ],
)
def test_template_mistakes(parser: str, template: str, files: int, message: str) -> None:
    for attr in ("boot", "power_off"):
        error = inventory_error(f"[systems.s]\nfiles = {files}\n{attr} = {json.dumps(template)}\n")
        assert str(error) == f"lab.toml: systems.s.{attr}: {message}"
        assert error.exit_code == 6


@pytest.mark.parametrize(
    "template",
    [
        "{python} -m mq.engine.host.simboard {system} {files}",
        "boot-it --kernel={file1} {file2} {linux} {dtb} {bitstream}",
        "sh -c 'awk \"{ print $1 }\" \"$0\"' {file1}",  # braces that pair up, with no placeholder name inside
        "find /x -name {system} -exec rm {} ;",
        "echo ${HOME} {{system}} {System}",  # upper case is not a placeholder: kept as written
    ],
)
def test_templates_that_are_fine(template: str) -> None:
    inv = parse_inventory(f"[systems.s]\nfiles = 2\nboot = {json.dumps(template)}\n", "lab.toml")
    assert inv.systems["s"].boot == template


def test_every_mistake_is_collected_and_the_first_raised() -> None:
    text = ('[colour]\n[systems.a]\nboot = "x {sytem}"\nfiles = 0\n[systems.b]\npower_off = "off {file2}"\n'
            '[pools.p]\nsystems = ["a", "zz"]\n')
    inventory, found = check_inventory(text, "lab.toml")
    assert [(e.key, e.detail.split(" (")[0]) for e in found] == [
        ("colour", "unknown section"),
        ("systems.a.files", "expected an integer >= 1, got 0"),
        ("systems.a.boot", "unknown placeholder {sytem}"),  # {fileN} not checked against a wrong files
        ("systems.b.power_off", "placeholder {file2} is beyond the system's 1 image file"),
        ("pools.p.systems", 'unknown system "zz"'),
    ]
    assert list(inventory.systems) == ["a", "b"]
    error = inventory_error(text)
    assert str(error).startswith("lab.toml: colour: unknown section")
    assert str(error).endswith("(and 4 more problems: mq check lists them all)")


def test_a_broken_system_is_not_reported_again_by_its_pool() -> None:
    _, found = check_inventory('[systems."a b"]\n[systems.c]\n[pools.p]\nsystems = ["a b"]\n', "lab.toml")
    assert [e.key for e in found] == ['systems."a b"']


def test_expansion_reads_templates_as_the_inventory_does() -> None:
    system = System("s", files=2, boot="x")
    images = Images(files=["/j/one img", "/j/two"], dtb="/j/d", linux=True)
    argv = expand("boot {system} {files} --k={file1} {linux} {dtb} {bitstream} {{system}} ${HOME}", system, images,
                  "systems.s.boot")
    assert argv == ["boot", "s", "/j/one img", "/j/two", "--k=/j/one img", "-L", "/j/d", "{s}", "${HOME}"]
    with pytest.raises(InventoryError) as caught:
        expand("boot {files", system, images, "systems.s.boot", path="/lab/lab.toml")
    assert str(caught.value) == '/lab/lab.toml: systems.s.boot: unbalanced brace: "{" never closed in "{files" ' \
                                "(did you mean {files}?)"


def test_missing_boot_is_a_configuration_error() -> None:
    inv = parse_inventory("[systems.s]\n", "/lab/lab.toml")
    error = inv.missing_boot("s")
    assert str(error) == "/lab/lab.toml: systems.s.boot: no boot command: mq run cannot boot s (sem and run -r work " \
                         "without one)"
    assert error.exit_code == 6
