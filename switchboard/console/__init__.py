"""``switchboard console``: the operator console, a small web application over the same data as
``switchboard status`` and ``switchboard dlq`` (docs/console.md).

A composition root like the CLI: it wires the consumers' own readers (``StatusReader``,
``DeadLetterStore``, ``plan_replay``, ``Replayer``, ``acknowledge``) behind server-rendered
pages; it holds no DLQ logic of its own.

- ``auth``: users and roles from settings, HTTP basic auth on everything, CSRF tokens.
- ``cache``: background readers that keep the DLQ, its ledgers, the audit trail and the status
  in memory, so pages are served from memory.
- ``follow``: a request's path through the topics (bounded scans).
- ``reviews``: the review jobs under ``review_dir``.
- ``app``: the Starlette application; ``command``: ``switchboard console``.
"""
