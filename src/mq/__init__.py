"""mq: a fair, fast machine queue for shared embedded test boards."""

import sys as _sys

__version__ = "0.1.0"

_argv0 = (getattr(_sys, "argv", None) or [""])[0]
if _argv0 == "-m" or _argv0.rpartition("/")[2] in ("mq", "mq.sh"):
    # Perhaps run as the mq program (``mq``, ``mq.sh``, ``python -m mq``), not imported as
    # a library: from this first line, SIGINT/TERM/HUP are held off until the module that
    # handles them while mq loads is in (``engine.core.early_signals``, which decides precisely).
    import _signal  # type: ignore[import-not-found]  # loaded with the interpreter: no import time

    _mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP))
    try:
        from mq.engine.core.early_signals import install_if_program

        install_if_program()
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, _mask)  # a signal held off is taken now
    del _signal, _mask
del _sys, _argv0
