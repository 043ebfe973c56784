"""The lab as mq sees it: its systems (boards) with their attributes, its pools, its queue
rules. The types only: ``inventory`` reads, checks and builds them from the lab file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

from .errors import BadInputError, InventoryError, UnknownTargetError
from .policy import QueueConfig
from .tomlparse import dotted_key as _key

ATTRIBUTES = (
    "arch", "isa", "soc", "cpu", "cores", "ram", "max_clk", "sel4_plat",
    "files", "pxe_linux", "dtb", "boot", "power_off", "health_limit", "host",
)  # fmt: skip


@dataclass(frozen=True)
class System:
    """One board of the lab, with its descriptive attributes."""

    name: str
    arch: str = ""
    isa: str = ""
    soc: str = ""
    cpu: str = ""
    cores: str = ""  # as mq.sh has it: "4", "4(1)", "?" ("": not given)
    ram: str = ""
    max_clk: str = ""
    sel4_plat: str = ""
    files: int = 1
    pxe_linux: bool = False
    dtb: bool = False
    boot: Optional[str] = None
    power_off: Optional[str] = None
    health_limit: int = 0  # board failures of `mq run` in a row that take it offline (0: never)
    host: str = ""  # its lab host ("": the lab's one host)

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
    policy: Optional[str] = None  # its own queue policy (None: the lab's)
    aging: Optional[float] = None  # its own aging (None: the lab's)


@dataclass(frozen=True)
class Inventory:
    """The parsed lab inventory; ``systems`` and ``pools`` keep declaration order."""

    path: str
    systems: Dict[str, System] = field(default_factory=dict)
    pools: Dict[str, Pool] = field(default_factory=dict)
    queue: QueueConfig = field(default_factory=QueueConfig)
    # why ``mq run`` may not execute its command templates (``trust``); None: it may
    untrusted: Optional[str] = field(default=None, compare=False)
    audit_syslog: bool = False  # [audit] syslog = true: audit records go to syslog too

    def is_pool(self, name: str) -> bool:
        return name in self.pools

    def members(self, name: str) -> Tuple[str, ...]:
        """``(name,)`` for a system, the members of a pool; UnknownTargetError otherwise."""
        if name in self.systems:
            return (name,)
        if name in self.pools:
            return self.pools[name].members
        raise UnknownTargetError(name, list(self.systems), list(self.pools))

    def narrowed(self, name: str, boards: Optional[Sequence[str]]) -> Tuple[str, ...]:
        """The boards a wait for ``name`` may take: its members, or ``boards`` among them (``run``'s
        suitable members); BadInputError when ``boards`` is empty or names another."""
        members = self.members(name)
        if boards is None:
            return members
        if not boards or not set(boards) <= set(members):
            raise BadInputError(f"no suitable board in {name}")
        return tuple(boards)

    def missing_boot(self, system: str) -> InventoryError:
        """The configuration error for ``mq run`` (not ``-r``) on ``system``, which has no ``boot``."""
        return InventoryError(self.path, _key("systems", system, "boot"),
                              f"no boot command: mq run cannot boot {system} (sem and run -r work without one)")

    def pools_of(self, system: str) -> Tuple[str, ...]:
        """The pools that contain ``system`` (empty for an unknown name)."""
        return tuple(pool.name for pool in self.pools.values() if system in pool.members)


__all__ = ["ATTRIBUTES", "Inventory", "Pool", "System"]
