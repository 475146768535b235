"""How a request ends: the terminal statuses of the response topic (the ``Status`` enum of
``schemas/SpecialistResponse``), in one place."""

from __future__ import annotations

from enum import StrEnum


class ResponseStatus(StrEnum):
    """The status of a request's one terminal response. Members compare equal to their value,
    so records decoded from Avro (plain strings) and members mix freely."""

    ANSWERED = "answered"
    """A specialist answered: ``content`` holds the answer."""
    REJECTED = "rejected"
    """Turned away before any model call (invalid, unknown specialist or tenant, over its rate);
    ``content`` says what to change."""
    REFUSED = "refused"
    """The model declined to answer; a result, not an error."""
    EXPIRED = "expired"
    """The request's deadline passed before an answer."""
    FAILED = "failed"
    """Retries were exhausted or the error was permanent; ``dlq`` points at the dead letter, and
    a DLQ replay may supersede this response."""

    @property
    def settled(self) -> bool:
        """Whether no replay can supersede it (every status but ``failed``)."""
        return self is not ResponseStatus.FAILED


#: Every terminal status, in the schema's symbol order.
TERMINAL_STATUSES: tuple[ResponseStatus, ...] = tuple(ResponseStatus)
