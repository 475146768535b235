"""DLQ replay: read dead letters, filter and group them, send them back, acknowledge them.

The engine behind ``switchboard dlq`` (docs/dlq.md is the operator's guide), one module per
seam; import from the module that holds a name:

- ``parsing``: times (``parse_instant``, ``parse_duration``), dead letter ids
  (``parse_record_id``), pointers (``topic/partition/offset``) and ``iso``.
- ``view``: ``DeadLetterView``, one record of a dead-letter topic, decoded when it is a
  DeadLetter and kept as ``undecodable`` when it is not; ``ERROR_CLASSES``.
- ``selection`` (pure): ``ReplayFilter`` picks records, ``select`` hides acknowledged ones,
  ``plan_replay`` drops what must not be sent again, ``group_counts`` sums up.
- ``store``: ``DeadLetterStore``, bounded scans of a dead-letter topic (the DLQ, or the parking
  lot), its ledgers and the responses topic, with no consumer group: looking changes nothing.
- ``replayer``: ``Replayer`` sends each record to its origin topic with its original key, value
  and headers plus ``sb-replay-id`` / ``sb-replay-of``, then writes it to the replays ledger.
- ``ledgers``: acknowledging (``dlq purge``) and the ledger state of listed records.

A replayed record that fails for good again is parked (``Topics.parking_lot``) by the workers,
never dead-lettered again, so a replay cannot loop.
"""
