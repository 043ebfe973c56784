"""The console scripts' entry point: signals are handled from the first moment.

``mq/__init__`` installed ``early_signals``' handlers already when the program is
called ``mq`` or ``mq.sh``; under another name (a link), they are installed here,
before anything else loads. ``main`` hands over to the real handling.
"""

from mq.engine.core import early_signals

early_signals.install()


def run() -> None:
    from .main import run as main_run

    main_run()
