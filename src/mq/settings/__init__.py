"""What every client-side part reads: the configuration (``config``), the queue database's
backend string (``backend_string``) and the client's errors with their exit codes.

May import: ``mq.engine.core`` (and ``mq.engine.lockdir.labpaths`` for the default lab
paths), ``mq.pgengine.libpq`` lazily (to parse a backend string as libpq does); never the
transports, the client or the CLI.
"""
