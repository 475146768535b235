"""Who may do what on the secure broker: one identity per role, and each role's ACLs.

Least privilege, from what each role's code actually does (``docs/security.md`` has the table):

- ``client``: write requests; read responses (its tail assigns partitions itself, no group).
- ``router``: read requests in its group; write tasks, responses, retries, the DLQ; read
  responses (the answered index).
- ``relay``: read the retry tiers in its group; write tasks and requests (a retried record goes
  back to its origin), responses and the DLQ (a record that fails for good).
- ``worker-<specialist>``: read its own task topics (interactive and batch) in its group; read responses (the answered
  index); write responses, retries, the DLQ and the parking lot.
- every pipeline process (router, relay, workers): write its status report, and use
  transactional ids with the prefix ``<prefix>.txn.`` (a reply and its ledger copy).
- ``admin`` (operators, ``topics ensure``, DLQ tools) and ``broker``: super users, no ACLs.

Every reader also needs ``Describe`` on its tail's throw-away groups (``switchboard-<name>-``
prefix, see ``reader_config``): librdkafka looks their coordinator up even though a tail never
commits.
"""

from __future__ import annotations

from typing import Final

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from switchboard.core.settings import SPECIALISTS
from switchboard.core.topics import RETRY_TIERS_S, GroupRole, Topics

ADMIN: Final = "admin"
BROKER: Final = "broker"
CLIENT: Final = "client"
ROUTER: Final = "router"
RELAY: Final = "relay"
#: The prefix of the throw-away group ids of tails and scans (``reader_config``).
READER_GROUP_PREFIX: Final = "switchboard-"

READ = AclOperation.READ
WRITE = AclOperation.WRITE
DESCRIBE = AclOperation.DESCRIBE
LITERAL = ResourcePatternType.LITERAL
PREFIXED = ResourcePatternType.PREFIXED


def worker(specialist: str) -> str:
    """The identity of one specialist's workers."""
    return f"worker-{specialist}"


def identities() -> list[str]:
    """Every identity the secure broker knows, super users first."""
    return [ADMIN, BROKER, CLIENT, ROUTER, RELAY, *(worker(s) for s in SPECIALISTS)]


def _topic(name: str, op: AclOperation, pattern: ResourcePatternType = LITERAL) -> tuple:
    return (ResourceType.TOPIC, name, pattern, op)


def _group(name: str, op: AclOperation = READ, pattern: ResourcePatternType = LITERAL) -> tuple:
    return (ResourceType.GROUP, name, pattern, op)


def transactional_ids(topics: Topics) -> tuple:
    """Write on the pipeline's transactional ids (``switchboard.core.atomic``: a reply and its
    ledger copy are one transaction), by the prefix every one of them has."""
    return (ResourceType.TRANSACTIONAL_ID, f"{topics.prefix}.txn.", PREFIXED, WRITE)


def grants(name: str, topics: Topics) -> list[tuple]:
    """``(resource type, name, pattern type, operation)`` for identity ``name``."""
    tasks = _topic(f"{topics.prefix}.tasks.", WRITE, PREFIXED)
    retries = [_topic(topics.retry(t), WRITE) for t in RETRY_TIERS_S]
    responses_rw = [_topic(topics.responses, READ), _topic(topics.responses, WRITE)]
    readers = [_group(READER_GROUP_PREFIX, DESCRIBE, PREFIXED)]
    # Every pipeline process publishes its status report (``switchboard status`` reads them).
    status = _topic(topics.status, WRITE)
    txn = transactional_ids(topics)
    if name == CLIENT:
        return [_topic(topics.requests, WRITE), _topic(topics.responses, READ), *readers]
    if name == ROUTER:
        return [
            _topic(topics.requests, READ),
            _group(topics.group(GroupRole.ROUTER)),
            tasks,
            *responses_rw,
            *retries,
            _topic(topics.dlq, WRITE),
            status,
            txn,
            *readers,
        ]
    if name == RELAY:
        return [
            *(_topic(topics.retry(t), READ) for t in RETRY_TIERS_S),
            _group(topics.group(GroupRole.RELAY)),
            tasks,
            _topic(topics.requests, WRITE),
            *responses_rw,
            _topic(topics.dlq, WRITE),
            status,
            txn,
            *readers,
        ]
    for specialist in SPECIALISTS:
        if name == worker(specialist):
            return [
                _topic(topics.tasks(specialist), READ),
                _topic(topics.batch_tasks(specialist), READ),  # priority=BATCH work
                _group(topics.group(GroupRole.WORKER, specialist)),
                *responses_rw,
                *retries,
                _topic(topics.dlq, WRITE),
                _topic(topics.parking_lot, WRITE),
                status,
                txn,
                *readers,
            ]
    return []  # admin and broker are super users


def role_acls(name: str, topics: Topics) -> list[AclBinding]:
    """The ACL bindings of identity ``name`` (principal ``User:<name>``, any host)."""
    return [
        AclBinding(rtype, rname, pattern, f"User:{name}", "*", op, AclPermissionType.ALLOW)
        for rtype, rname, pattern, op in grants(name, topics)
    ]
