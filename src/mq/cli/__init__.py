"""The command line: the only package that imports typer. One module per verb: parse,
call the client (``mq.client``), render (``mq.views``).

May import: everything below it (``mq.client``, ``mq.views``, ``mq.settings``, the
engine's result types); nothing imports it but ``mq.__main__``.
"""
