"""What the CLI calls: the configuration, opening a lab (``service``), ``run`` on the
client side, ``mq check``, importing an ``mq.sh`` lab, the inventory cache, the client's
errors, the console and keyboard of an interactive job.

May import: ``mq.transport``, ``mq.pgengine`` (lazily), ``mq.engine`` and ``mq.views``;
never ``mq.cli`` (typer).
"""
