"""What turns results into lines, tables, charts and pages: ``mq.sh``-compatible lines and
JSON (``render``), status, history and statistics views, the waiting line.

May import: ``mq.engine.core`` (the result types) and the standard library, ``rich``
where it draws; never the client, the transports or the CLI.
"""
