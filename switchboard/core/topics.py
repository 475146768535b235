"""Topic and group names and roles: every topic and consumer group the pipeline uses is named
here, and only here.

Names join their parts with dots under the prefix (``switchboard.tasks.backend``,
``switchboard.worker.backend``); a role, the stable handle tools and scripts use for a topic,
joins a kind and its instance with a colon (``tasks:backend``, ``retry:10s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import overload

from switchboard.core.settings import SPECIALISTS

#: Delay tiers of the non-blocking retry topics, in seconds (a record waits in the first tier
#: whose delay is >= the delay its retry decision asks for).
RETRY_TIERS_S: tuple[int, ...] = (1, 10, 60, 600)

#: The status topic keeps the latest report per process (compaction) and drops a key nobody
#: has written for an hour (a process that died without its tombstone); tombstones go after a
#: minute. Small segments, so compaction and deletion get to run on a topic this small.
STATUS_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact,delete",
    "retention.ms": str(3_600_000),
    "segment.ms": str(600_000),
    "delete.retention.ms": str(60_000),
    "min.cleanable.dirty.ratio": "0.1",
}


class TopicRole(StrEnum):
    """The kinds of topic the pipeline uses (``topics list --json`` prints them)."""

    REQUESTS = "requests"
    """Requests from upstream services, keyed by request id."""
    RESPONSES = "responses"
    """The one terminal response per request, keyed by request id: also the answered ledger."""
    TASKS = "tasks"
    """Routed work, one topic per specialist (role ``tasks:<specialist>``)."""
    BATCH_TASKS = "batch-tasks"
    """Routed ``priority=BATCH`` work (review jobs), one topic per specialist (role
    ``batch-tasks:<specialist>``), read by the same worker group with a smaller share of its
    in-flight cap, so a burst of batch work never queues ahead of interactive requests."""
    RETRY = "retry"
    """Non-blocking retries, one topic per delay tier (role ``retry:<N>s``)."""
    DLQ = "dlq"
    """Typed dead letters."""
    PARKING_LOT = "parking-lot"
    """Replayed records that failed again, so a replay never loops."""
    DLQ_REPLAYS = "dlq-replays"
    """Compacted ledger of dead letters already replayed, keyed by DLQ pointer."""
    DLQ_ACKS = "dlq-acks"
    """Compacted ledger of dead letters an operator acknowledged (``dlq purge``)."""
    STATUS = "status"
    """Compacted: each pipeline process's latest status report, keyed by process id."""
    AUDIT = "audit"
    """Who replayed or purged which dead letters, when and with what filter (the console)."""
    REVIEW_BATCHES = "review-batches"
    """Compacted: each Message Batch of a ``--batch-api`` review job (id, items, state), keyed
    by batch id, so a restarted job resumes polling instead of resubmitting."""


class GroupRole(StrEnum):
    """The kinds of consumer group: each runs the one consumer runtime."""

    ROUTER = "router"
    """Validates and routes requests to a specialist's task topic."""
    WORKER = "worker"
    """One group per specialist (``worker.<specialist>``), answering its tasks."""
    RELAY = "relay"
    """Holds retry records until due and sends them back to their origin topic."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its role (stable, for tools and scripts), name and configuration."""

    role: str
    name: str
    config: dict[str, str]


class _Named:
    """A topic of one pipeline: ``<prefix>.<name>``, read as an attribute of ``Topics``."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, topics: None, owner: type) -> _Named: ...
    @overload
    def __get__(self, topics: Topics, owner: type) -> str: ...
    def __get__(self, topics: Topics | None, owner: type) -> _Named | str:
        return self if topics is None else f"{topics.prefix}.{self.name}"


@dataclass(frozen=True)
class Topics:
    """The names of every topic under one prefix (``switchboard`` by default)."""

    prefix: str = "switchboard"

    requests = _Named("requests")
    responses = _Named("responses")
    dlq = _Named("dlq")
    #: Where replayed records that fail again go, so a replay never loops.
    parking_lot = _Named("dlq.parking-lot")
    #: The ledger of replayed dead letters (compacted, keyed by DLQ pointer).
    dlq_replays = _Named("dlq.replays")
    #: The ledger of acknowledged dead letters (compacted, keyed by DLQ pointer).
    dlq_acks = _Named("dlq.acks")
    #: Every process's latest status report (compacted, keyed by process id).
    status = _Named("status")
    #: The console's audit trail of replays and purges (one JSON event a record).
    audit = _Named("audit")
    #: The ledger of ``--batch-api`` review jobs' Message Batches (compacted, by batch id).
    review_batches = _Named("review.batches")

    def audit_spec(self, retention_ms: int) -> TopicSpec:
        """The audit trail: kept as long as the dead letters it speaks of. Created by the
        console when missing, not by ``topics ensure``."""
        return TopicSpec(TopicRole.AUDIT, self.audit, {"retention.ms": str(retention_ms)})

    def review_batches_spec(self, retention_ms: int) -> TopicSpec:
        """The batch ledger: compacted (latest state per batch), deleted after ``retention_ms``
        (the API keeps results 29 days). Created by the batch job, not by ``topics ensure``."""
        config = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
        return TopicSpec(TopicRole.REVIEW_BATCHES, self.review_batches, config)

    def tasks(self, specialist: str) -> str:
        return f"{self.prefix}.tasks.{specialist}"

    def batch_tasks(self, specialist: str) -> str:
        """The specialist's batch-priority task topic (review jobs): a topic of its own, so
        the worker can give it a smaller share and pause it, while interactive tasks flow."""
        return f"{self.prefix}.tasks.{specialist}.batch"

    def task_topics(self, specialist: str) -> list[str]:
        """Every task topic the specialist's workers read: interactive first, then batch."""
        return [self.tasks(specialist), self.batch_tasks(specialist)]

    def all_task_topics(self) -> list[str]:
        """Every specialist's task topics: where retries and replays may send work back."""
        return [t for s in SPECIALISTS for t in self.task_topics(s)]

    def retry(self, tier_s: int) -> str:
        return f"{self.prefix}.retry.{tier_s}s"

    def tier_for_delay(self, delay_s: float) -> int:
        """The shortest retry tier that waits at least ``delay_s`` (the longest if none does)."""
        for tier in RETRY_TIERS_S:
            if tier >= delay_s:
                return tier
        return RETRY_TIERS_S[-1]

    def group(self, role: GroupRole, instance: str | None = None) -> str:
        """The consumer group of ``role`` (a worker group names its specialist)."""
        if (role is GroupRole.WORKER) != (instance is not None):
            raise ValueError(f"group {role}: a worker group names its specialist, no other does")
        return f"{self.prefix}.{role}" + (f".{instance}" if instance else "")

    def specs(self, *, retention_ms: int, dlq_retention_ms: int) -> list[TopicSpec]:
        """Every topic the pipeline uses, with its role and configuration."""
        plain = {"retention.ms": str(retention_ms)}
        long = {"retention.ms": str(dlq_retention_ms)}
        specs = [
            TopicSpec(TopicRole.REQUESTS, self.requests, plain),
            TopicSpec(TopicRole.RESPONSES, self.responses, plain),
            TopicSpec(TopicRole.DLQ, self.dlq, long),
            TopicSpec(TopicRole.PARKING_LOT, self.parking_lot, long),
        ]
        specs += [TopicSpec(f"{TopicRole.TASKS}:{s}", self.tasks(s), plain) for s in SPECIALISTS]
        specs += [
            TopicSpec(f"{TopicRole.BATCH_TASKS}:{s}", self.batch_tasks(s), plain)
            for s in SPECIALISTS
        ]
        specs += [TopicSpec(f"{TopicRole.RETRY}:{t}s", self.retry(t), plain) for t in RETRY_TIERS_S]
        specs.append(TopicSpec(TopicRole.STATUS, self.status, dict(STATUS_TOPIC_CONFIG)))
        return specs

    def ledger_specs(self, retention_ms: int) -> list[TopicSpec]:
        """Both DLQ ledgers: compacted (latest entry per pointer), and deleted after
        ``retention_ms`` like the dead letters they point at. Created by the commands that
        write them, not by ``topics ensure``."""
        config = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
        return [
            TopicSpec(TopicRole.DLQ_REPLAYS, self.dlq_replays, config),
            TopicSpec(TopicRole.DLQ_ACKS, self.dlq_acks, config),
        ]
