"""A simulated board for the built-in lab: boots, then follows its image file.

``python3 -m mq.engine.host.simboard BOARD IMAGE...`` prints a plausible boot log
on stdout (its "serial console"), then runs the first image's script:

    # comments and blank lines are ignored
    print Booting all finished, dropped to user space
    sleep 0.5              # seconds
    wait /tmp/go           # until that file exists (a script decides when the test ends)
    repeat 100 Test line   # print a line N times (console throughput)
    repeat 20 Test {n}     # ... with {n} counting 0001, 0002, ...
    echo                   # copy the console's stdin to stdout until EOF (an interactive board)
    pass | fail | hang     # print a verdict line and exit 0 / exit 1 / hang forever

Any other line is printed as is. An image without a script (a real binary)
boots to a prompt and hangs, as a board whose test never reports would.
``--power-off BOARD`` is the demo boards' ``power_off``: it succeeds at once.
"""

from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

BOOT_LOG = (
    "U-Boot SPL 2024.01 (mq simulated board {board})",
    "DRAM:  4 GiB",
    "Loading image '{image}' ({size} bytes) via TFTP from the lab host",
    "## Starting application at 0x20000000 ...",
    "ELF-loader started on CPU: ARM Ltd. Cortex-A55 r2p0",
    "Bootstrapping kernel",
    "Booting all finished, dropped to user space",
)


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def script_lines(path: str) -> Optional[List[str]]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except OSError as exc:
        out(f"simboard: cannot read image {path}: {exc.strerror}")
        return None
    if b"\0" in data:
        return None
    return data.decode("utf-8", "replace").splitlines()


def run_script(lines: List[str]) -> int:
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "print":
            out(rest)
        elif word == "sleep":
            time.sleep(float(rest or 0))
        elif word == "wait":
            while not os.path.exists(rest):
                time.sleep(0.02)
        elif word == "repeat":
            count, _, text = rest.partition(" ")
            if "{n}" in text:
                block = "".join(text.replace("{n}", f"{i:04d}") + "\n" for i in range(1, int(count) + 1))
            else:
                block = (text + "\n") * int(count)
            sys.stdout.write(block)
            sys.stdout.flush()
        elif word == "echo":
            for data in iter(lambda: os.read(0, 4096), b""):
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
        elif word == "pass":
            out("All is well in the universe")
            return 0
        elif word == "fail":
            out("Test failed: simulated failure")
            return 1
        elif word == "hang":
            while True:
                time.sleep(3600)
        else:
            out(line)
    return 0


def power_off(board: str) -> int:
    """``simboard --power-off BOARD``: the simulated outlet switched off (nothing to say)."""
    return 0 if board else 64


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--power-off":
        return power_off(args[1])
    if not args or args[0].startswith("-"):
        sys.stderr.write("usage: simboard BOARD [IMAGE...] | simboard --power-off BOARD\n")
        return 64
    board, images = args[0], args[1:]
    image = images[0] if images else "(none)"
    size = os.path.getsize(image) if images and os.path.exists(image) else 0
    for line in BOOT_LOG:
        out(line.format(board=board, image=os.path.basename(image), size=size))
        time.sleep(0.02)
    lines = script_lines(image) if images else None
    if lines is None:
        out(f"{board} login: ")
        while True:
            time.sleep(3600)
    return run_script(lines)


if __name__ == "__main__":
    sys.exit(main())
