"""The library API the CLI calls: open the lab's transport, call the engine, return results.

Whether the engine runs in this process (the built-in local lab, or on the
lab host itself) or on the lab host over one SSH connection is the
transport's business; results come back as the engine's own objects.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mq.engine.core.arguments import MAX_SECONDS
from mq.engine.core.errors import BadInputError
from mq.engine.core.inventory import Inventory, Pool, System, system_fields
from mq.engine.core.names import NO_KEY
from mq.engine.core.policy import QueueConfig
from mq.engine.core.protocol import states_from_wire
from mq.engine.core.results import BoardState, Grant, Holder, LabStatus, Offline, Released, Ticket
from mq.settings.config import Config
from mq.transport import Transport, open_transport

from . import inventory_cache

DEMO_NOTICE = ("mq: no configuration found; created a demo lab with simulated boards in {base} "
               "(set MQ_HOST/MQ_BASE or ~/.config/mq/config.toml for a real lab)")


def wait_budget(period: float, retries: int) -> float | None:
    """mq.sh's ``-w``/``-t`` as a total budget: -1 forever, 0 one try, else period x retries
    (``-w inf`` with ``-t`` above 0: forever)."""
    if math.isnan(period) or period < 0:
        raise BadInputError(f"-w {period:g}: the retry period must be a number of seconds >= 0")
    if retries < 0:
        return None
    if retries == 0:
        return 0.0
    if math.isinf(period):
        return None
    budget = period * retries
    if budget > MAX_SECONDS:
        raise BadInputError(f"-w {period:g} -t {retries}: a wait of {budget:g} s is out of range "
                            f"(at most {MAX_SECONDS:.0f} s; -t -1 waits forever)")
    return budget


@dataclass
class Lab:
    """An opened lab: one transport (one SSH connection at most) for the whole command."""

    config: Config
    transport: Transport
    notices: list[str] = field(default_factory=list)
    on_notice: Callable[[str], None] | None = None
    warn_untrusted: bool = True  # say so when the inventory is one mq run will not run commands from
    _inventory: Inventory | None = None

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            data = self.transport.call("inventory")
            self._inventory = inventory_from_wire(data)
            inventory_cache.save(self.config, data)
            if self._inventory.untrusted and self.warn_untrusted:
                from mq.engine.host.trust import refusal

                self.notice(f"warning: {self._inventory.path}: {refusal(self._inventory.untrusted)}")
        return self._inventory

    def notice(self, text: str) -> None:
        """A line for stderr: said at once when the CLI listens (``on_notice``), else kept."""
        if self.on_notice is not None:
            self.on_notice(text)
        else:
            self.notices.append(text)

    def note_name(self, name: str | None = None) -> None:
        """Refresh the completion cache (one request) if it is missing or lacks ``name``."""
        if self._inventory is None and inventory_cache.lacks(self.config, name):
            _ = self.inventory

    def close(self) -> None:
        self.transport.close()


def cached_inventory(config: Config) -> tuple[Inventory, float] | None:
    """A remote lab's inventory as the last command that read it kept it, and when (None: none
    kept): for the listings while the lab host cannot be reached."""
    cached = inventory_cache.load(config)
    return None if cached is None else (inventory_from_wire(cached[0]), cached[1])


def inventory_from_wire(data: dict[str, Any]) -> Inventory:
    systems = {s["name"]: System(**system_fields(s)) for s in data["systems"]}
    pools = {p["name"]: Pool(**{**p, "members": tuple(p["members"])}) for p in data["pools"]}
    untrusted = data.get("untrusted")
    return Inventory(path=str(data["path"]), systems=systems, pools=pools,
                     queue=QueueConfig.from_wire(data.get("queue")),
                     untrusted=str(untrusted) if untrusted is not None else None)


def _create_demo_lab(config: Config) -> str | None:
    """Write the demo inventory unless it exists; the notice when this process wrote it.

    Several first commands may start at once (a script, shell completion): the
    lock makes exactly one of them create the lab and print the notice.
    """
    if os.path.exists(config.lab):
        return None  # the common case: no lock, no filelock import
    from filelock import FileLock

    from mq.engine.host.demo import DEMO_INVENTORY

    os.makedirs(config.base, mode=0o700, exist_ok=True)
    with FileLock(os.path.join(config.base, ".setup.lock")):
        if os.path.exists(config.lab):
            return None  # another command created it while this one waited
        tmp = config.lab + f".tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(DEMO_INVENTORY)
        os.replace(tmp, config.lab)
    return DEMO_NOTICE.format(base=config.base)


def open_lab(config: Config) -> Lab:
    notices: list[str] = []
    if config.default_lab:
        notice = _create_demo_lab(config)
        if notice:
            notices.append(notice)
    return Lab(config=config, transport=open_transport(config), notices=notices)


def _states(data: list[dict[str, Any]]) -> list[BoardState]:
    return [BoardState(*fields) for fields in states_from_wire(data)]


def sem_wait(lab: Lab, name: str, key: str = NO_KEY, lock_timeout: int = 0, period: float = 8.0,
             retries: int = -1, on_queue: Callable[[dict[str, Any]], None] | None = None,
             priority: int | None = None) -> Grant:
    """Wait for ``name``; ``on_queue`` is given each ``queue`` event (place, holders, ETA) while waiting.
    ``priority`` None: the inventory's ``[queue]`` decides."""
    lab.note_name(name)
    budget = wait_budget(period, retries)
    extra: dict[str, Any] = {} if priority is None else {"priority": priority}
    if on_queue is None:
        return Grant(**lab.transport.call("wait", name=name, key=key, timeout=lock_timeout, budget=budget, **extra))

    def on_event(event: str, _payload: bytes, fields: dict[str, Any]) -> None:
        if event == "queue":
            on_queue(fields)

    return Grant(**lab.transport.call("wait", on_event=on_event, name=name, key=key, timeout=lock_timeout,
                                      budget=budget, progress=True, **extra))


def confirm_grant(lab: Lab, grant: Grant) -> None:
    """The grant is reported: on the PostgreSQL queue it stops going with this client's connection
    (a lock file needs nothing: no round trip is spent on it)."""
    if lab.config.backend:
        lab.transport.call("confirm", board=grant.board, grant=grant.grant)


def undo_grant(lab: Lab, grant: Grant) -> None:
    lab.transport.call("undo_grant", board=grant.board, key=grant.key, grant=grant.grant)


def sem_signal(lab: Lab, name: str, key: str = NO_KEY, force: bool = False) -> list[Released]:
    lab.note_name(name)
    data = lab.transport.call("signal", name=name, key=key, force=force)
    return [Released(board=r["board"], holder=Holder(**r["holder"]), forced=r["forced"]) for r in data]


def sem_info(lab: Lab, name: str) -> list[BoardState]:
    lab.note_name(name)
    return _states(lab.transport.call("info", name=name))


def sem_cancel(lab: Lab, name: str, key: str = NO_KEY, force: bool = False) -> int:
    """``force``: other users' waits with ``key`` too (audited)."""
    lab.note_name(name)
    if force:
        return int(lab.transport.call("cancel", name=name, key=key, force=True))
    return int(lab.transport.call("cancel", name=name, key=key))


def sem_dumpall(lab: Lab, order: str = "inventory") -> list[BoardState]:
    """Held boards in inventory order, or (``"directory"``) every lock file in directory order, as mq.sh."""
    lab.note_name()
    return _states(lab.transport.call("dumpall", order=order))


def events(lab: Lab, scope: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
    """The audit log's events from ``since`` on, about ``scope`` (a board or pool; None: all), oldest first."""
    data: list[dict[str, Any]] = lab.transport.call("events", scope=scope, since=since)
    return data


def whoami(lab: Lab) -> str:
    """The user this client is to the lab's engine (its login there, or its database role)."""
    return str(lab.transport.call("whoami")["user"])


def status(lab: Lab, names: list[str] | None = None) -> LabStatus:
    data = lab.transport.call("status", names=names or None)
    return LabStatus(now=float(data["now"]), boards=_states(data["boards"]), estimates=dict(data["estimates"]))


def set_offline(lab: Lab, board: str, reason: str) -> Offline:
    return Offline(**lab.transport.call("offline", board=board, reason=reason))


def set_online(lab: Lab, board: str) -> Offline | None:
    data = lab.transport.call("online", board=board)
    return None if data is None else Offline(**data)


__all__ = ["Lab", "LabStatus", "Ticket", "events", "open_lab", "sem_cancel", "sem_dumpall", "sem_info", "sem_signal",
           "sem_wait", "set_offline", "set_online", "status", "whoami"]
