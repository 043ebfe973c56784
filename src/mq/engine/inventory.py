"""The lab inventory: which systems (boards) exist, and which pools group them.

It is a TOML file (``lab.toml``)::

    [systems.odroidc4_1]
    arch = "arm"            # arch, isa, soc, cpu, sel4_plat: strings
    cores = 4               # an integer >= 1
    ram = "4GB"             # ram, max_clk: strings (an integer is taken as text)
    files = 1               # boot images the system takes, an integer >= 1
    pxe_linux = false       # pxe_linux, dtb: booleans
    boot = "..."            # boot, power_off: commands (strings)

    [pools.arm_pool]
    systems = ["sabre"]         # explicit members, and/or
    match = { arch = "arm" }    # every system whose attributes all equal these

Every mistake raises :class:`InventoryError` naming the file and the dotted key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import tomlparse
from .errors import InventoryError, UnknownTargetError
from .names import NAME_RE
from .names import valid_name as is_valid_name
from .tomlparse import dotted_key as _key
from .tomlparse import quoted as _quote

__all__ = [
    "NAME_RE",
    "Inventory",
    "Pool",
    "System",
    "is_valid_name",
    "load_inventory",
    "parse_inventory",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_TEXT_ATTRS = ("arch", "isa", "soc", "cpu", "sel4_plat")
_SIZE_ATTRS = ("ram", "max_clk")  # text; an integer is accepted and rendered as text
_COUNT_ATTRS = ("cores", "files")
_BOOL_ATTRS = ("pxe_linux", "dtb")
_COMMAND_ATTRS = ("boot", "power_off")
ATTRIBUTES = (
    "arch", "isa", "soc", "cpu", "cores", "ram", "max_clk", "sel4_plat",
    "files", "pxe_linux", "dtb", "boot", "power_off",
)  # fmt: skip


@dataclass(frozen=True)
class System:
    """One board of the lab, with its descriptive attributes."""

    name: str
    arch: str = ""
    isa: str = ""
    soc: str = ""
    cpu: str = ""
    cores: int = 0  # 0: not given
    ram: str = ""
    max_clk: str = ""
    sel4_plat: str = ""
    files: int = 1
    pxe_linux: bool = False
    dtb: bool = False
    boot: Optional[str] = None
    power_off: Optional[str] = None

    def attribute(self, key: str) -> object:
        """The value of attribute ``key`` (``name`` or one of ``ATTRIBUTES``); KeyError otherwise."""
        if key != "name" and key not in ATTRIBUTES:
            raise KeyError(key)
        value: object = getattr(self, key)
        return value


@dataclass(frozen=True)
class Pool:
    """A named group of systems; members are in inventory order, without duplicates."""

    name: str
    members: Tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    """The parsed lab inventory; ``systems`` and ``pools`` keep declaration order."""

    path: str
    systems: Dict[str, System] = field(default_factory=dict)
    pools: Dict[str, Pool] = field(default_factory=dict)

    def is_pool(self, name: str) -> bool:
        return name in self.pools

    def members(self, name: str) -> Tuple[str, ...]:
        """``(name,)`` for a system, the members of a pool; UnknownTargetError otherwise."""
        if name in self.systems:
            return (name,)
        if name in self.pools:
            return self.pools[name].members
        raise UnknownTargetError(name, list(self.systems), list(self.pools))

    def pools_of(self, system: str) -> Tuple[str, ...]:
        """The pools that contain ``system`` (empty for an unknown name)."""
        return tuple(pool.name for pool in self.pools.values() if system in pool.members)


def load_inventory(path: str) -> Inventory:
    """Read and check the inventory file at ``path``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise InventoryError(path, "", "no such file") from None
    except OSError as exc:
        raise InventoryError(path, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(path, "", f"not valid UTF-8 (byte {exc.start})") from None
    return parse_inventory(text, path)


def parse_inventory(text: str, path: str) -> Inventory:
    """Check the inventory ``text``; ``path`` is only used in error messages."""
    try:
        data = tomlparse.loads(text)
    except tomlparse.TOMLDecodeError as exc:
        raise InventoryError(path, "", f"invalid TOML: {tomlparse.explain(text, exc)}") from None
    for section in data:
        if section not in ("systems", "pools"):
            raise InventoryError(path, _key(section), "unknown section (expected [systems.NAME] or [pools.NAME])")
    systems: Dict[str, System] = {}
    for name, body in _table(path, "systems", data.get("systems", {})).items():
        systems[name] = _parse_system(path, name, body)
    if not systems:
        raise InventoryError(path, "systems", "no systems defined (add a [systems.NAME] table)")
    pools: Dict[str, Pool] = {}
    for name, body in _table(path, "pools", data.get("pools", {})).items():
        pools[name] = _parse_pool(path, name, body, systems)
    return Inventory(path, systems, pools)


def _parse_system(path: str, name: str, body: object) -> System:
    where = _key("systems", name)
    _check_name(path, where, name)
    values = {
        attr: _attribute(path, _key("systems", name, attr), attr, value)
        for attr, value in _table(path, where, body).items()
    }
    return System(name, **values)


def _parse_pool(path: str, name: str, body: object, systems: Mapping[str, System]) -> Pool:
    where = _key("pools", name)
    _check_name(path, where, name)
    if name in systems:
        raise InventoryError(path, where, "a pool cannot have the name of a system")
    table = _table(path, where, body)
    for key in table:
        if key not in ("systems", "match"):
            raise InventoryError(path, _key("pools", name, key), "unknown key (expected systems or match)")
    members: List[str] = []
    listed = table.get("systems", [])
    if not isinstance(listed, list):
        raise InventoryError(path, where + ".systems", f"expected an array of system names, got {_show(listed)}")
    for item in listed:
        if not isinstance(item, str):
            raise InventoryError(path, where + ".systems", f"expected a system name, got {_show(item)}")
        if item not in systems:
            raise InventoryError(
                path, where + ".systems", f"unknown system {_show(item)} (systems: {' '.join(systems)})"
            )
        if item in members:
            raise InventoryError(path, where + ".systems", f"system {_show(item)} is listed twice")
        members.append(item)
    if "match" in table:
        criteria = _table(path, where + ".match", table["match"])
        if not criteria:
            raise InventoryError(path, where + ".match", "expected at least one attribute")
        wanted = {
            attr: _attribute(path, _key("pools", name, "match", attr), attr, value) for attr, value in criteria.items()
        }
        for system in systems.values():
            if system.name not in members and all(system.attribute(a) == v for a, v in wanted.items()):
                members.append(system.name)
    if not members:
        detail = "its match selects no system" if "match" in table else "give it systems or match"
        raise InventoryError(path, where, f"pool has no members ({detail})")
    return Pool(name, tuple(members))


def _attribute(path: str, key: str, attr: str, value: object) -> Any:
    """Check one system attribute (or match criterion) and return it in stored form."""
    if attr in _TEXT_ATTRS or attr in _SIZE_ATTRS or attr in _COMMAND_ATTRS:
        if attr in _SIZE_ATTRS and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            kind = "a string or an integer" if attr in _SIZE_ATTRS else "a string"
            raise InventoryError(path, key, f"expected {kind}, got {_show(value)}")
        if _CONTROL.search(value):
            raise InventoryError(path, key, f"must not contain control characters, got {_show(value)}")
        if attr in _COMMAND_ATTRS and not value.strip():
            raise InventoryError(path, key, "expected a command, got an empty string")
        return value
    if attr in _COUNT_ATTRS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InventoryError(path, key, f"expected an integer >= 1, got {_show(value)}")
        return value
    if attr in _BOOL_ATTRS:
        if not isinstance(value, bool):
            raise InventoryError(path, key, f"expected true or false, got {_show(value)}")
        return value
    raise InventoryError(path, key, f"unknown attribute (expected one of: {', '.join(ATTRIBUTES)})")


def _check_name(path: str, key: str, name: str) -> None:
    if not is_valid_name(name):
        raise InventoryError(
            path,
            key,
            "invalid name: use 1-64 of A-Z a-z 0-9 _ . + -, starting with a letter or digit,"
            " not ending in .lock or .key",
        )


def _table(path: str, key: str, value: object) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise InventoryError(path, key, f"expected a table, got {_show(value)}")
    return value


def _show(value: object) -> str:
    """A value as the user would have written it in TOML, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times
