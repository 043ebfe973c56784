"""``mq check``: every mistake in a lab file, the configuration and (``--host``) the lab host.

Nothing is locked or queued. A lab file is read here (``mq check FILE``: a
file on this machine, before it is installed), or the configured lab's
(on a local lab read here; on a remote one the host reads it, and a broken
one is refused there with its first mistake). ``--host`` asks the host
(over the lab's one transport) whether its lock directory is writable and
``lockfile(1)`` and mq agree on locks there (``engine.hostcheck``).

Each finding is one line: ``SOURCE: KEY: message`` for a mistake,
``SOURCE: KEY: warning: ...`` for what is allowed but probably not meant,
``HOST: CHECK: ok`` or ``HOST: CHECK: FAIL: reason`` for the host's checks.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mq.engine.core import templates
from mq.engine.core.errors import EngineError, ExitCode, InventoryError, LockDirError
from mq.engine.core.inventory import Inventory, check_inventory, read_inventory
from mq.settings.errors import ConfigError

if TYPE_CHECKING:
    from mq.settings.config import Config

    from .service import Lab

OK, WARNING, FAIL, SKIPPED = "ok", "warning", "fail", "skipped"


@dataclass(frozen=True)
class Finding:
    source: str  # a file, "configuration", or the lab host
    key: str  # the dotted key or the host check; "" for the whole source
    status: str  # OK, WARNING, FAIL (a problem) or SKIPPED
    detail: str = ""
    exit_code: int = 0
    host_check: bool = False  # said as "ok" / "FAIL: reason"

    def line(self) -> str:
        prefix = f"{self.source}: {self.key}: " if self.key else f"{self.source}: "
        if self.status == OK:
            return prefix + "ok" + (f" ({self.detail})" if self.detail else "")
        if self.status == FAIL:
            return prefix + ("FAIL: " if self.host_check else "") + self.detail
        return f"{prefix}{self.status}: {self.detail}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # for stderr (the demo lab was created)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FAIL]

    @property
    def exit_code(self) -> int:
        """The first problem's code (configuration and inventory: 6), 0 with none."""
        return next((f.exit_code for f in self.problems), ExitCode.OK)

    def summary(self) -> str | None:
        """The line for stderr, if there is something to say."""
        problems, warnings = self.problems, sum(f.status == WARNING for f in self.findings)
        if problems:
            sources = ", ".join(dict.fromkeys(f.source for f in problems))
            return f"mq: {_count(len(problems), 'problem')} in {sources}"
        return f"mq: no problems, {_count(warnings, 'warning')}" if warnings else None

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.problems, "exit_code": self.exit_code, "problems": len(self.problems),
                "findings": [{k: v for k, v in asdict(f).items() if k != "host_check"} for f in self.findings]}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def check(file: str | None, host: bool, host_option: str | None = None, base_option: str | None = None,
          mqsh: bool = False) -> Report:
    """``mq check [FILE] [--host]``: the configuration, the lab file (FILE, else the configured
    lab's), and with ``host`` the lab host."""
    report = Report()
    config = _check_config(report, host_option, base_option, mqsh, host)
    if file is not None:
        report.findings += check_lab_file(file)
    if config is None and host:
        report.findings.append(Finding("host", "host checks", SKIPPED, "not run: the configuration names no usable "
                                                                      "lab host (above)", host_check=True))
    if config is None or (file is not None and not host):
        return report
    from .service import open_lab

    try:
        lab = open_lab(config)
    except EngineError as exc:
        report.findings += _not_opened(config, exc, host)
        return report
    try:
        report.notices += lab.notices
        if file is None:
            report.findings += _check_configured_lab(lab)
        if host:
            report.findings += check_host(lab)
    finally:
        lab.close()
    return report


def _check_config(report: Report, host: str | None, base: str | None, mqsh: bool,
                  host_checks: bool = False) -> Config | None:
    from mq.settings.config import load_config

    try:
        config = load_config(host=host, base=base, mqsh=mqsh)
    except ConfigError as exc:
        prefix = f"{exc.source}: {exc.key}: " if exc.key else f"{exc.source}: "
        detail = exc.message[len(prefix):] if exc.message.startswith(prefix) else exc.message
        report.findings.append(Finding(exc.source, exc.key, FAIL, detail, exc.exit_code))
        return None
    if config.backend:
        from mq.settings.config import redacted

        report.findings.append(Finding("configuration", "", OK, f"queue in PostgreSQL ({redacted(config.backend)}), "
                                                                f"lab host {config.host} for systems without one"))
    elif config.is_local and not config.default_lab and not host_checks and not os.path.isdir(config.base):
        # as every other command says it (exit 7); the demo lab is made on first use
        # (with --host, the host's checks say it, with the rest of what they find)
        report.findings.append(Finding("configuration", "base", FAIL,
                                       f"the lock directory does not exist: {config.base}", ExitCode.LOCKDIR))
        return None
    else:
        report.findings.append(Finding("configuration", "", OK, f"host {config.host}, base {config.base}, "
                                                                f"lab {config.lab}"))
    return config


def check_lab_file(path: str, source: str | None = None) -> list[Finding]:
    """Every mistake (and warning) in the lab file at ``path``, on this machine."""
    try:
        text = read_inventory(path)
    except InventoryError as exc:
        return [_mistake(exc, source)]
    inventory, mistakes = check_inventory(text, path)
    return _inventory_findings(inventory, mistakes, source or path)


def _check_configured_lab(lab: Lab) -> list[Finding]:
    config = lab.config
    if config.backend:  # the inventory stored in the database (checked when it was loaded)
        return _inventory_findings(lab.inventory, [], "database:" + lab.inventory.path)
    if config.is_local:
        return check_lab_file(config.lab)
    try:
        inventory = lab.inventory  # read and checked on the host: its first mistake, if any
    except InventoryError as exc:
        return [_mistake(exc, f"{config.host}:{exc.path}")]
    return _inventory_findings(inventory, [], f"{config.host}:{inventory.path}")


def _mistake(exc: InventoryError, source: str | None = None) -> Finding:
    return Finding(source or exc.path, exc.key, FAIL, exc.detail, exc.exit_code)


def _inventory_findings(inventory: Inventory, mistakes: list[InventoryError], source: str) -> list[Finding]:
    found = [_mistake(m, source) for m in mistakes]
    wrong = {m.key for m in mistakes}  # a broken attribute is not warned about as missing too
    found += [Finding(source, key, WARNING, detail) for key, detail in inventory_warnings(inventory)
              if key not in wrong]
    if not mistakes:
        found.append(Finding(source, "", OK, f"{_count(len(inventory.systems), 'system')}, "
                                             f"{_count(len(inventory.pools), 'pool')}"))
    return found


def inventory_warnings(inventory: Inventory) -> list[tuple[str, str]]:
    """(key, message) for what the inventory allows but is probably not meant."""
    found: list[tuple[str, str]] = []
    systems = list(inventory.systems.values())
    some_boot = any(s.boot for s in systems)
    if systems and not some_boot:
        found.append(("systems", "no system has a boot command: mq run cannot boot any (sem and run -r work)"))
    for system in systems:
        if system.boot is None and some_boot:
            found.append((f"systems.{system.name}.boot",
                          f"no boot command: mq run cannot boot {system.name} (sem and run -r work)"))
        found += [(f"systems.{system.name}.{attr}", message) for attr, message in
                  templates.warnings(system.boot, system.power_off, system.files, system.dtb, system.pxe_linux)]
    return found


def _not_opened(config: Config, exc: EngineError, host: bool) -> list[Finding]:
    """The lab could not be opened (SSH, the host's engine, its lock directory or inventory)."""
    from mq.transport.base import SshError

    if isinstance(exc, InventoryError):
        found = [_mistake(exc, f"{config.host}:{exc.path}")]
        if host:
            found.append(Finding(config.host, "host checks", SKIPPED, "not run: the host refuses its lab file "
                                                                       "(above)", host_check=True))
        return found
    if isinstance(exc, LockDirError):
        return [Finding(config.host, "lock directory", FAIL, exc.message, exc.exit_code, host_check=True)]
    detail = f"Unable to ssh to {exc.host}: {exc.reason}" if isinstance(exc, SshError) else exc.message
    return [Finding(config.host, "reachable", FAIL, detail, exc.exit_code, host_check=True)]


def check_host(lab: Lab) -> list[Finding]:
    """The host's own checks: reachable (the lab is open), lock directory, ``lockfile(1)``; for a
    queue in PostgreSQL, the database (the lab hosts are reached by ``run`` only)."""
    host = lab.config.host
    if lab.config.backend:
        inventory = lab.inventory
        hosts = sorted({s.host or host for s in inventory.systems.values()})
        return [Finding("database", "reachable", OK, f"schema up to date, inventory of {len(inventory.systems)} "
                                                     f"systems; lab hosts (for run): {', '.join(hosts)}",
                        host_check=True), _connections(lab)]
    result = lab.transport.call("check_host")
    how = "no SSH, this machine" if lab.transport.host == "local" else "over SSH"
    found = [Finding(host, "reachable", OK, f"{how}: user {result['user']} on {result['host']}, "
                                            f"Python {result['python']}", host_check=True)]
    codes = {"lock directory": ExitCode.LOCKDIR, "lockfile(1)": ExitCode.LOCKDIR}
    for item in result["checks"]:
        status = {"ok": OK, "fail": FAIL}.get(item["status"], SKIPPED)
        code = codes.get(item["check"], ExitCode.LOCKDIR) if status == FAIL else 0
        found.append(Finding(host, str(item["check"]), status, str(item["detail"]), code, host_check=True))
    return found


def _connections(lab: Lab) -> Finding:
    """The database's connection budget: each waiting client uses at most 2 connections."""
    engine: Any = getattr(lab.transport, "engine", None)
    budget = engine.connections()
    limit = f", role limit {budget['role_limit']}" if budget["role_limit"] >= 0 else ""
    detail = (f"max_connections {budget['max_connections']} ({budget['reserved']} reserved{limit}), "
              f"{budget['in_use']} in use ({budget['by_mq']} by mq): room for {budget['room']} more waiting "
              "clients (2 connections each)")
    return Finding("database", "connections", OK if budget["room"] > 0 else FAIL, detail,
                   0 if budget["room"] > 0 else ExitCode.LOCKDIR, host_check=True)


__all__ = ["Finding", "Report", "check", "check_host", "check_lab_file", "inventory_warnings"]
