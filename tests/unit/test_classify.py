"""Third-party errors map onto the taxonomy: tables built from the real exceptions.

The Anthropic cases are raised by the real SDK client (``max_retries=0``) answering from an
``httpx2.MockTransport``, so the exception class, ``error_code``, ``request_id`` and headers are
exactly what a worker will meet.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.serialization import SerializationError
from fastavro.read import SchemaResolutionError

from switchboard.core.classify import (
    MAX_MESSAGE_CHARS,
    Failure,
    classify,
    classify_anthropic,
    classify_decode,
    classify_kafka,
    parse_retry_after,
)
from switchboard.core.errors import (
    ConfigError,
    DecodeError,
    ErrorClass,
    FatalError,
    PermanentError,
    RequestInvalid,
    SkipRecord,
    TransientError,
)

T, P, S, F = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.SKIP, ErrorClass.FATAL
NOW_S = 1_700_000_000.0  # the wall clock the HTTP-date case is read against


def _call_sdk(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.AnthropicError:
    client = anthropic.Anthropic(
        api_key="test-key",
        base_url="http://fake.invalid",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(anthropic.AnthropicError) as raised:
        client.messages.create(
            model="claude-haiku-5-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    return raised.value


def sdk_status_error(
    status: int,
    headers: dict[str, str] | None = None,
    *,
    error_type: str = "api_error",
    error_code: str | None = None,
) -> anthropic.AnthropicError:
    """The exception the real SDK raises for this HTTP answer."""
    error: dict[str, Any] = {"type": error_type, "message": "scripted failure"}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error}
    all_headers = {"request-id": f"req_{status}", **(headers or {})}
    return _call_sdk(lambda request: httpx2.Response(status, headers=all_headers, json=body))


def http_date(epoch_s: float) -> str:
    return email.utils.formatdate(epoch_s, usegmt=True)


# (id, status, headers, error_code, sdk class, class, code, retry_after_s, overload, systemic)
ANTHROPIC_CASES = [
    ("400", 400, {}, None, "BadRequestError", P, "invalid_request", None, False, False),
    ("413", 413, {}, None, "ContentTooLargeError", P, "request_too_large", None, False, False),
    ("422", 422, {}, None, "UnprocessableEntityError", P, "unprocessable", None, False, False),
    ("401", 401, {}, None, "AuthenticationError", F, "authentication", None, False, True),
    ("403", 403, {}, None, "PermissionDeniedError", F, "permission_denied", None, False, True),
    ("404 model id", 404, {}, None, "NotFoundError", F, "not_found", None, False, True),
    ("402", 402, {}, None, "PaymentRequiredError", F, "payment_required", None, False, True),
    ("408", 408, {}, None, "RequestTimeoutError", T, "request_timeout", None, False, False),
    ("409", 409, {}, None, "ConflictError", T, "conflict", None, False, False),
    ("429 bare", 429, {}, None, "RateLimitError", T, "rate_limited", None, True, False),
    (
        "429 retry-after-ms",
        429,
        {"retry-after-ms": "1500"},
        None,
        "RateLimitError",
        T,
        "rate_limited",
        1.5,
        True,
        False,
    ),
    (
        "429 retry-after seconds",
        429,
        {"retry-after": "7"},
        None,
        "RateLimitError",
        T,
        "rate_limited",
        7.0,
        True,
        False,
    ),
    (
        "429 retry-after-ms wins over retry-after",
        429,
        {"retry-after-ms": "250", "retry-after": "9"},
        None,
        "RateLimitError",
        T,
        "rate_limited",
        0.25,
        True,
        False,
    ),
    (
        "429 retry-after HTTP date",
        429,
        {"retry-after": http_date(NOW_S + 30)},
        None,
        "RateLimitError",
        T,
        "rate_limited",
        30.0,
        True,
        False,
    ),
    (
        "429 retry-after HTTP date in the past",
        429,
        {"retry-after": http_date(NOW_S - 30)},
        None,
        "RateLimitError",
        T,
        "rate_limited",
        0.0,
        True,
        False,
    ),
    (
        "429 retry-after unreadable",
        429,
        {"retry-after": "soon"},
        None,
        "RateLimitError",
        T,
        "rate_limited",
        None,
        True,
        False,
    ),
    (
        "429 ramp limit is still a rate limit",
        429,
        {"retry-after": "3"},
        "ramp_limit_exceeded",
        "RampLimitExceededError",
        T,
        "ramp_limit_exceeded",
        3.0,
        True,
        False,
    ),
    (
        "429 x-should-retry false",
        429,
        {"x-should-retry": "false"},
        None,
        "RateLimitError",
        F,
        "rate_limited",
        None,
        False,
        True,
    ),
    (
        "429 enforced spend limit",
        429,
        {"x-should-retry": "false", "retry-after": "3600"},
        "enforced_spend_limit_reached",
        "EnforcedSpendLimitReachedError",
        F,
        "enforced_spend_limit_reached",
        3600.0,
        False,
        True,
    ),
    (
        "429 contract spend limit",
        429,
        {},
        "contract_spend_limit_reached",
        "ContractSpendLimitReachedError",
        F,
        "contract_spend_limit_reached",
        None,
        False,
        True,
    ),
    (
        "400 organization on hold",
        400,
        {},
        "organization_on_hold",
        "OrganizationOnHoldError",
        F,
        "organization_on_hold",
        None,
        False,
        True,
    ),
    ("500", 500, {}, None, "InternalServerError", T, "server_error", None, True, False),
    ("503", 503, {}, None, "ServiceUnavailableError", T, "server_error", None, True, False),
    (
        "529 overloaded",
        529,
        {"retry-after": "2"},
        None,
        "OverloadedError",
        T,
        "overloaded",
        2.0,
        True,
        False,
    ),
    (
        "500 x-should-retry false",
        500,
        {"x-should-retry": "false"},
        None,
        "InternalServerError",
        P,
        "server_error",
        None,
        False,
        False,
    ),
    (
        "400 x-should-retry true",
        400,
        {"x-should-retry": "true"},
        None,
        "BadRequestError",
        T,
        "invalid_request",
        None,
        False,
        False,
    ),
]


@pytest.mark.parametrize(
    (
        "status",
        "headers",
        "error_code",
        "sdk_class",
        "error_class",
        "code",
        "retry_after_s",
        "overload",
        "systemic",
    ),
    [case[1:] for case in ANTHROPIC_CASES],
    ids=[case[0] for case in ANTHROPIC_CASES],
)
def test_classify_anthropic_status_errors(
    status: int,
    headers: dict[str, str],
    error_code: str | None,
    sdk_class: str,
    error_class: ErrorClass,
    code: str,
    retry_after_s: float | None,
    overload: bool,
    systemic: bool,
) -> None:
    exc = sdk_status_error(status, headers, error_code=error_code)
    assert type(exc).__name__ == sdk_class  # the SDK really raises this class for the answer

    failure = classify_anthropic(exc, now_s=NOW_S)

    assert failure.error_class is error_class
    assert failure.code == code
    assert failure.error_type == sdk_class
    assert failure.provider_status == status
    assert failure.provider_request_id == f"req_{status}"
    assert failure.overload is overload
    assert failure.systemic is systemic
    if retry_after_s is None:
        assert failure.retry_after_s is None
    else:
        assert failure.retry_after_s == pytest.approx(
            retry_after_s, abs=1.0 if "date" in str(headers) else 1e-9
        )


def test_http_date_retry_after_is_relative_to_the_given_wall_clock() -> None:
    headers = httpx2.Headers({"retry-after": http_date(NOW_S + 120)})
    assert parse_retry_after(headers, now_s=NOW_S) == pytest.approx(120.0)
    assert parse_retry_after(headers, now_s=NOW_S + 100) == pytest.approx(20.0)
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "nan"})) is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("transport_error", "sdk_class", "code"),
    [
        (httpx2.ReadTimeout, "APITimeoutError", "timeout"),
        (httpx2.ConnectTimeout, "APITimeoutError", "timeout"),
        (httpx2.ConnectError, "APIConnectionError", "connection_error"),
    ],
)
def test_classify_anthropic_network_errors_are_transient(
    transport_error: type[Exception], sdk_class: str, code: str
) -> None:
    def fail(request: httpx2.Request) -> httpx2.Response:
        raise transport_error("scripted", request=request)  # type: ignore[call-arg]

    exc = _call_sdk(fail)
    assert type(exc).__name__ == sdk_class

    failure = classify_anthropic(exc)

    assert (failure.error_class, failure.code) == (T, code)
    assert (failure.overload, failure.systemic, failure.provider_status) == (False, False, None)


def test_spend_limit_classes_exist_in_the_installed_sdk() -> None:
    """The mapping matches spend limits by class; a renamed class must fail here, loudly."""
    assert issubclass(anthropic.EnforcedSpendLimitReachedError, anthropic.RateLimitError)
    assert issubclass(anthropic.ContractSpendLimitReachedError, anthropic.RateLimitError)


def _kafka(code: int, **flags: bool) -> KafkaError:
    return KafkaError(code, "scripted", **flags)


# (id, error, class, code, systemic)
KAFKA_CASES: list[tuple[str, KafkaError | KafkaException, ErrorClass, str, bool]] = [
    ("fatal flag", _kafka(KafkaError._FENCED, fatal=True), F, "kafka_fenced", True),
    (
        "fatal flag beats retriable",
        _kafka(KafkaError._TRANSPORT, fatal=True, retriable=True),
        F,
        "kafka_transport",
        True,
    ),
    (
        "retriable flag",
        _kafka(KafkaError.NOT_COORDINATOR, retriable=True),
        T,
        "kafka_not_coordinator",
        False,
    ),
    ("message timed out", _kafka(KafkaError._MSG_TIMED_OUT), T, "kafka_msg_timed_out", False),
    ("all brokers down", _kafka(KafkaError._ALL_BROKERS_DOWN), T, "kafka_all_brokers_down", False),
    ("queue full", _kafka(KafkaError._QUEUE_FULL), T, "kafka_queue_full", False),
    (
        "txn requires abort",
        _kafka(KafkaError.INVALID_TXN_STATE, txn_requires_abort=True),
        T,
        "kafka_invalid_txn_state",
        False,
    ),
    (
        "message too large",
        _kafka(KafkaError.MSG_SIZE_TOO_LARGE),
        P,
        "kafka_msg_size_too_large",
        False,
    ),
    ("invalid record", _kafka(KafkaError.INVALID_RECORD), P, "kafka_invalid_record", False),
    ("value deserialization", _kafka(KafkaError._VALUE_DESERIALIZATION), P, "decode_error", False),
    (
        "topic authorization",
        _kafka(KafkaError.TOPIC_AUTHORIZATION_FAILED),
        F,
        "kafka_topic_authorization_failed",
        True,
    ),
    (
        "group authorization",
        _kafka(KafkaError.GROUP_AUTHORIZATION_FAILED),
        F,
        "kafka_group_authorization_failed",
        True,
    ),
    (
        "sasl authentication",
        _kafka(KafkaError.SASL_AUTHENTICATION_FAILED),
        F,
        "kafka_sasl_authentication_failed",
        True,
    ),
    ("local authentication", _kafka(KafkaError._AUTHENTICATION), F, "kafka_authentication", True),
    (
        "unknown topic (broker), even if retriable",
        _kafka(KafkaError.UNKNOWN_TOPIC_OR_PART, retriable=True),
        F,
        "kafka_unknown_topic_or_part",
        True,
    ),
    ("unknown topic (local)", _kafka(KafkaError._UNKNOWN_TOPIC), F, "kafka_unknown_topic", True),
    ("partition eof", _kafka(KafkaError._PARTITION_EOF), S, "kafka_partition_eof", False),
    (
        "exception wrapping an error",
        KafkaException(_kafka(KafkaError.MSG_SIZE_TOO_LARGE)),
        P,
        "kafka_msg_size_too_large",
        False,
    ),
    (
        "exception with a message",
        KafkaException("no KafkaError inside"),
        T,
        "kafka_unexpected",
        False,
    ),
    ("serializer error", SerializationError("bad value"), P, "serialization_error", False),
]


@pytest.mark.parametrize(
    ("err", "error_class", "code", "systemic"),
    [case[1:] for case in KAFKA_CASES],
    ids=[case[0] for case in KAFKA_CASES],
)
def test_classify_kafka(
    err: KafkaError | KafkaException, error_class: ErrorClass, code: str, systemic: bool
) -> None:
    failure = classify_kafka(err)
    assert (failure.error_class, failure.code, failure.systemic) == (error_class, code, systemic)
    assert failure.overload is False
    assert failure.message


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValueError("bad varint"), "decode_error"),
        (EOFError(), "decode_error"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "decode_error"),
        (SchemaResolutionError("reader and writer disagree"), "decode_error"),
        (DecodeError("no marker", code="bad_marker"), "bad_marker"),
        (DecodeError("corrupt"), "decode_error"),
    ],
)
def test_classify_decode_is_always_permanent(exc: BaseException, code: str) -> None:
    failure = classify_decode(exc)
    assert (failure.error_class, failure.code) == (P, code)
    assert failure.error_type == type(exc).__name__


# (id, exception, class, code, retry_after_s, systemic)
DISPATCH_CASES: list[tuple[str, BaseException, ErrorClass, str, float | None, bool]] = [
    (
        "transient error",
        TransientError("registry down", retry_after_s=3.0),
        T,
        "transient",
        3.0,
        False,
    ),
    (
        "transient error, own code",
        TransientError("x", code="registry_down"),
        T,
        "registry_down",
        None,
        False,
    ),
    ("permanent error", PermanentError("no"), P, "permanent", None, False),
    (
        "decode error keeps its code",
        DecodeError("x", code="unknown_schema"),
        P,
        "unknown_schema",
        None,
        False,
    ),
    ("request invalid", RequestInvalid("too big"), P, "invalid_request", None, False),
    ("skip", SkipRecord("already answered"), S, "skip", None, False),
    ("fatal", FatalError("cut off"), F, "fatal", None, True),
    ("config", ConfigError("no such model"), F, "config", None, True),
    (
        "kafka",
        KafkaException(_kafka(KafkaError.TOPIC_AUTHORIZATION_FAILED)),
        F,
        "kafka_topic_authorization_failed",
        None,
        True,
    ),
    ("serializer", SerializationError("bad bytes"), P, "serialization_error", None, False),
    ("unicode", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), P, "decode_error", None, False),
    ("fastavro", SchemaResolutionError("x"), P, "decode_error", None, False),
    ("timeout", TimeoutError(), T, "timeout", None, False),
    ("unknown bug", RuntimeError("oops"), T, "unexpected", None, False),
    ("bare ValueError outside decoding", ValueError("oops"), T, "unexpected", None, False),
    ("cancellation", asyncio.CancelledError(), F, "interrupted", None, False),
]


@pytest.mark.parametrize(
    ("exc", "error_class", "code", "retry_after_s", "systemic"),
    [case[1:] for case in DISPATCH_CASES],
    ids=[case[0] for case in DISPATCH_CASES],
)
def test_classify_dispatches_by_source(
    exc: BaseException,
    error_class: ErrorClass,
    code: str,
    retry_after_s: float | None,
    systemic: bool,
) -> None:
    failure = classify(exc)
    assert failure == Failure(
        error_class,
        code,
        failure.message,
        type(exc).__name__,
        retry_after_s=retry_after_s,
        systemic=systemic,
    )


def test_classify_sends_sdk_errors_to_classify_anthropic() -> None:
    exc = sdk_status_error(529, {"retry-after-ms": "100"})
    assert classify(exc) == classify_anthropic(exc)
    assert classify(exc).overload


def test_message_is_bounded() -> None:
    failure = classify(RuntimeError("x" * 10 * MAX_MESSAGE_CHARS))
    assert len(failure.message) == MAX_MESSAGE_CHARS
