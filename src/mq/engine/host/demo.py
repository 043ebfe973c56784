"""A demo lab: an inventory of five simulated boards, usable without hardware."""

from __future__ import annotations

__all__ = ["DEMO_INVENTORY"]

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
files = 2
pxe_linux = true

[pools.odroidc4_pool]
match = { soc = "amlogic-s905x3" }

[pools.arm_pool]
match = { arch = "arm" }
"""
