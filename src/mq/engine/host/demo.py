"""A demo lab: an inventory of five simulated boards, usable without hardware, and a plausible
history for it (``traffic``: ``mq demo traffic``), so status ETAs, history and statistics show
something real on the first day."""

from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Tuple

__all__ = ["DEMO_INVENTORY", "DEMO_POOLS", "traffic"]

DEMO_POOLS: Dict[str, Tuple[str, ...]] = {"odroidc4_pool": ("odroidc4_1", "odroidc4_2"),
                                          "arm_pool": ("odroidc4_1", "odroidc4_2", "sabre", "tx2")}
USERS = ("alice", "bob", "carol")
HOLD_MEDIAN = {"ci": 9 * 60.0, "person": 35 * 60.0}  # seconds: CI runs are short, people hold longer


def traffic(days: int, now: float, seed: int = 0) -> List[Dict[str, Any]]:
    """``days`` of generated use of the demo lab up to ``now``, as audit records (oldest first,
    each marked ``generated``, grants numbered from 1):
    CI jobs through the day and night (more in working hours), people in working hours; each a
    grant and its release, a board never held twice at once. Holds are lognormal around
    ``HOLD_MEDIAN``; some waited for their board."""
    rng = random.Random(seed)
    boards = ("odroidc4_1", "odroidc4_2", "sabre", "tx2", "pc99")
    free_at = {board: now - days * 86400.0 for board in boards}
    records: List[Dict[str, Any]] = []
    grant, job = 0, 1000
    clock = now - days * 86400.0
    while True:
        hour = (clock % 86400) / 3600
        busy = 7 <= hour < 19
        clock += rng.expovariate(1 / (300.0 if busy else 1500.0))  # the next arrival
        if clock >= now - 60:
            break
        person = busy and rng.random() < 0.35
        user = rng.choice(USERS) if person else "ci"
        job += 1
        key = f"{user}-{rng.randrange(100, 999)}" if person else f"ci-{job}"
        target = rng.choice(("odroidc4_pool", "odroidc4_pool", "arm_pool", "sabre", "tx2", "pc99"))
        members = DEMO_POOLS.get(target, (target,))
        board = min(members, key=lambda b: free_at[b])
        start = max(clock, free_at[board])
        held = min(6 * 3600.0, rng.lognormvariate(math.log(HOLD_MEDIAN["person" if person else "ci"]), 0.6))
        if start + held >= now:
            continue  # (it would still be held: the lab is left free)
        grant += 1
        pool = target if target != board else ""
        records.append({"time": round(start, 3), "event": "grant", "user": user, "board": board, "pool": pool,
                        "key": key, "grant": grant, "timeout": 0, "waited": round(start - clock, 3),
                        "generated": True})
        records.append({"time": round(start + held, 3), "event": "release", "user": user, "board": board,
                        "key": key, "holder": user, "holder_key": key, "held": round(held, 3), "grant": grant,
                        "pool": pool, "outcome": "released", "generated": True})
        free_at[board] = start + held
    records.sort(key=lambda r: (r["time"], r["event"] != "release"))
    return records

DEMO_INVENTORY: str = """\
# Demo lab inventory: five simulated boards and two pools.
# Each board's `boot` runs mq's board simulator, which follows the image file
# (see examples/*.img): `mq run -s odroidc4_pool -f examples/sel4test-pass.img -c "All is well"`.
# The odroidc4 boards are in both pools.

[systems.odroidc4_1]
arch = "arm"
isa = "aarch64"
soc = "amlogic-s905x3"
cpu = "cortex-a55"
cores = 4
ram = "4GB"
max_clk = "2.0GHz"
sel4_plat = "odroidc4"
boot = "{python} -m mq.engine.host.simboard {system} {files}"
power_off = "{python} -m mq.engine.host.simboard --power-off {system}"

[systems.odroidc4_2]
arch = "arm"
isa = "aarch64"
soc = "amlogic-s905x3"
cpu = "cortex-a55"
cores = 4
ram = "4GB"
max_clk = "2.0GHz"
sel4_plat = "odroidc4"
boot = "{python} -m mq.engine.host.simboard {system} {files}"
power_off = "{python} -m mq.engine.host.simboard --power-off {system}"

[systems.sabre]
arch = "arm"
isa = "armv7a"
soc = "imx6"
cpu = "cortex-a9"
cores = 4
ram = "1GB"
max_clk = "1.0GHz"
sel4_plat = "imx6"
boot = "{python} -m mq.engine.host.simboard {system} {files}"
power_off = "{python} -m mq.engine.host.simboard --power-off {system}"
pxe_linux = false

[systems.tx2]
arch = "arm"
isa = "aarch64"
soc = "tegra186"
cpu = "cortex-a57+denver2"
cores = 6
ram = "8GB"
max_clk = "2.0GHz"
sel4_plat = "tx2"
boot = "{python} -m mq.engine.host.simboard {system} {files}"
power_off = "{python} -m mq.engine.host.simboard --power-off {system}"
dtb = true
pxe_linux = true

[systems.pc99]
arch = "x86"
isa = "x86_64"
soc = "pc99"
cpu = "intel-i7"
cores = 4
ram = "16GB"
max_clk = "3.4GHz"
sel4_plat = "pc99"
boot = "{python} -m mq.engine.host.simboard {system} {files}"
power_off = "{python} -m mq.engine.host.simboard --power-off {system}"
files = 2
pxe_linux = true

[pools.odroidc4_pool]
match = { soc = "amlogic-s905x3" }

[pools.arm_pool]
match = { arch = "arm" }
"""
