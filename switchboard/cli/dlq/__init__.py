"""``switchboard dlq``: list, show, replay and purge dead letters. Names and JSON keys are stable.

``args`` builds the parser (``register``), ``commands`` runs each command, ``render`` prints
tables, panels and JSON. The engine is ``consumers.replay``; docs/dlq.md is the operator's guide.
"""

from switchboard.cli.dlq.args import register

__all__ = ["register"]
