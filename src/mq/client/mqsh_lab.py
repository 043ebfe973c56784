"""The shared vocabulary of ``mq import-mqsh``: what an mq.sh lab is made of and what importing it gives.

This module owns the types every part of the import passes around (a lab file, a finding, an
imported system or pool, the whole ``LabImport``), the attribute tables that map mq.sh's functions
to lab.toml's keys (``TEXT_FIELDS``, ``FLAG_FIELDS``) and ``_shown``, how a value is quoted in a
message. It runs nothing and imports no other part of the import: ``mqsh_shell`` runs the lab's
code, ``mqsh_import`` reads its answers and ``mqsh_toml`` writes the result, all on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Union

from mq.engine.core.errors import safe_text

TEXT_FIELDS = (("Arch", "arch"), ("ISA", "isa"), ("SOC", "soc"), ("CPU", "cpu"), ("Cores", "cores"),
               ("RAM", "ram"), ("MaxCLK", "max_clk"), ("Sel4Plat", "sel4_plat"))
FLAG_FIELDS = (("PXELinux", "pxe_linux"), ("DTB", "dtb"))  # mq.sh takes exactly "yes" for yes

Value = Union[str, int, bool]


def _shown(text: str) -> str:
    """A value in a message: quoted, on one line, cut after 64 characters."""
    return f'"{safe_text(text, 64)}"'


@dataclass(frozen=True)
class Finding:
    """A problem (``error``: nothing may be written) or a warning, at a lab file and function."""

    where: str  # the file, from the lab's folder: scripts/systems/NAME
    function: str  # Cores_NAME; "" for the file itself
    message: str
    error: bool = True

    def line(self) -> str:
        parts = [self.where, *([self.function] if self.function else [])]
        return ": ".join([*parts, ("" if self.error else "warning: ") + self.message])


@dataclass(frozen=True)
class LabFile:
    """A system's or pool's file: its name (the file's), where it is in the lab, its path."""

    name: str
    where: str
    path: str


@dataclass
class ImportedSystem:
    name: str
    values: Dict[str, Value]  # in lab.toml's order
    notes: List[str] = field(default_factory=list)  # comments above its table


@dataclass
class ImportedPool:
    name: str
    members: List[str]


@dataclass
class LabImport:
    """The lab as mq.sh sees it, and every finding; only to be written when ``errors`` is empty."""

    directory: str
    tftpboot: str
    systems: List[ImportedSystem] = field(default_factory=list)
    pools: List[ImportedPool] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.error]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if not f.error]


__all__ = ["FLAG_FIELDS", "TEXT_FIELDS", "Finding", "ImportedPool", "ImportedSystem", "LabFile", "LabImport",
           "Value"]
