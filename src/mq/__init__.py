"""mq: a fair, fast machine queue for shared embedded test boards."""

__version__ = "0.1.0"
