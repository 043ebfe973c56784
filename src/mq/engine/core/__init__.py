"""The types and rules every engine shares: the engine interface, results, errors and
exit codes, names, the agent's wire protocol and argument checks, the inventory and
its templates, queue policies, the projection of when waiters get boards, run outcomes
and the board-health rules.

May import: the standard library only (``tomli`` on an old Python). Imported by every
other wing of mq.
"""
