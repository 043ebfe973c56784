"""The lab inventory: which systems (boards) exist, and which pools group them.

It is a TOML file (``lab.toml``)::

    [systems.odroidc4_1]
    arch = "arm"            # arch, isa, soc, cpu, sel4_plat: strings
    cores = 4               # cores, ram, max_clk: text as mq.sh has it ("4(1)", "?"); an integer is taken as text
    ram = "4GB"
    files = 1               # boot images the system takes, an integer >= 1
    pxe_linux = false       # pxe_linux, dtb: booleans
    boot = "..."            # boot, power_off: command templates (strings, see ``templates``);
    power_off = "..."       # a system with no boot serves sem and run -r only

    health_limit = 3        # after this many board failures of `mq run` in a row, the
                            # board takes itself offline (absent: never)
    host = "tftp2"          # the lab host it hangs off (for a lab that spans hosts)

    [pools.arm_pool]
    systems = ["sabre"]         # explicit members, and/or
    match = { arch = "arm" }    # every system whose attributes all equal these
    policy = "priority"         # the pool's own queue policy and aging (else the lab's)

    [audit]
    syslog = true               # every audit record to syslog too, where no lab member can edit it

    [queue]                     # the queue policy (``policy``, ``queue_config``)
    policy = "fifo"             # or "priority"
    aging = 600                 # seconds of waiting worth one priority step (absent: no aging)
    users = { alice = 5 }       # priorities by user, and by key pattern (first match wins):
    keys = { "ci-*" = -5 }      # a wait's own --priority comes first

Every mistake is an :class:`InventoryError` naming the file and the dotted key
(``systems.b1.boot``): ``load_inventory`` and ``parse_inventory`` raise the
first, ``check_inventory`` returns them all (``mq check``). Command templates
are checked here too (placeholders, braces, ``{fileN}`` against ``files``),
so a mistake in one is found before anything is locked.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import fields
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from . import queue_config, templates, tomlparse
from .errors import InventoryError
from .lab import ATTRIBUTES, Inventory, Pool, System
from .names import NAME_RE
from .names import valid_name as is_valid_name
from .policy import QueueConfig
from .tomlparse import dotted_key as _key
from .tomlparse import quoted as _quote

__all__ = [
    "ATTRIBUTES",
    "NAME_RE",
    "Inventory",
    "Pool",
    "System",
    "check_inventory",
    "is_valid_name",
    "load_inventory",
    "parse_inventory",
    "read_inventory",
    "read_inventory_file",
    "system_fields",
    "system_from_wire",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_INVENTORY = 4 << 20  # bytes: a lab of thousands of systems fits many times over

_TEXT_ATTRS = ("arch", "isa", "soc", "cpu", "sel4_plat", "host")
_SIZE_ATTRS = ("cores", "ram", "max_clk")  # text as mq.sh has it; an integer is accepted and rendered as text
_COUNT_ATTRS = ("files", "health_limit")
_BOOL_ATTRS = ("pxe_linux", "dtb")
_COMMAND_ATTRS = ("boot", "power_off")
def load_inventory(path: str) -> Inventory:
    """Read and check the inventory file at ``path``; raises its first mistake."""
    return parse_inventory(read_inventory(path), path)


def system_fields(data: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored or sent system's fields as ``System`` takes them: ``cores`` kept as a number
    by earlier versions (0: not given) becomes text."""
    known = {f.name for f in fields(System)}
    values = {k: v for k, v in data.items() if k in known}
    cores = values.get("cores")
    if isinstance(cores, int) and not isinstance(cores, bool):
        values["cores"] = str(cores) if cores else ""
    return values


def system_from_wire(data: Dict[str, Any]) -> System:
    """A system sent whole (a bare job's, ``bare``), checked as the inventory checks one."""
    name = data.get("name")
    if not isinstance(name, str):
        raise InventoryError("(job)", "system", "a system needs a name")
    defaults = {f.name: f.default for f in fields(System)}
    body = {k: v for k, v in data.items() if k != "name" and not (k in defaults and v == defaults[k])}
    found: List[InventoryError] = []
    system = _parse_system(found, "(job)", name, body)
    if found or system is None:
        raise found[0] if found else InventoryError("(job)", "system", "not a system")
    return system


def read_inventory(path: str) -> str:
    """The text of the inventory file at ``path`` (InventoryError if it cannot be read)."""
    return read_inventory_file(path)[0]


def read_inventory_file(path: str) -> Tuple[str, os.stat_result]:
    """The text of the inventory file at ``path`` and the status of the file it was read from
    (what ``trust`` judges). Never blocks on a FIFO or a device, never reads more than
    ``MAX_INVENTORY`` bytes: anything but a regular file of that size is an InventoryError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InventoryError(path, "", "no such file") from None
    except OSError as exc:
        raise InventoryError(path, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InventoryError(path, "", "not a regular file")
        if st.st_size > MAX_INVENTORY:
            raise InventoryError(path, "", f"larger than {MAX_INVENTORY >> 20} MiB")
        chunks: List[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_INVENTORY:
                raise InventoryError(path, "", f"larger than {MAX_INVENTORY >> 20} MiB")
            chunks.append(chunk)
    except OSError as exc:
        raise InventoryError(path, "", f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8"), st
    except UnicodeDecodeError as exc:
        raise InventoryError(path, "", f"not valid UTF-8 (byte {exc.start})") from None


def parse_inventory(text: str, path: str) -> Inventory:
    """Check the inventory ``text``; ``path`` is only used in error messages. Raises the first
    mistake (saying how many more there are: ``check_inventory`` lists them all)."""
    inventory, found = check_inventory(text, path)
    if len(found) > 1:
        first, more = found[0], len(found) - 1
        raise InventoryError(first.path, first.key, f"{first.detail} (and {more} more problem"
                                                    f"{'s' if more > 1 else ''}: mq check lists them all)")
    if found:
        raise found[0]
    return inventory


def check_inventory(text: str, path: str) -> Tuple[Inventory, List[InventoryError]]:
    """The inventory in ``text`` and every mistake in it, in file order: TOML, names, attributes,
    command templates (``templates``), pools. The inventory is only sound when there is none."""
    try:
        data = tomlparse.loads(text)
    except tomlparse.TOMLDecodeError as exc:
        return Inventory(path), [InventoryError(path, "", f"invalid TOML: {tomlparse.explain(text, exc)}")]
    found: List[InventoryError] = []
    for section in data:
        if section not in ("systems", "pools", "queue", "audit"):
            found.append(InventoryError(path, _key(section), "unknown section (expected [systems.NAME], "
                                                             "[pools.NAME], [queue] or [audit])"))
    systems: Dict[str, System] = {}
    broken: Set[str] = set()  # declared, but unusable: not reported again where a pool names them
    declared = _found_table(found, path, "systems", data.get("systems", {}))
    for name, body in (declared or {}).items():
        system = _parse_system(found, path, name, body)
        if system is None:
            broken.add(name)
        else:
            systems[name] = system
    if declared == {}:
        found.append(InventoryError(path, "systems", "no systems defined (add a [systems.NAME] table)"))
    pools: Dict[str, Pool] = {}
    for name, body in (_found_table(found, path, "pools", data.get("pools", {})) or {}).items():
        pool = _parse_pool(found, path, name, body, systems, broken)
        if pool is not None:
            pools[name] = pool
    queue = QueueConfig()
    if "queue" in data:
        queue = queue_config.parse_queue(found, path, data["queue"])
    return Inventory(path, systems, pools, queue, audit_syslog=_audit_syslog(found, path, data)), found


def _audit_syslog(found: List[InventoryError], path: str, data: Dict[str, Any]) -> bool:
    """``[audit] syslog = true``: every audit record goes to syslog too (see ``audit``)."""
    table = _found_table(found, path, "audit", data.get("audit", {}))
    if not table:
        return False
    for key in table:
        if key != "syslog":
            found.append(InventoryError(path, _key("audit", key), "unknown key (expected syslog)"))
    value = table.get("syslog", False)
    if not isinstance(value, bool):
        found.append(InventoryError(path, _key("audit", "syslog"), f"expected true or false, not {_show(value)}"))
        return False
    return value


def _found_table(found: List[InventoryError], path: str, key: str, value: object) -> Optional[Dict[str, Any]]:
    """``value`` if it is a table; else the mistake is added to ``found`` and None returned."""
    try:
        return _table(path, key, value)
    except InventoryError as exc:
        found.append(exc)
        return None


def _parse_system(found: List[InventoryError], path: str, name: str, body: object) -> Optional[System]:
    where = _key("systems", name)
    try:
        _check_name(path, where, name)
    except InventoryError as exc:
        found.append(exc)
        return None
    table = _found_table(found, path, where, body)
    if table is None:
        return None
    values: Dict[str, Any] = {}
    for attr, value in table.items():
        try:
            values[attr] = _attribute(path, _key("systems", name, attr), attr, value)
        except InventoryError as exc:
            found.append(exc)
    files = values.get("files") if "files" in table else 1  # None: a wrong count, not checked against
    for attr in _COMMAND_ATTRS:
        if attr in values:
            found += [InventoryError(path, _key("systems", name, attr), detail)
                      for detail in templates.problems(values[attr], files)]
    return System(name, **values)


def _parse_pool(found: List[InventoryError], path: str, name: str, body: object, systems: Mapping[str, System],
                broken: Set[str]) -> Optional[Pool]:
    where = _key("pools", name)
    try:
        _check_name(path, where, name)
        if name in systems or name in broken:
            raise InventoryError(path, where, "a pool cannot have the name of a system")
    except InventoryError as exc:
        found.append(exc)
        return None
    table = _found_table(found, path, where, body)
    if table is None:
        return None
    before = len(found)
    for key in table:
        if key not in ("systems", "match", "policy", "aging"):
            found.append(InventoryError(path, _key("pools", name, key),
                                        "unknown key (expected systems, match, policy or aging)"))
    policy, aging = queue_config.parse_pool_rule(found, path, where, table)
    listed = table.get("systems", [])
    members = _listed(found, path, where, listed, systems, broken)
    if "match" in table:
        members += [m for m in _matched(found, path, name, table["match"], systems) if m not in members]
    doubtful = len(found) > before or (isinstance(listed, list) and any(item in broken for item in listed
                                                                         if isinstance(item, str)))
    if not members and not doubtful:  # not when a mistake above may be why
        detail = "its match selects no system" if "match" in table else "give it systems or match"
        found.append(InventoryError(path, where, f"pool has no members ({detail})"))
    return Pool(name, tuple(members), policy, aging)


def _listed(found: List[InventoryError], path: str, where: str, listed: object, systems: Mapping[str, System],
            broken: Set[str]) -> List[str]:
    """A pool's ``systems`` array, checked: the members it names."""
    if not isinstance(listed, list):
        found.append(InventoryError(path, where + ".systems",
                                    f"expected an array of system names, got {_show(listed)}"))
        return []
    members: List[str] = []
    for item in listed:
        if not isinstance(item, str):
            found.append(InventoryError(path, where + ".systems", f"expected a system name, got {_show(item)}"))
        elif item in broken:
            continue  # its own mistake is reported
        elif item not in systems:
            found.append(InventoryError(path, where + ".systems",
                                        f"unknown system {_show(item)} (systems: {' '.join(systems)})"))
        elif item in members:
            found.append(InventoryError(path, where + ".systems", f"system {_show(item)} is listed twice"))
        else:
            members.append(item)
    return members


def _matched(found: List[InventoryError], path: str, name: str, match: object,
             systems: Mapping[str, System]) -> List[str]:
    """The systems a pool's ``match`` selects (none if it has a mistake)."""
    where = _key("pools", name, "match")
    criteria = _found_table(found, path, where, match)
    if criteria is None:
        return []
    if not criteria:
        found.append(InventoryError(path, where, "expected at least one attribute"))
        return []
    wanted: Dict[str, Any] = {}
    for attr, value in criteria.items():
        try:
            wanted[attr] = _attribute(path, _key("pools", name, "match", attr), attr, value)
        except InventoryError as exc:
            found.append(exc)
    if len(wanted) < len(criteria):
        return []
    return [s.name for s in systems.values() if all(s.attribute(a) == v for a, v in wanted.items())]


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
