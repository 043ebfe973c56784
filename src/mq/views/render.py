"""Output: mq.sh-compatible lines, tables and JSON. The only stdout writer."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, TextIO, Union

from mq.engine.core.errors import safe_text
from mq.engine.core.names import NO_KEY

if TYPE_CHECKING:  # what is rendered; imported by whoever made it (mq --help loads none of it)
    from mq.engine.core.inventory import Inventory
    from mq.engine.core.results import BoardState, Grant, Holder, Released

JSON_VERSION = 1


def out(line: str = "", stream: Optional[TextIO] = None) -> None:
    (stream or sys.stdout).write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


PREFIX = "mq: "


def diag(message: str) -> None:
    """A diagnostic: each line on stderr, each with ``mq: `` (data goes to stdout, with no prefix)."""
    for line in message.splitlines() or [""]:
        err(line if line.startswith(PREFIX) else PREFIX + line)


def stat_date(ns: int, zone: Optional[int] = None) -> str:
    """``stat -c %y`` style: 2024-07-31 13:02:11.000000000 +1000, in local time or, given
    ``zone`` (seconds east of UTC), in that zone (the lab host's, as ``mq.sh`` shows it)."""
    secs, frac = divmod(ns, 1_000_000_000)
    if zone is None:
        local = time.localtime(secs)
        return time.strftime("%Y-%m-%d %H:%M:%S", local) + f".{frac:09d} " + time.strftime("%z", local)
    sign, offset = ("-", -zone) if zone < 0 else ("+", zone)
    return (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs + zone)) + f".{frac:09d} "
            f"{sign}{offset // 3600:02d}{offset % 3600 // 60:02d}")


def duration(seconds: float) -> str:
    """A span as people read it: ``45s``, ``12m``, ``3h05m``, ``2d4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def held_text(board: str, user: str, seconds: float, key: Optional[str], timeout: Optional[int] = None) -> str:
    """``b1 held by alice (-T 600, 12m, key ci-42)``: one board's holder, as the waiting line and
    a wait's failure say it (no key shown for a lock taken without one)."""
    tail = f"-T {timeout}, " if timeout else ""
    keyed = f", key {safe_text(key, 40)}" if key not in (None, "", NO_KEY) else ""
    return f"{safe_text(board)} held by {safe_text(user, 40)} ({tail}{duration(seconds)}{keyed})"


def offline_text(board: str, reason: str) -> str:
    return f"{safe_text(board)} offline: {safe_text(reason, 80)}"


def busy_text(states: Sequence[BoardState], now: float) -> str:
    """What keeps a waiter from ``states``' boards: each one's holder or offline reason."""
    parts = []
    for state in states:
        if state.offline is not None:
            parts.append(offline_text(state.board, state.offline.reason))
        elif state.holder is not None:
            parts.append(held_text(state.board, state.holder.user, now - state.holder.since_ns / 1e9,
                                   state.holder.key))
    return "; ".join(parts)


def clock(when: float, now: float) -> str:
    """The time of day, with the date when it is not today."""
    local = time.localtime(when)
    same_day = local[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", local)


def _key(holder: Holder, as_mqsh: bool = False) -> str:
    """The key as shown; ``as_mqsh``: a lock with no key file (bare ``lockfile(1)``) has the empty
    key, as ``mq.sh``'s ``cat`` of the missing file gives it."""
    return "" if as_mqsh and holder.key is None else safe_text(holder.shown_key, 256)


def _since(holder: Holder, as_mqsh: bool) -> str:
    return stat_date(holder.since_ns, holder.zone if as_mqsh else None)


def info_line(state: BoardState, as_mqsh: bool = False) -> str:
    """mq.sh's line: ``with key 'KEY'`` only for a lock held with a key (not ``0``); ``as_mqsh``:
    exactly as ``mq.sh`` prints it (the lab host's time zone, a missing key file as ``''``)."""
    holder = state.holder
    if holder is None:
        return f"Lock for {state.board} currently free"
    timeout = "?" if holder.timeout is None else str(holder.timeout)
    key = _key(holder, as_mqsh)
    keyed = f" with key '{key}'" if key != NO_KEY else ""
    return f"Lock for {state.board} held by {holder.user} since {_since(holder, as_mqsh)}, timeout {timeout}{keyed}"


def info_lines(state: BoardState) -> List[str]:
    """mq.sh's line, then what mq knows more: grant, odd lock files, waiters in order."""
    holder = state.holder
    lines = [info_line(state)]
    now = time.time()
    if holder is not None:
        if holder.kind != "file":
            lines.append(f"  (a {holder.kind} sits at the lock path: treated as held, never followed)")
        elif holder.timeout is None:
            lines.append("  (lock file content is not a timeout: treated as held)")
        held = f"held {duration(now - holder.since_ns / 1e9)}"
        if holder.grant is not None:
            lines.append(f"  grant #{holder.grant}" + (f" via pool {holder.pool}" if holder.pool else "") + f", {held}")
        else:
            lines.append(f"  {held}")
        successor = "the maintenance lock takes its place" if state.offline else "the next waiter takes it over"
        if holder.expired(time.time()):
            lines.append(f"  (its -T {holder.timeout} has passed: {successor})")
        if holder.session == "dead":
            lines.append(f"  (taken by an `mq run` whose session is gone: {successor})")
    if state.offline is not None:
        off = state.offline
        pending = "" if off.locked or holder is None else "; the maintenance lock takes its place at the release"
        lines.append(f"  offline: {safe_text(off.reason, 256)} (by {safe_text(off.user)} since "
                     f"{clock(off.since, now)}){pending}")
    for number, ticket in enumerate(state.waiters, 1):
        via = f" via {ticket.target}" if ticket.target != state.board else ""
        since = f"{clock(ticket.created, now)} ({duration(now - ticket.created)})"
        tool = " (mq.sh)" if ticket.tool == "mq.sh" else ""
        lines.append(f"  waiting {number}: {ticket.user}{tool} key '{safe_text(ticket.key, 256)}'{via} since {since}"
                     f"{priority_text(ticket.priority, ticket.effective)}")
    return lines


def priority_text(priority: int, effective: Optional[float]) -> str:
    """``, priority 5 (effective 7.25)`` under the priority policy; ``, priority 5 (FIFO)`` for a
    priority that orders nothing; "" for none."""
    if effective is None:
        return f", priority {priority} (FIFO)" if priority else ""
    shown = f"{effective:.2f}".rstrip("0").rstrip(".")
    return f", priority {priority}" + ("" if shown == str(priority) else f" (effective {shown})")


def mr_info_line(state: BoardState, as_mqsh: bool = False) -> str:
    """``NAME LOCKED USER DATE TIME ZONE [KEY]`` (``as_mqsh``: see ``info_line``; a missing key
    file leaves the line ending in a space, as ``mq.sh``'s)."""
    holder = state.holder
    if holder is None:
        return f"{state.board} FREE"
    key = _key(holder, as_mqsh)
    keyed = f" {key}" if key != NO_KEY else ""  # six fields when no key, as mq.sh
    return f"{state.board} LOCKED {holder.user} {_since(holder, as_mqsh)}{keyed}"


def holder_json(holder: Optional[Holder]) -> Optional[Dict[str, Any]]:
    if holder is None:
        return None
    return {"user": holder.user, "uid": holder.uid, "since": holder.since_ns / 1e9, "timeout": holder.timeout,
            "key": holder.key, "kind": holder.kind, "grant": holder.grant, "pool": holder.pool or None,
            "session": holder.session or None, "expired": holder.expired(time.time())}


def state_json(state: BoardState) -> Dict[str, Any]:
    """A board's state; ``unread`` (what could not be read, so is missing) only when there is such,
    ``offline`` only for a board out of service."""
    data = {"board": state.board, "state": "free" if state.holder is None else "locked",
            "holder": holder_json(state.holder),
            "waiters": [{"user": t.user, "key": t.key, "target": t.target, "since": t.created,
                         "priority": t.priority, "effective_priority": t.effective} for t in state.waiters]}
    off = state.offline
    if off is not None:  # only for a board out of service (mq offline), as "unread" is only there when it is
        data["offline"] = {"reason": off.reason, "user": off.user, "since": off.since, "maintenance_lock": off.locked}
    if state.unread:
        data["unread"] = state.unread
    return data


def unread_lines(states: Iterable[BoardState]) -> List[str]:
    """For stderr: each distinct notice of mq state that could not be read (and so is not shown), once."""
    return [f"mq: {notice}" for notice in dict.fromkeys(s.unread for s in states if s.unread)]


def envelope(kind: str, data: Any) -> str:
    return json.dumps({"mq": JSON_VERSION, "kind": kind, "data": data}, sort_keys=True)


def grant_json(grant: Grant) -> Dict[str, Any]:
    return {"board": grant.board, "target": grant.target, "key": grant.key, "timeout": grant.timeout,
            "grant": grant.grant, "waited": grant.waited,
            "took_over": {"user": grant.reclaimed_from, "timeout": grant.reclaimed_timeout or None}
            if grant.reclaimed_from else None}


def takeover_line(grant: Grant) -> str:
    """What the new holder of a lock taken over is told (``mq sem -wait``)."""
    user = safe_text(grant.reclaimed_from, 64)
    if grant.reclaimed_timeout:
        return f"took over {grant.board} from {user}, whose -T {grant.reclaimed_timeout} had passed"
    return f"took over {grant.board} from {user}, whose `mq run` had ended without releasing it"


def released_lines(released: Sequence[Released]) -> List[str]:
    return [f"Released lock for {r.board}" + (f" (forced; was held by {r.holder.user})" if r.forced else "")
            for r in released]


def _table(rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


SYSTEM_COLUMNS = ("name", "arch", "sel4_plat", "isa", "soc", "cpu", "cores", "ram", "max_clk", "num_files")


def system_row(inv: Inventory, name: str) -> List[str]:
    s = inv.systems[name]
    return [s.name, s.arch, s.sel4_plat, s.isa, s.soc, s.cpu, s.cores, s.ram, s.max_clk, str(s.files)]


# mq.sh's boxes (its scripts/system and scripts/pool), for ``as_mqsh``: each rule and header as it
# prints them, then the printf width of each cell (Arch's overflows its column there too).
_MQSH_SYSTEMS = ("+----------------+------+---------+-----------------+----------------+-------+-------+--------+",
                 "| Name           | Arch | ISA     | SoC             | CPU            | Cores | RAM   | MaxCLK |")
_MQSH_SYSTEM_WIDTHS = (14, 5, 7, 15, 14, 5, 5, 6)
_MQSH_POOLS = ("+------------+-------------------------------------------------------------------------+",
               "| Name       | Systems                                                                 |")
_MQSH_POOL_WIDTHS = (10, -71)  # negative: left-justified (%-71s)
_MQSH_FEATURES = ("+----------------+----------------+------------+",
                  "| Name           | PXE boot Linux | Custom DTB |")
_MQSH_FEATURE_WIDTHS = (14, 14, 10)


def _mqsh_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """``| %14s | %5s ... |`` as printf pads: to a width in bytes, never cut."""
    padded = []
    for cell, width in zip(cells, widths, strict=True):
        pad = " " * max(0, abs(width) - len(cell.encode("utf-8")))
        padded.append(cell + pad if width < 0 else pad + cell)
    return "".join(f"| {cell} " for cell in padded) + "|"


def _mqsh_box(head: Sequence[str], rows: Iterable[str]) -> List[str]:
    return [head[0], head[1], head[0], *rows, head[0]]


def systems_lines(inv: Inventory, as_mqsh: bool = False) -> List[str]:
    """Systems, then pools; ``as_mqsh``: mq.sh's two boxes (a pool's members each followed by a space)."""
    if as_mqsh:
        return (_mqsh_box(_MQSH_SYSTEMS, (_mqsh_row([s.name, s.arch, s.isa, s.soc, s.cpu, s.cores, s.ram, s.max_clk],
                                                    _MQSH_SYSTEM_WIDTHS) for s in inv.systems.values()))
                + _mqsh_box(_MQSH_POOLS, (_mqsh_row([p.name, "".join(f"{m} " for m in p.members)],
                                                    _MQSH_POOL_WIDTHS) for p in inv.pools.values())))
    lines = _table([list(SYSTEM_COLUMNS)] + [system_row(inv, n) for n in inv.systems])
    lines.append("")
    lines += _table([["pool", "members"]] + [[p.name, " ".join(p.members)] for p in inv.pools.values()])
    return lines


def systems_simple(inv: Inventory, as_mqsh: bool = False) -> List[str]:
    """The names, systems then pools; ``as_mqsh``: the systems only, as mq.sh lists them."""
    return list(inv.systems) + ([] if as_mqsh else list(inv.pools))


def system_tsv(inv: Inventory) -> List[str]:
    return ["\t".join(SYSTEM_COLUMNS)] + ["\t".join(system_row(inv, n)) for n in inv.systems]


def pool_tsv(inv: Inventory) -> List[str]:
    return ["\t".join([p.name, *p.members]) for p in inv.pools.values()]


def features_lines(inv: Inventory, as_mqsh: bool = False) -> List[str]:
    """Which systems PXE-boot Linux and take a DTB; ``as_mqsh``: mq.sh's box."""
    rows = [[s.name, "yes" if s.pxe_linux else "no", "yes" if s.dtb else "no"] for s in inv.systems.values()]
    if as_mqsh:
        return _mqsh_box(_MQSH_FEATURES, (_mqsh_row(row, _MQSH_FEATURE_WIDTHS) for row in rows))
    return ["\t".join(r) for r in [["name", "pxe_linux", "dtb"], *rows]]


def features_json(inv: Inventory) -> List[Dict[str, Any]]:
    return [{"name": s.name, "pxe_linux": s.pxe_linux, "dtb": s.dtb} for s in inv.systems.values()]


def _count(text: str) -> Union[int, str, None]:
    """``cores`` in JSON: a number when it is one, else the text as given (``4(1)``), null when not given."""
    return int(text) if text.isdigit() else (text or None)


def inventory_json(inv: Inventory) -> Dict[str, Any]:
    """Typed, unlike the tables: counts are numbers (``cores`` null when not given; the text when
    it is not a number, as ``mq.sh`` labs write ``4(1)``), flags booleans."""
    systems = []
    for s in inv.systems.values():
        systems.append({"name": s.name, "arch": s.arch, "sel4_plat": s.sel4_plat, "isa": s.isa, "soc": s.soc,
                        "cpu": s.cpu, "cores": _count(s.cores), "ram": s.ram, "max_clk": s.max_clk,
                        "num_files": s.files, "pxe_linux": s.pxe_linux, "dtb": s.dtb,
                        "pools": list(inv.pools_of(s.name))})
    return {"systems": systems, "pools": [{"name": p.name, "members": list(p.members)} for p in inv.pools.values()]}


def write_lines(lines: Iterable[str]) -> None:
    for line in lines:
        out(line)
