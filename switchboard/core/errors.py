"""The error taxonomy: every failure is one of four classes, and the class decides what happens.

- transient: retrying can help (after a delay the provider may give);
- permanent: retrying cannot help (bad input, HTTP 400): dead-letter at once;
- skip: drop on purpose, logged (a duplicate, an already-answered request);
- fatal: the process or its configuration is wrong (bad key, spend limit): pause or stop,
  never fill the DLQ with these.

Third-party errors are mapped onto these classes in ``switchboard.core.classify``.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """What kind of failure an error is; decides retry, dead-letter, drop or halt."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    SKIP = "skip"
    FATAL = "fatal"


class SwitchboardError(Exception):
    """Base of Switchboard's own errors; ``code`` is a stable, machine-readable identifier."""

    error_class: ErrorClass = ErrorClass.PERMANENT
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TransientError(SwitchboardError):
    """Raised when an operation failed for a reason that may pass; retry after ``retry_after_s``."""

    error_class = ErrorClass.TRANSIENT
    code = "transient"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class PermanentError(SwitchboardError):
    """Raised when retrying cannot help: the record goes to the DLQ at once."""

    error_class = ErrorClass.PERMANENT
    code = "permanent"


class DecodeError(PermanentError):
    """Raised when bytes cannot be decoded into a known contract (unknown schema, corrupt body)."""

    code = "decode_error"


class RequestInvalid(PermanentError):
    """Raised when a decoded request breaks a rule (size, required field, tenant, deadline)."""

    code = "invalid_request"


class SkipRecord(SwitchboardError):
    """Raised when a record is dropped on purpose (e.g. already answered); logged, not retried."""

    error_class = ErrorClass.SKIP
    code = "skip"


class FatalError(SwitchboardError):
    """Raised when the worker itself is misconfigured or cut off: pause or stop, alert, no DLQ."""

    error_class = ErrorClass.FATAL
    code = "fatal"


class ConfigError(FatalError):
    """Raised when settings are impossible or a required tool is missing; says what to change."""

    code = "config"


class ProcessStop(FatalError):
    """Raised when this process can handle no such record until an operator fixes its
    configuration (e.g. a content key it lacks): the runtime stops with the record uncommitted,
    so it waits in Kafka for a process that can, instead of being dead-lettered."""

    code = "process_stop"


class KafkaAccessError(FatalError):
    """Raised when Kafka refuses this client (credentials, TLS, ACLs, protocol): every record
    would fail alike, so the process stops with one line that says what to change; nothing is
    committed past what was done, so the records wait in Kafka for the fix."""

    code = "kafka_access"
