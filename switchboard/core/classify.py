"""Map third-party errors onto the taxonomy of ``switchboard.core.errors``: one function per source.

Every failure becomes a ``Failure``: its class (what the retry policy does with it), a stable
``code``, and the provider's own signals (``retry-after``, status, request id) so decisions
follow what the provider said rather than a guess. Two flags feed the resilience layer:

- ``overload``: the provider is shedding load (429, 529, 5xx): counts toward the circuit
  breaker and makes the AIMD limiter back off;
- ``systemic``: every call would fail the same way (bad key, spend limit, retired model id):
  the breaker opens at once instead of letting each record discover it.

Branches are on exception classes and codes, never on message text, whose wording can change.

The ``anthropic`` package is imported only by ``classify_anthropic`` (importing it takes
seconds): services that never call the SDK, such as the router or the retry relay, classify
without it, and ``classify`` knows no SDK error can exist while the SDK is not imported.
"""

from __future__ import annotations

import email.utils
import functools
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.serialization import SerializationError

from switchboard.core.errors import DecodeError, ErrorClass, SwitchboardError, TransientError

if TYPE_CHECKING:
    import anthropic

__all__ = [
    "Failure",
    "classify",
    "classify_anthropic",
    "classify_decode",
    "classify_kafka",
    "client_certificate_problem",
    "is_decode_error",
    "kafka_access_problem",
    "parse_retry_after",
]

#: Longest message kept on a ``Failure``; it travels in DLQ records and headers.
MAX_MESSAGE_CHARS: Final = 1000


@dataclass(frozen=True)
class Failure:
    """One failed attempt, classified: what kind it is and what the provider said about it."""

    error_class: ErrorClass
    code: str
    message: str
    #: The exception's class name, for DLQ records and logs.
    error_type: str
    #: The provider's own "not before" delay in seconds, when it gave one.
    retry_after_s: float | None = None
    provider_status: int | None = None
    provider_request_id: str | None = None
    #: 429/529/5xx: counts toward the circuit breaker and the AIMD limiter's back-off.
    overload: bool = False
    #: Auth, spend limit, unknown model: every call would fail alike; the breaker opens at once.
    systemic: bool = False


def _message(exc: object) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


# --- Anthropic SDK ---------------------------------------------------------------------------


def _sdk_class(name: str) -> type[BaseException] | None:
    """An SDK exception class by name, or None where the installed SDK does not have it."""
    import anthropic

    found = getattr(anthropic, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


@functools.cache
def _spend_limit_classes() -> tuple[type[BaseException], ...]:
    """Spend limits are 429 subclasses in the SDK, but waiting a few seconds cannot clear them."""
    names = ("EnforcedSpendLimitReachedError", "ContractSpendLimitReachedError")
    return tuple(cls for cls in map(_sdk_class, names) if cls is not None)


#: ``error.details.error_code`` values that mean the account or organisation, not the request,
#: is the problem: every call fails alike until a human acts, so halt rather than dead-letter.
#: (The codes are stable by the SDK's contract; the two spend limits are also matched by class.)
_SYSTEMIC_ERROR_CODES: Final = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
        "organization_on_hold",
        "organization_type_not_supported",
        "parent_organization_required",
        "cmek_key_disabled",
        "cmek_key_network_blocked",
    }
)

#: Codes for status errors by HTTP status, when the body names no ``error_code``.
_STATUS_CODES: Final[dict[int, str]] = {
    400: "invalid_request",
    401: "authentication",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    412: "precondition_failed",
    413: "request_too_large",
    422: "unprocessable",
    429: "rate_limited",
    431: "headers_too_large",
    499: "client_closed_request",
    529: "overloaded",
}


def _finite(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now_s: float | None = None
) -> float | None:
    """The provider's delay in seconds: ``retry-after-ms``, else ``retry-after`` (seconds or an
    HTTP date), as the SDK reads them; None when absent or unreadable. Never negative: a date
    in the past means "now" (0.0). ``now_s`` (epoch seconds) is for dates; default: the clock.
    ``headers``: case-insensitive (``httpx2.Headers``) or with lower-case names.
    """
    if headers is None:
        return None
    # An unreadable value means "no advice", as in the SDK: fall through to the next form.
    millis = _finite(headers.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(0.0, seconds)
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    wall = time.time() if now_s is None else now_s
    return max(0.0, float(email.utils.mktime_tz(parsed)) - wall)


def classify_anthropic(exc: BaseException, *, now_s: float | None = None) -> Failure:
    """Classify an exception raised by the ``anthropic`` SDK (``now_s``: epoch seconds, used
    only to turn an HTTP-date ``retry-after`` into a delay)."""
    import anthropic

    error_type = type(exc).__name__
    message = _message(exc)

    if isinstance(exc, anthropic.APIStatusError):
        return _classify_status(exc, error_type, message, now_s)
    # Before APIConnectionError: APITimeoutError is its subclass.
    if isinstance(exc, anthropic.APITimeoutError):
        # Transient, but the prompt may have been processed and billed: no idempotency key is
        # sent, so a retry can bill twice. Attempts are capped by the policy for that reason.
        return Failure(ErrorClass.TRANSIENT, "timeout", message, error_type)
    if isinstance(exc, anthropic.APIConnectionError):
        # Same double-billing risk: a connection dropped mid-response may follow a billed call.
        return Failure(ErrorClass.TRANSIENT, "connection_error", message, error_type)
    if isinstance(exc, anthropic.APIResponseValidationError):
        # A 2xx the SDK could not parse: provider or SDK drift, not the record's fault; retried
        # a capped number of times, then dead-lettered.
        return Failure(
            ErrorClass.TRANSIENT,
            "response_invalid",
            message,
            error_type,
            provider_status=exc.status_code,
            provider_request_id=exc.response.headers.get("request-id"),
        )
    credentials_error = _sdk_class("CredentialsError")
    if credentials_error is not None and isinstance(exc, credentials_error):
        return Failure(ErrorClass.FATAL, "credentials", message, error_type, systemic=True)
    retryable_error = _sdk_class("RetryableError")
    if retryable_error is not None and isinstance(exc, retryable_error):
        return Failure(ErrorClass.TRANSIENT, "retryable", message, error_type)
    # Any other SDK error: retried a capped number of times, like any error we do not know.
    return Failure(ErrorClass.TRANSIENT, "anthropic_unexpected", message, error_type)


def _classify_status(
    exc: anthropic.APIStatusError, error_type: str, message: str, now_s: float | None
) -> Failure:
    status = exc.status_code
    headers = exc.response.headers
    error_code = getattr(exc, "error_code", None)  # absent from older SDKs: then None
    should_retry = headers.get("x-should-retry")

    def failure(
        error_class: ErrorClass, code: str, *, overload: bool = False, systemic: bool = False
    ) -> Failure:
        return Failure(
            error_class,
            code,
            message,
            error_type,
            retry_after_s=parse_retry_after(headers, now_s=now_s),
            provider_status=status,
            provider_request_id=exc.request_id or headers.get("request-id"),
            overload=overload,
            systemic=systemic,
        )

    # The status stays in ``provider_status``; the code groups (``server_error`` for any 5xx).
    fallback = "server_error" if status >= 500 else f"http_{status}"
    code = error_code or _STATUS_CODES.get(status, fallback)

    # Account-level stops first: they arrive as 400/402/429 but no retry of this record or any
    # other can succeed until someone raises a limit, pays, or re-enables the organisation.
    if isinstance(exc, _spend_limit_classes()) or error_code in _SYSTEMIC_ERROR_CODES:
        return failure(ErrorClass.FATAL, code, systemic=True)
    if status == 429:
        if should_retry == "false":
            # The provider says this 429 will not clear by waiting (a limit it will not lift on
            # its own, even without a recognised error_code): pause, do not burn attempts.
            return failure(ErrorClass.FATAL, code, systemic=True)
        return failure(ErrorClass.TRANSIENT, code, overload=True)
    if status in (401, 402, 403):
        return failure(ErrorClass.FATAL, code, systemic=True)
    if status == 404:
        # On the Messages API a 404 means the model id (configuration) or the base URL is wrong.
        return failure(ErrorClass.FATAL, code, systemic=True)

    # The status rule; ``x-should-retry`` overrides it either way, as it does in the SDK.
    transient = status in (408, 409, 499) or status >= 500
    if should_retry == "false":
        transient = False
    elif should_retry == "true":
        transient = True
    if not transient:
        return failure(ErrorClass.PERMANENT, code)
    return failure(ErrorClass.TRANSIENT, code, overload=status >= 500)


# --- Kafka (librdkafka) ----------------------------------------------------------------------


def _codes(*names: str) -> frozenset[int]:
    """Error codes by name, skipping names the installed librdkafka does not define."""
    return frozenset(getattr(KafkaError, n) for n in names if hasattr(KafkaError, n))


#: The record itself cannot be written or read: retrying the same bytes cannot help.
_KAFKA_PERMANENT: Final = _codes(
    "MSG_SIZE_TOO_LARGE",
    "INVALID_MSG_SIZE",
    "INVALID_MSG",
    "INVALID_RECORD",
    "RECORD_LIST_TOO_LARGE",
    "POLICY_VIOLATION",
    "_BAD_MSG",
    "_KEY_SERIALIZATION",
    "_VALUE_SERIALIZATION",
)
_KAFKA_DECODE: Final = _codes("_KEY_DESERIALIZATION", "_VALUE_DESERIALIZATION")

#: Credentials, ACLs, fencing, impossible configuration, missing topics: every record would
#: fail the same way, so stop and alert rather than fill the DLQ.
_KAFKA_FATAL: Final = _codes(
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    "SASL_AUTHENTICATION_FAILED",
    "_AUTHENTICATION",
    "_SSL",
    "_FATAL",
    "_FENCED",
    "PRODUCER_FENCED",
    "INVALID_PRODUCER_EPOCH",
    "_INVALID_ARG",
    "INVALID_CONFIG",
    "_UNSUPPORTED_FEATURE",
    "UNSUPPORTED_COMPRESSION_TYPE",
    "TOPIC_EXCEPTION",
    # Unknown topic: decided by code even when librdkafka flags it retriable, because by the
    # time it reaches us librdkafka has already waited out metadata propagation.
    "UNKNOWN_TOPIC_OR_PART",
    "_UNKNOWN_TOPIC",
    "_UNKNOWN_PARTITION",
)


def classify_kafka(err: KafkaError | KafkaException) -> Failure:
    """Classify a ``confluent_kafka.KafkaError``, or a ``KafkaException`` carrying one."""
    error_type = type(err).__name__
    kafka_error = err.args[0] if isinstance(err, KafkaException) and err.args else err
    if not isinstance(kafka_error, KafkaError):
        # A KafkaException with a plain message: in practice a (de)serializer's error.
        if isinstance(err, SerializationError):
            return Failure(ErrorClass.PERMANENT, "serialization_error", _message(err), error_type)
        return Failure(ErrorClass.TRANSIENT, "kafka_unexpected", _message(err), error_type)

    code_num = kafka_error.code()
    code = f"kafka_{(kafka_error.name() or str(code_num)).lstrip('_').lower()}"
    message = kafka_error.str() or _message(err)

    def failure(error_class: ErrorClass, *, systemic: bool = False, as_code: str = code) -> Failure:
        return Failure(error_class, as_code, message, error_type, systemic=systemic)

    if (line := kafka_access_problem(kafka_error)) is not None:
        return Failure(ErrorClass.FATAL, code, line, error_type, systemic=True)
    if kafka_error.fatal():
        return failure(ErrorClass.FATAL, systemic=True)
    if code_num == KafkaError._PARTITION_EOF:
        return failure(ErrorClass.SKIP)  # an end-of-partition event, not an error
    if code_num in _KAFKA_FATAL:
        return failure(ErrorClass.FATAL, systemic=True)
    if code_num in _KAFKA_DECODE:
        return failure(ErrorClass.PERMANENT, as_code="decode_error")
    if code_num in _KAFKA_PERMANENT:
        return failure(ErrorClass.PERMANENT)
    # Everything else passes or may pass: broker, network and queue conditions (librdkafka flags
    # only some ``retriable()``; a delivery report's KafkaError carries just its code), a
    # transaction that must be aborted and redone (``txn_requires_abort()``: the record is fine),
    # and codes unknown to us, which are retried a capped number of times, never halted on.
    return failure(ErrorClass.TRANSIENT)


#: Authorization codes and the resource kind each names.
_KAFKA_DENIED: Final[dict[int, str]] = {
    code: kind
    for name, kind in (
        ("TOPIC_AUTHORIZATION_FAILED", "topic"),
        ("GROUP_AUTHORIZATION_FAILED", "group"),
        ("CLUSTER_AUTHORIZATION_FAILED", "cluster"),
        ("TRANSACTIONAL_ID_AUTHORIZATION_FAILED", "transactional id"),
    )
    if (code := getattr(KafkaError, name, None)) is not None
}
_KAFKA_AUTHENTICATION: Final = _codes("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED")
_KAFKA_TLS: Final = _codes("_SSL")


def kafka_access_problem(
    err: KafkaError,
    *,
    operation: str | None = None,
    resource: str | None = None,
) -> str | None:
    """One line saying what is wrong and what to change, when Kafka refuses this client
    (credentials, TLS, an ACL); None for every other error. ``operation`` (``Read``,
    ``Write``, ``Describe``) and ``resource`` (the topic or group) name what was denied when the
    caller knows it: librdkafka's error carries only the code."""
    code = err.code()
    detail = err.str() or err.name()
    if code in _KAFKA_AUTHENTICATION:
        return (
            f"Kafka SASL authentication failed ({detail}): check sasl.username, sasl.password "
            "and sasl.mechanism in SWITCHBOARD_KAFKA_CONFIG"
        )
    if code in _KAFKA_TLS:
        return (
            f"Kafka TLS handshake failed ({detail}): set ssl.ca.location to the CA that signed "
            "the broker's certificate, and check security.protocol (SSL or SASL_SSL)"
        )
    kind = _KAFKA_DENIED.get(code)
    if kind is not None:
        what = f"{kind} {resource}" if resource else kind
        op = operation or "access"
        return (
            f"Kafka denied {op} on {what} ({err.name()}): grant this principal {op} on the "
            f"{kind} (an ACL), or run with an identity that has it"
        )
    return None


def plaintext_on_tls_problem(bootstrap: str) -> str:
    """The line for a plaintext client whose broker port speaks TLS."""
    return (
        f"Kafka at {bootstrap} speaks TLS but this client connects in plaintext: set "
        'security.protocol to "SSL" or "SASL_SSL" (and ssl.ca.location) in SWITCHBOARD_KAFKA_CONFIG'
    )


def client_certificate_problem(bootstrap: str, alert: str) -> str:
    """The line for a client whose certificate the broker rejects (mTLS)."""
    return (
        f"Kafka at {bootstrap} rejected this client's certificate ({alert}): set "
        "ssl.certificate.location and ssl.key.location to a certificate signed by a CA the "
        "broker trusts"
    )


# --- decoding --------------------------------------------------------------------------------


def _decode_classes() -> tuple[type[BaseException], ...]:
    """Exception classes that only ever mean "these bytes are not a record we can read"."""
    found: list[type[BaseException]] = [UnicodeDecodeError, EOFError]
    try:
        from fastavro.read import SchemaResolutionError

        found.append(SchemaResolutionError)
    except ImportError:  # a fastavro without it: nothing to add
        pass
    try:
        import avro.errors  # type: ignore[import-not-found,unused-ignore]

        found.append(avro.errors.AvroException)
    except ImportError:  # the reference avro library is optional (dev extra)
        pass
    return tuple(found)


_DECODE_CLASSES: Final = _decode_classes()


def is_decode_error(exc: BaseException) -> bool:
    """Whether ``exc`` can only mean unreadable bytes (not a bare ValueError: see ``classify``)."""
    return isinstance(exc, (DecodeError, *_DECODE_CLASSES))


def classify_decode(exc: BaseException) -> Failure:
    """Classify an error raised while decoding a record's bytes: always permanent.

    Call it where the error is known to come from decoding; there a bare ValueError (fastavro's
    usual complaint about corrupt bytes) means the same as a fastavro-specific one.
    """
    code = "decode_error"
    if isinstance(exc, SwitchboardError) and exc.code != SwitchboardError.code:
        code = exc.code  # serde's DecodeError says why: empty, bad_marker, unknown_schema...
    return Failure(ErrorClass.PERMANENT, code, _message(exc), type(exc).__name__)


# --- everything ------------------------------------------------------------------------------


def classify(exc: BaseException, *, now_s: float | None = None) -> Failure:
    """Classify any exception raised while handling a record."""
    if isinstance(exc, SwitchboardError):
        retry_after = exc.retry_after_s if isinstance(exc, TransientError) else None
        return Failure(
            exc.error_class,
            exc.code,
            _message(exc),
            type(exc).__name__,
            retry_after_s=retry_after,
            systemic=exc.error_class is ErrorClass.FATAL,
        )
    sdk = sys.modules.get("anthropic")  # not imported: then no SDK error can exist
    if sdk is not None and isinstance(exc, sdk.AnthropicError):
        return classify_anthropic(exc, now_s=now_s)
    if isinstance(exc, KafkaError | KafkaException):  # SerializationError included
        return classify_kafka(exc)
    if is_decode_error(exc):
        return classify_decode(exc)
    if not isinstance(exc, Exception):
        # Cancellation, KeyboardInterrupt, SystemExit: the caller should re-raise these; if it
        # asks anyway, halting is the only answer that neither retries nor dead-letters.
        return Failure(ErrorClass.FATAL, "interrupted", _message(exc), type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return Failure(ErrorClass.TRANSIENT, "timeout", _message(exc), type(exc).__name__)
    # Anything else is most likely a bug of ours. It is retried rather than dead-lettered on
    # first sight, so a deploy that fixes it saves the record; attempts are capped by the
    # policy, so a record that always trips it still ends in the DLQ. A bare ValueError lands
    # here too: only the decode step may call it a decode error (``classify_decode``).
    return Failure(ErrorClass.TRANSIENT, "unexpected", _message(exc), type(exc).__name__)
