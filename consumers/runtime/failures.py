"""The failure strategy: what happens to a record whose handler raised, written once.

A handler returns its outputs or raises. The runtime (the real one and the in-memory one) hands
every exception to ``FailureStrategy.resolve``, which classifies it, asks the pure retry policy
and writes what the decision calls for, as karafka's DLQ strategy does:

| raised                                    | decision                 | written                      |
| ----------------------------------------- | ------------------------ | ---------------------------- |
| ``RecordFailed`` (a decoded request)      | its own, or ``decide``   | see ``write``                |
| anything else: a decode error, a bug, an  | ``Dead``: there is no    | dead letter, ``failed``      |
| output that can never be delivered        | request to retry         | response when an id is known |

``write`` per decision: ``Retry``: the request to its delay tier topic with a due time and its
attempt history; ``Dead``: the dead letter and a ``failed`` response with its pointer;
``Expire``: an ``expired`` response; ``Drop``: nothing; ``Halt``: nothing is lost and nothing is
dead-lettered: a handler with a halt reaction of its own (the worker pauses its breaker and
calls again) never raises one; for any other the request waits out the pause in a retry tier.

Handlers with reactions of their own (the worker's breaker, limiter and in-place retry after a
halt, its answered-index claim) call ``decide`` themselves and raise the decision they acted on,
so the policy is asked once and the outputs are still written here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, assert_never

from consumers.outcomes import Attempt, Outcomes, history_header, now_ms, replay_headers
from consumers.runtime.message import Record
from switchboard.core import headers as h
from switchboard.core import metrics
from switchboard.core.aio_producer import Outbound
from switchboard.core.classify import Failure, classify
from switchboard.core.errors import SwitchboardError
from switchboard.core.policy import Dead, Decision, Drop, Expire, Halt, Retry, RetryPolicy
from switchboard.core.serde import REQUEST
from switchboard.core.status import ResponseStatus

log = logging.getLogger(__name__)


class RecordFailed(Exception):
    """Raised by a handler when handling a decoded request failed: carries what the strategy
    needs to retry, dead-letter or expire it (``decision`` when the handler already asked
    ``FailureStrategy.decide`` and acted on it; else the strategy asks)."""

    def __init__(
        self,
        failure: Failure | None,
        *,
        request: Mapping[str, Any] | None = None,
        attempt: int = 1,
        history: Sequence[Attempt] = (),
        specialist: str | None = None,
        deadline_ms: int | None = None,
        decision: Decision | None = None,
    ) -> None:
        if failure is None and not isinstance(decision, Expire):
            raise ValueError("only an Expire decision may come without a failure")
        if request is None and isinstance(decision, Retry | Expire | Halt):
            raise ValueError(f"{type(decision).__name__} needs the decoded request")
        super().__init__(failure.message if failure is not None else "expired")
        self.failure = failure
        self.request = request
        self.attempt = attempt
        #: The attempts that failed before this one (this one is added when written).
        self.history = history
        self.specialist = specialist
        self.deadline_ms = deadline_ms
        self.decision = decision


class FailurePath(Protocol):
    """What the runtime needs of a failure strategy (tests may give it a stricter one)."""

    def expected(self, exc: BaseException) -> bool: ...
    async def resolve(self, msg: Record, exc: BaseException) -> Sequence[Outbound]: ...


@dataclass(frozen=True)
class FailureStrategy:
    """Classify, decide, write: the one failure path of a consumer group's records."""

    outcomes: Outcomes
    policy: RetryPolicy
    clock_ms: Callable[[], int] = now_ms
    _metrics: _FailureMetrics = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_metrics", _FailureMetrics(str(self.outcomes.stage)))

    def decide(self, failure: Failure, *, attempt: int, deadline_ms: int | None) -> Decision:
        """The policy's decision after attempt ``attempt`` (1-based) failed with ``failure``."""
        return self.policy.decide(failure, attempt, self.clock_ms(), deadline_ms)

    def expected(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a failure a handler raised on purpose (typed), not a bug."""
        return isinstance(exc, RecordFailed | SwitchboardError)

    async def resolve(self, msg: Record, exc: BaseException) -> list[Outbound]:
        """The records to deliver for ``msg`` instead of its handler's outputs."""
        if isinstance(exc, RecordFailed):
            return await self.write(msg, exc)
        # A decode error, a bug, or an output that can never be written: there is no request to
        # retry, so the record is never lost but dead-lettered with the reason.
        if isinstance(exc, SwitchboardError):
            log.info("%s: %s dead-lettered: %s", self.outcomes.consumer_group, _where(msg), exc)
        else:
            group = self.outcomes.consumer_group
            log.error("%s: handler failed on %s", group, _where(msg), exc_info=exc)
        failure = classify(exc)
        self._metrics.decided("dead")
        outputs = await self.outcomes.fail(msg, failure)
        self._metrics.dead_letter(failure)
        return outputs

    async def write(self, msg: Record, failed: RecordFailed) -> list[Outbound]:
        """What ``failed``'s decision writes (the table in the module docstring)."""
        failure = failed.failure
        decision = failed.decision
        if decision is None:
            assert failure is not None  # RecordFailed's constructor guarantees it
            decision = self.decide(failure, attempt=failed.attempt, deadline_ms=failed.deadline_ms)
        self._metrics.decided(type(decision).__name__.lower())
        match decision:
            case Retry():
                assert failure is not None and failed.request is not None
                return [self._retry_record(msg, failed, failure, decision, counted=True)]
            case Dead():
                assert failure is not None
                outputs = await self.outcomes.fail(
                    msg,
                    failure,
                    request=failed.request,
                    history=failed.history,
                    specialist=failed.specialist,
                    attempts=failed.attempt,
                )
                self._metrics.dead_letter(failure)
                return outputs
            case Expire():
                assert failed.request is not None
                return self.outcomes.recorded(
                    self.outcomes.expired(
                        failed.request,
                        failed.attempt,
                        specialist=failed.specialist,
                        failure=failure,
                    )
                )
            case Drop():
                group = self.outcomes.consumer_group
                log.info("%s: %s dropped: %s", group, _where(msg), decision.reason)
                return []
            case Halt():
                # No halt reaction of the handler's own: wait out the pause in a retry tier (in
                # Kafka, not the DLQ); the halted attempt does not count against the request.
                assert failure is not None and failed.request is not None
                topics = self.policy.topics
                tier = topics.retry(topics.tier_for_delay(decision.pause_s))
                wait = Retry(decision.pause_s, tier)
                return [self._retry_record(msg, failed, failure, wait, counted=False)]
            case _:
                assert_never(decision)

    @staticmethod
    def terminal_status(decision: Decision | None) -> ResponseStatus | None:
        """The status of the terminal response ``decision`` writes (None: it writes none)."""
        match decision:
            case Dead():
                return ResponseStatus.FAILED
            case Expire():
                return ResponseStatus.EXPIRED
            case Retry() | Drop() | Halt() | None:
                return None
            case _:
                assert_never(decision)

    def _retry_record(
        self, msg: Record, failed: RecordFailed, failure: Failure, retry: Retry, *, counted: bool
    ) -> Outbound:
        """The request again, for ``retry.topic``: due after ``retry.delay_s``, with its history
        (and replay headers: a replayed record that fails for good is parked)."""
        assert failed.request is not None
        now = self.clock_ms()
        attempt = failed.attempt if counted else failed.attempt - 1
        history = list(failed.history)
        if counted:
            history.append(Attempt(failed.attempt, now, failure.error_type, failure.message))
        headers = [
            (h.REQUEST_ID, str(failed.request["request_id"]).encode()),
            (h.RETRY_DUE_MS, str(now + int(retry.delay_s * 1000)).encode()),
            (h.RETRY_ORIGIN_TOPIC, str(msg.topic()).encode()),
            (h.RETRY_ATTEMPT, str(attempt).encode()),
            (h.RETRY_HISTORY, history_header(history)),
            *replay_headers(msg),
        ]
        retried = dict(failed.request, attempt=attempt)
        value = self.outcomes.codec.encode(REQUEST, retried, retry.topic)
        self._metrics.retried(retry.topic, failure)
        return Outbound(retry.topic, value, msg.key(), headers)


class _FailureMetrics:
    """The failure path's counters of one stage, bound once per label value seen (the
    label sets are small: decisions, retry tiers, error classes)."""

    def __init__(self, stage: str) -> None:
        self._stage = stage
        self._decisions: dict[str, Any] = {}
        self._dead: dict[str, Any] = {}
        self._retries: dict[tuple[str, str], Any] = {}

    def decided(self, decision: str) -> None:
        child = self._decisions.get(decision)
        if child is None:
            child = self._decisions[decision] = metrics.DECISIONS.labels(self._stage, decision)
        child.inc()

    def dead_letter(self, failure: Failure) -> None:
        cls = str(failure.error_class)
        child = self._dead.get(cls)
        if child is None:
            child = self._dead[cls] = metrics.DEAD_LETTERS.labels(self._stage, cls)
        child.inc()

    def retried(self, topic: str, failure: Failure) -> None:
        key = (topic, str(failure.error_class))
        child = self._retries.get(key)
        if child is None:
            tier = topic.rsplit(".", 1)[-1]  # "<prefix>.retry.10s" -> "10s"
            child = self._retries[key] = metrics.RETRIES.labels(self._stage, tier, key[1])
        child.inc()


def _where(msg: Record) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
