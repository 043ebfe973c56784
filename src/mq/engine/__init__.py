"""The engine: what runs on the lab host (and in-process for a local lab).

Standard library only, plus ``tomli`` on an old Python, both shipped to the host
in one zip (``mq.transport.bundle``): nothing here imports anything of mq's outside
``mq.engine``. Three wings, each importing only those below it:

* ``host``: the agent a client talks to, and the ``run`` jobs it runs (boot, console,
  simulated boards, host checks);
* ``lockdir``: the lock-directory engine (lock files, tickets, waiters, audit log,
  maintenance, health rows), compatible with ``mq.sh`` and ``lockfile(1)``;
* ``core``: the types and rules every engine shares (the interface, results, errors,
  names, the wire protocol, the inventory, policies, the projection); the
  PostgreSQL engine (``mq.pgengine``) builds on these too.
"""
