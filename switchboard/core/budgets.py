"""How long Switchboard's calls to the broker may take: the budgets every module shares.

Two kinds, named once so that a reader, a publisher and an admin helper do not each carry
their own copy of the same number:

- a request a running process makes between its real work (a metadata lookup, a watermark or
  offsets query): short, since the caller keeps what it knew and tries again on its next round;
- an admin operation someone waits on (``switchboard status``, ``topics ensure``, waiting
  for a new topic's leaders): long enough for a busy cluster.

Budgets that belong to one module's own protocol (a tail's assignment, the runtime's revoke
handling) stay named in that module.
"""

from __future__ import annotations

from typing import Final

#: One broker request a running process makes on the side of its work (metadata, watermarks,
#: offsets for times); a caller that cannot get an answer keeps what it knew.
BROKER_REQUEST_TIMEOUT_S: Final = 10.0
#: Default budget of one admin operation (a list, a create, waiting for leaders) and of the
#: bounded topic scans an operator's command makes.
ADMIN_TIMEOUT_S: Final = 30.0
#: Pause between two tries while a new topic's leadership settles or the topic appears.
SETTLE_RETRY_PAUSE_S: Final = 0.2
#: Pause between two metadata checks while waiting for partition leaders.
LEADER_POLL_INTERVAL_S: Final = 0.1
