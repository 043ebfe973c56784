"""The host side a client talks to: the JSON-lines agent (over SSH, or in-process for a
local lab), the ``run`` job (boot, console, power off, lock watch), simulated boards
for the demo lab, ``mq check --host``, and the bare job the PostgreSQL queue runs.

May import: ``mq.engine.lockdir``, ``mq.engine.core`` and the standard library.
"""
