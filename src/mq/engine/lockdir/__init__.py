"""The lock-directory engine (``semaphore.Engine``): locks as ``lockfile(1)`` files made with
O_CREAT|O_EXCL, one ticket file per waiter walked in a fair order, waiters woken by
inotify and doorbells, the audit log, counters, offline marks, health rows, ``run``
sessions, and the view of ``mq.sh``'s own waiters.

May import: ``mq.engine.core`` and the standard library.
"""
