"""The console scripts' entry point: signals are handled from the first moment.

Loading the CLI takes a tenth of a second; Ctrl+C (or TERM, HUP) in that time
would otherwise print an import traceback. Nothing is held or queued yet, so
the process just says so and ends; ``main`` installs the real handling.
"""

import os
import signal
from types import FrameType
from typing import Optional


def _early_exit(signum: int, _frame: Optional[FrameType]) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"mq: interrupted by {name}; nothing left held or queued\n".encode())
    os._exit(128 + signum)


# On import: this module is imported only by the entry points, first thing.
for _signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signum, _early_exit)


def run() -> None:
    from .main import run as main_run

    main_run()
