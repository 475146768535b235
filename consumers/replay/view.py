"""One record of a dead-letter topic as the replay tools see it: ``DeadLetterView``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, overload

from consumers.replay.parsing import iso, pointer
from switchboard.core import headers as h
from switchboard.core.aio_producer import Outbound
from switchboard.core.errors import ConfigError, DecodeError, ErrorClass
from switchboard.core.serde import DEAD_LETTER

if TYPE_CHECKING:
    from confluent_kafka import Message

    from switchboard.core.serde import Codec

#: What ``error_class`` says of a DLQ value that does not decode as a DeadLetter.
UNDECODABLE: Final = "undecodable"
#: Every ``error_class`` a dead letter can have (the ``--error-class`` choices).
ERROR_CLASSES: Final = (*(str(c) for c in ErrorClass), UNDECODABLE)


def message_headers(msg: Message) -> list[tuple[str, bytes | None]]:
    """``msg``'s headers as (name, bytes) pairs, whatever shape the client handed them in."""
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in items]


class _RecordField:
    """A text field of a view's decoded DeadLetter as a read-only attribute of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, view: None, owner: type) -> _RecordField: ...
    @overload
    def __get__(self, view: DeadLetterView, owner: type) -> str | None: ...
    def __get__(self, view: DeadLetterView | None, owner: type) -> _RecordField | str | None:
        return self if view is None else view._field(self.name)


@dataclass(frozen=True)
class DeadLetterView:
    """One record of a dead-letter topic: where it is and, when it decodes, what it says."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    #: The decoded DeadLetter, or None when the value is not one (see ``decode_error``).
    record: dict[str, Any] | None
    decode_error: str | None = None
    raw_value: bytes | None = field(default=None, repr=False)
    headers: tuple[tuple[str, bytes | None], ...] = field(default=(), repr=False)

    @classmethod
    def from_message(cls, msg: Message, codec: Codec) -> DeadLetterView:
        """Decode ``msg``; a value that is not a DeadLetter is kept as undecodable."""
        topic, value = str(msg.topic()), msg.value()
        headers = tuple(message_headers(msg))
        try:
            record: dict[str, Any] | None = codec.decode(DEAD_LETTER, value, topic)
            error = None
        except DecodeError as exc:
            record, error = None, str(exc)
        return cls(
            topic,
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            msg.timestamp()[1],
            record,
            error,
            value if record is None else None,
            headers,
        )

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def pointer(self) -> str:
        return pointer(self.topic, self.partition, self.offset)

    @property
    def undecodable(self) -> bool:
        return self.record is None

    @property
    def truncated(self) -> bool:
        """Whether the copy of the original was cut to fit the DLQ (it cannot be replayed)."""
        return h.header_value(self.headers, h.DLQ_TRUNCATED) is not None

    def _field(self, name: str) -> Any:
        return None if self.record is None else self.record.get(name)

    @property
    def error_class(self) -> str:
        return str(self._field("error_class") or UNDECODABLE)

    # The DeadLetter's own text fields, read as they are (None when absent or undecodable).
    error_code = _RecordField()
    request_id = _RecordField()
    tenant = _RecordField()
    specialist = _RecordField()
    stage = _RecordField()
    origin_topic = _RecordField()

    @property
    def origin_timestamp_ms(self) -> int:
        """When the failed record was written to its origin topic (0 when unknown)."""
        return int(self._field("origin_timestamp_ms") or 0)

    @property
    def failed_at_ms(self) -> int:
        """When it was dead-lettered: the last failure, else the DLQ record's own timestamp."""
        return int(self._field("last_failure_ms") or self.timestamp_ms)

    def summary(self, *, acked: bool = False, replayed: str | None = None) -> dict[str, Any]:
        """The stable JSON row of ``dlq list --json``."""
        attempts = self._field("attempts") or []
        return {
            "id": self.id,
            "pointer": self.pointer,
            "request_id": self.request_id,
            "error_class": self.error_class,
            "error_code": self.error_code,
            "error_type": self._field("error_type"),
            "error_message": self._field("error_message") or self.decode_error,
            "stage": self.stage,
            "specialist": self.specialist,
            "tenant": self.tenant,
            "origin_topic": self.origin_topic,
            "origin_partition": self._field("origin_partition"),
            "origin_offset": self._field("origin_offset"),
            "provider_status": self._field("provider_status"),
            "attempts": len(attempts),
            "failed_at": iso(self.failed_at_ms),
            "failed_at_ms": self.failed_at_ms,
            "acked": acked,
            "replayed": replayed,
            "truncated": self.truncated,
        }

    def replay_record(self, replay_id: str) -> Outbound:
        """The record to send: original key, value and headers, to the origin topic, plus the
        replay headers (an earlier replay's are replaced, for a record replayed again)."""
        if self.record is None or not self.origin_topic:
            raise ConfigError(f"dead letter {self.id} does not decode: it cannot be replayed")
        ours = (h.REPLAY_ID, h.REPLAY_OF)
        headers: list[tuple[str, bytes | str | None]] = [
            (item["key"], item["value"])
            for item in self.record.get("original_headers") or []
            if item["key"] not in ours
        ]
        headers += [(h.REPLAY_ID, replay_id.encode()), (h.REPLAY_OF, self.pointer.encode())]
        return Outbound(
            self.origin_topic,
            self.record["original_value"],
            self.record.get("original_key"),
            headers,
        )
