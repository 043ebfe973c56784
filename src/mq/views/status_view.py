"""``mq status`` as a table and as JSON (kind ``status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from mq.engine.core.errors import safe_text

from .render import clock, duration, priority_text

if TYPE_CHECKING:
    from mq.engine.core.results import BoardState, LabStatus


def state_word(state: BoardState) -> str:
    return "offline" if state.offline is not None else "free" if state.holder is None else "held"


def eta_text(eta: Optional[float], now: float) -> str:
    """``14:32 (in 18m)``, ``now``, or ``unknown``."""
    if eta is None:
        return "unknown"
    if eta <= now + 1:
        return "now"
    return f"{clock(eta, now)} (in {duration(eta - now)})"


def board_json(state: BoardState, status: LabStatus) -> Dict[str, Any]:
    holder = state.holder
    waiters: List[Dict[str, Any]] = []
    for position, ticket in enumerate(state.waiters, 1):
        estimate = status.estimates.get(ticket.name, {})
        basis = estimate.get("basis") or "unknown"
        if estimate.get("board") not in (None, state.board):
            basis = f"expected to get {estimate['board']} instead: {basis}"
        waiters.append({"position": position, "user": ticket.user, "key": ticket.key, "since": ticket.created,
                        "target": ticket.target, "priority": ticket.priority, "effective_priority": ticket.effective,
                        "eta": estimate.get("eta"), "eta_basis": basis, "tool": ticket.tool,
                        "liveness": "alive" if ticket.lost_since is None else "reconnecting",
                        "lost_since": ticket.lost_since})
    return {"board": state.board, "state": state_word(state),
            "holder": None if holder is None else {"user": holder.user, "key": holder.key,
                                                   "since": holder.since_ns / 1e9, "timeout": holder.timeout or None,
                                                   "grant": holder.grant},
            "offline_reason": None if state.offline is None else state.offline.reason,
            "waiters": waiters}


def status_json(status: LabStatus) -> List[Dict[str, Any]]:
    return [board_json(s, status) for s in status.boards]


def _row(state: BoardState, now: float) -> List[str]:
    holder = state.holder
    if holder is None:
        return [state.board, state_word(state), "", "", "", "", ""]
    since = holder.since_ns / 1e9
    return [state.board, state_word(state), safe_text(holder.user), safe_text(holder.shown_key, 40),
            f"{clock(since, now)} ({duration(now - since)})", str(holder.timeout or "-"),
            "" if holder.grant is None else f"#{holder.grant}"]


def status_lines(status: LabStatus) -> List[str]:
    """A table of boards; under each, its offline reason and its waiters in queue order."""
    now = status.now
    header = ["BOARD", "STATE", "HOLDER", "KEY", "SINCE", "-T", "GRANT"]
    rows = [header] + [_row(s, now) for s in status.boards]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    for state, row in zip(status.boards, rows[1:], strict=True):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if state.offline is not None:
            off = state.offline
            lines.append(f"    offline: {safe_text(off.reason, 200)} (by {safe_text(off.user)} since "
                         f"{clock(off.since, now)})")
        for waiter in board_json(state, status)["waiters"]:
            via = f" via {waiter['target']}" if waiter["target"] != state.board else ""
            tool = " (mq.sh)" if waiter["tool"] == "mq.sh" else ""
            lines.append(f"    {waiter['position']}. {safe_text(waiter['user'])}{tool} key "
                         f"'{safe_text(waiter['key'], 40)}'{via}, waiting since {clock(waiter['since'], now)} "
                         f"({duration(now - waiter['since'])})"
                         f"{priority_text(waiter['priority'], waiter['effective_priority'])}"
                         f"{_reconnecting(waiter, now)}; "
                         f"ETA {eta_text(waiter['eta'], now)}: "
                         f"{waiter['eta_basis']}")
    return lines


def _reconnecting(waiter: Dict[str, Any], now: float) -> str:
    since = waiter.get("lost_since")
    return "" if since is None else f"; reconnecting since {clock(since, now)} (the database restarted)"


def mine_json(status: LabStatus, user: str) -> Dict[str, Any]:
    """``mq status --mine`` (``--user NAME``): the boards ``user`` holds and the waits it is in,
    across the lab (a wait for a pool once, at its best place)."""
    now = status.now
    holding: List[Dict[str, Any]] = []
    waiting: Dict[str, Dict[str, Any]] = {}
    for state in status.boards:
        board = board_json(state, status)
        holder = board["holder"]
        if holder is not None and holder["user"] == user and state.offline is None:
            left = None if not holder["timeout"] else round(holder["since"] + holder["timeout"] - now, 3)
            holding.append({"board": state.board, "key": holder["key"], "grant": holder["grant"],
                            "since": holder["since"], "held": round(now - holder["since"], 3),
                            "timeout": holder["timeout"], "timeout_left": left})
        for ticket, waiter in zip(state.waiters, board["waiters"], strict=True):
            if waiter["user"] != user:
                continue
            seen = waiting.get(ticket.name)
            if seen is None or waiter["position"] < seen["position"]:
                waiting[ticket.name] = {"target": waiter["target"], "key": waiter["key"], "board": state.board,
                                        "position": waiter["position"], "of": len(state.waiters),
                                        "since": waiter["since"], "eta": waiter["eta"],
                                        "eta_basis": waiter["eta_basis"]}
    return {"user": user, "holding": holding, "waiting": sorted(waiting.values(), key=lambda w: w["since"])}


def mine_lines(status: LabStatus, user: str) -> List[str]:
    mine, now = mine_json(status, user), status.now
    lines = [f"{safe_text(user)} holds " + (f"{len(mine['holding'])} board"
                                            f"{'' if len(mine['holding']) == 1 else 's'}:" if mine["holding"]
                                            else "no board")]
    for h in mine["holding"]:
        left = "" if h["timeout_left"] is None else (f", -T {h['timeout']} ({duration(h['timeout_left'])} left)"
                                                      if h["timeout_left"] > 0 else f", -T {h['timeout']} (expired)")
        grant = "" if h["grant"] is None else f" #{h['grant']}"
        lines.append(f"    {h['board']}{grant} key '{safe_text(h['key'] or '', 40)}', held {duration(h['held'])}"
                     f" (since {clock(h['since'], now)}){left}")
    lines.append(f"{safe_text(user)} waits " + (f"for {len(mine['waiting'])}:" if mine["waiting"] else "for nothing"))
    for w in mine["waiting"]:
        where = f" (on {w['board']})" if w["board"] != w["target"] else ""
        lines.append(f"    {safe_text(w['target'])} key '{safe_text(w['key'], 40)}': position {w['position']} of "
                     f"{w['of']}{where}, waiting {duration(now - w['since'])}; ETA {eta_text(w['eta'], now)}: "
                     f"{w['eta_basis']}")
    return lines


__all__ = ["board_json", "eta_text", "mine_json", "mine_lines", "state_word", "status_json", "status_lines"]
