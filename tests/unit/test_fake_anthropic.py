"""The fake Anthropic server, driven by the real SDK over real loopback HTTP.

Every test talks to ``FakeAnthropic`` through ``anthropic.Anthropic`` or ``AsyncAnthropic``
(``max_retries=0`` unless the test is about retries), so what passes here is what the
specialist workers will meet.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx2
import pytest
from anthropic.types.messages.batch_create_params import Request

from switchboard.devtools.fake_anthropic import (
    FakeAnthropic,
    FakeStats,
    Fault,
    FaultSpecError,
    main,
)
from tests.support import wait_for

MODEL = "claude-sonnet-5-5"
#: An SDK error class a scripted fault raises.
E = TypeVar("E", bound=Exception)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(batch_seconds=0.2) as server:
        yield server


def ask(
    client: anthropic.Anthropic, prompt: str, *, max_tokens: int = 512, **params: Any
) -> anthropic.types.Message:
    return client.messages.create(
        model=MODEL,
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": prompt}],
        **params,
    )


def batch_item(custom_id: str, prompt: str) -> Request:
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}],
        },
    }


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def scripted_error(
    fake: FakeAnthropic, client: anthropic.Anthropic, spec: str, error_class: type[E]
) -> E:
    """Script the fault ``spec`` and ask once: the error the SDK raises (the test fails unless
    it is an ``error_class``)."""
    fake.script(spec)
    with pytest.raises(error_class) as caught:
        ask(client, "hello")
    return caught.value


# Messages.


def test_create_returns_a_deterministic_markdown_answer_with_usage(
    client: anthropic.Anthropic,
) -> None:
    """The same request gets the same text, quoting the prompt; usage is about len/4."""
    prompt = "How many partitions should the orders topic have?"
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=512, messages=[{"role": "user", "content": prompt}]
    )
    first = raw.parse()
    again = ask(client, prompt)
    other = ask(client, "Something else entirely")

    assert raw.headers["request-id"].startswith("req_fake_")
    assert first.role == "assistant" and first.stop_reason == "end_turn"
    assert [block.type for block in first.content] == ["text"]
    assert f"You asked: {prompt}" in text_of(first)
    assert text_of(again) == text_of(first) and again.id != first.id
    assert text_of(other) != text_of(first)
    assert first.usage.input_tokens == pytest.approx(len(prompt) / 4, abs=2)
    assert first.usage.output_tokens == pytest.approx(len(text_of(first)) / 4, abs=1)


def test_max_tokens_truncates_the_answer(client: anthropic.Anthropic) -> None:
    message = ask(client, "A long question deserving a long answer", max_tokens=5)

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5 and len(text_of(message)) == 20


def test_streaming_accumulates_to_the_same_message(client: anthropic.Anthropic) -> None:
    prompt = "Explain consumer lag in one paragraph."
    with client.messages.stream(
        model=MODEL, max_tokens=512, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert streamed == text_of(final) == text_of(ask(client, prompt))
    assert len(streamed) > 48  # more than one text delta
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == pytest.approx(len(streamed) / 4, abs=1)


def test_stream_request_meets_its_fault_before_the_stream_starts(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.script("529")

    with (
        pytest.raises(anthropic.OverloadedError),
        client.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        stream.get_final_message()


def test_count_tokens_counts_system_and_messages(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(
        model=MODEL, system="s" * 400, messages=[{"role": "user", "content": "m" * 400}]
    )

    assert counted.input_tokens == pytest.approx(200, abs=2)


def test_repeated_cached_system_prefix_is_read_from_cache(client: anthropic.Anthropic) -> None:
    """The first call with a cache_control block writes the prefix, repeats read it."""
    persona = [{"type": "text", "text": "You are a backend expert. " * 80}]
    persona[0]["cache_control"] = {"type": "ephemeral"}  # type: ignore[assignment]

    first = ask(client, "first question", system=persona)
    second = ask(client, "second question", system=persona)
    uncached = ask(client, "third question", system="You are a backend expert. " * 80)

    assert first.usage.cache_creation_input_tokens == pytest.approx(520, abs=2)
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens < 10
    assert uncached.usage.cache_read_input_tokens == 0
    assert uncached.usage.input_tokens > 500


# Faults.


@pytest.mark.parametrize(
    ("spec", "error_class", "error_type"),
    [
        ("400", anthropic.BadRequestError, "invalid_request_error"),
        ("401", anthropic.AuthenticationError, "authentication_error"),
        ("403", anthropic.PermissionDeniedError, "permission_error"),
        ("404", anthropic.NotFoundError, "not_found_error"),
        ("413", anthropic.ContentTooLargeError, "request_too_large"),
        ("429", anthropic.RateLimitError, "rate_limit_error"),
        ("spend-limit", anthropic.EnforcedSpendLimitReachedError, "rate_limit_error"),
        ("500", anthropic.InternalServerError, "api_error"),
        ("529", anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_each_status_fault_raises_its_sdk_class(
    fake: FakeAnthropic,
    client: anthropic.Anthropic,
    spec: str,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    error = scripted_error(fake, client, spec, error_class)

    assert type(error) is error_class
    assert error.type == error_type
    assert error.request_id is not None and error.request_id.startswith("req_fake_")
    assert fake.stats().billed_by_key == {}
    assert text_of(ask(client, "hello"))  # the queue held one fault; the next call succeeds


@pytest.mark.parametrize(
    ("spec", "error_class", "error_code"),
    [
        ("spend-limit", anthropic.EnforcedSpendLimitReachedError, "enforced_spend_limit_reached"),
        ("500:should-retry=false", anthropic.InternalServerError, None),
    ],
    ids=["spend-limit-carries-its-error-code", "x-should-retry-overrides-the-status-rule"],
)
def test_a_fault_that_forbids_retries_is_seen_once(
    fake: FakeAnthropic,
    client: anthropic.Anthropic,
    spec: str,
    error_class: type[anthropic.APIStatusError],
    error_code: str | None,
) -> None:
    error = scripted_error(fake, client.with_options(max_retries=2), spec, error_class)

    if error_code is not None:
        assert getattr(error, "error_code", None) == error_code
    assert error.response.headers["x-should-retry"] == "false"
    assert fake.stats().total_calls == 1


def test_rate_limit_fault_shows_retry_after_ms_and_the_sdk_obeys_it(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    """Three scripted 429s with retry-after-ms=30: one seen, two retried through, then 200."""
    error = scripted_error(fake, client, "429:retry-after-ms=30:count=3", anthropic.RateLimitError)
    assert error.response.headers["retry-after-ms"] == "30"

    started = time.monotonic()
    answer = ask(client.with_options(max_retries=2), "hello")

    assert text_of(answer) and time.monotonic() - started >= 0.03
    assert fake.stats().status_counts() == {429: 3, 200: 1}


def test_timeout_fault_raises_api_timeout_and_still_bills(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    """The client gives up; the model ran anyway, which is how a retry double-bills."""
    fake.script("timeout:seconds=5")

    with pytest.raises(anthropic.APITimeoutError):
        ask(client.with_options(timeout=0.3), "slow one", metadata={"user_id": "req-slow"})

    wait_for(lambda: fake.stats().in_flight == 0, 5.0, "no call in flight")
    stats = fake.stats()
    assert stats.billed_by_key == {"req-slow": 1}
    assert [(call.status, call.outcome) for call in stats.calls] == [(0, "client_gone")]


def test_dropped_connection_raises_api_connection_error(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    error = scripted_error(fake, client, "drop", anthropic.APIConnectionError)

    assert not isinstance(error, anthropic.APITimeoutError)
    assert fake.stats().calls[-1].outcome == "dropped"


def test_refusal_is_an_answer_with_stop_reason_refusal(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.script("refusal")

    refused = ask(client, "something harmful")

    assert refused.stop_reason == "refusal"
    assert refused.stop_details is not None and refused.stop_details.type == "refusal"


def test_sticky_fault_applies_until_cleared(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.script("529:sticky")
    for _ in range(3):
        with pytest.raises(anthropic.OverloadedError):
            ask(client, "hello")

    fake.clear_faults()

    assert text_of(ask(client, "hello"))


def test_prompt_rules_and_inline_markers_pick_their_calls(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    """A match rule with count=1 fails each prompt once; an inline FAULT: marker always."""
    fake.script(Fault.http(400, match="POISON", count=1))

    with pytest.raises(anthropic.BadRequestError):
        ask(client, "a POISON pill")
    with pytest.raises(anthropic.BadRequestError):
        ask(client, "another POISON pill")
    assert text_of(ask(client, "a POISON pill"))  # its one failure is spent
    for _ in range(2):
        with pytest.raises(anthropic.NotFoundError):
            ask(client, "retired model please FAULT:404.")
    assert text_of(ask(client, "a healthy prompt"))


def test_queue_then_rules_then_sticky_order(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.script("503:sticky", "529", "400:match=BAD")

    with pytest.raises(anthropic.BadRequestError):
        ask(client, "BAD")  # the rule wins and leaves the queue alone
    with pytest.raises(anthropic.OverloadedError):
        ask(client, "fine")
    with pytest.raises(anthropic.ServiceUnavailableError):
        ask(client, "fine")


# Auth, rate limits, observability.


def test_configured_keys_accept_bearer_and_x_api_key_and_reject_others() -> None:
    with FakeAnthropic(api_keys={"good"}) as fake:
        with (
            anthropic.Anthropic(api_key="bad", base_url=fake.base_url, max_retries=0) as sdk,
            pytest.raises(anthropic.AuthenticationError) as caught,
        ):
            ask(sdk, "hello")
        with anthropic.Anthropic(api_key="good", base_url=fake.base_url, max_retries=0) as sdk:
            assert text_of(ask(sdk, "hello"))
        body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
        by_header = httpx2.post(
            f"{fake.base_url}/v1/messages", json=body, headers={"x-api-key": "good"}
        )

    assert caught.value.type == "authentication_error"
    assert by_header.status_code == 200


def test_unknown_model_id_is_not_found_when_models_are_configured() -> None:
    with (
        FakeAnthropic(models={MODEL}) as fake,
        anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0) as client,
    ):
        assert text_of(ask(client, "known model"))
        with pytest.raises(anthropic.NotFoundError, match="claude-retired-1"):
            client.messages.create(
                model="claude-retired-1",
                max_tokens=8,
                messages=[{"role": "user", "content": "hi"}],
            )


def test_rate_limits_send_headers_and_429_with_retry_after_ms() -> None:
    with (
        FakeAnthropic(rpm=2, tpm=100_000) as fake,
        anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0) as client,
    ):
        ok = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "one"}]
        )
        ask(client, "two")
        with pytest.raises(anthropic.RateLimitError) as caught:
            ask(client, "three")
        with anthropic.Anthropic(api_key="other", base_url=fake.base_url, max_retries=0) as sdk:
            assert text_of(ask(sdk, "buckets are per key"))

    assert ok.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert ok.headers["anthropic-ratelimit-tokens-limit"] == "100000"
    assert ok.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    limited = caught.value.response.headers
    assert limited["anthropic-ratelimit-requests-remaining"] == "0"
    assert 0 < int(limited["retry-after-ms"]) <= 30_000  # 2 a minute: one back in <= 30 s


def test_calls_and_billing_are_counted_per_request_key(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.script("529")
    with pytest.raises(anthropic.OverloadedError):
        ask(client, "q", metadata={"user_id": "req-1"})
    ask(client, "q", metadata={"user_id": "req-1"})
    ask(client, "unkeyed")
    ask(client, "unkeyed")

    stats = fake.stats()
    hashed = next(key for key in stats.calls_by_key if key.startswith("messages:"))
    assert stats.total_calls == 4
    assert stats.calls_by_key == {"req-1": 2, hashed: 2}
    assert stats.billed_by_key == {"req-1": 1, hashed: 2}
    assert [call.status for call in stats.calls] == [529, 200, 200, 200]

    fake.reset()

    assert fake.stats().total_calls == 0 and fake.stats().calls == ()


def test_high_water_mark_of_concurrent_calls(fake: FakeAnthropic) -> None:
    """50 concurrent calls are all in flight at once; a client cap of 10 holds it to 10.

    The uncapped burst's 1 s latency is there so that all 50 arrive before the first leaves,
    even on a loaded machine where the SDK takes tens of ms to send each call.
    """

    async def burst(cap: int) -> None:
        limit = asyncio.Semaphore(cap)
        async with anthropic.AsyncAnthropic(
            api_key="k", base_url=fake.base_url, max_retries=0
        ) as sdk:

            async def one(index: int) -> None:
                async with limit:
                    await sdk.messages.create(
                        model=MODEL,
                        max_tokens=64,
                        messages=[{"role": "user", "content": f"question {index}"}],
                    )

            await asyncio.gather(*(one(index) for index in range(50)))

    fake.set_latency(1000)
    asyncio.run(burst(50))
    uncapped = fake.stats()
    fake.reset()
    fake.set_latency((100, 120))
    asyncio.run(burst(10))
    capped = fake.stats()

    assert uncapped.max_in_flight == 50 and uncapped.total_calls == 50
    assert 1 < capped.max_in_flight <= 10 and capped.total_calls == 50
    assert all(0.1 <= call.seconds < 1.0 for call in capped.calls)


# Batches.


def test_batch_runs_to_ended_with_results(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    prompts = ["first", "second", "broken FAULT:400"]
    requests = [batch_item(f"item-{index}", prompt) for index, prompt in enumerate(prompts)]
    created = client.messages.batches.create(requests=requests)
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3

    wait_for(
        lambda: client.messages.batches.retrieve(created.id).processing_status == "ended",
        5.0,
        "the batch to end",
    )
    ended = client.messages.batches.retrieve(created.id)
    results = {line.custom_id: line.result for line in client.messages.batches.results(created.id)}
    page = client.messages.batches.list(limit=10)

    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 1
    succeeded = results["item-0"]
    assert succeeded.type == "succeeded"
    assert "You asked: first" in text_of(succeeded.message)
    assert succeeded.message.usage.service_tier == "batch"
    assert results["item-2"].type == "errored"
    assert [batch.id for batch in page.data] == [created.id]
    assert page.first_id == page.last_id == created.id and page.has_more is False
    assert len(fake.stats().billed_by_key) == 2

    deleted = client.messages.batches.delete(created.id)
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)


def test_canceled_batch_ends_with_canceled_items(client: anthropic.Anthropic) -> None:
    created = client.messages.batches.create(requests=[batch_item("only", "q")])
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(created.id)  # in progress: cancel first

    canceling = client.messages.batches.cancel(created.id)
    ended = client.messages.batches.retrieve(created.id)

    assert canceling.processing_status == "canceling"
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
    assert [line.result.type for line in client.messages.batches.results(created.id)] == [
        "canceled"
    ]


def test_batch_list_pages_newest_first(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[batch_item("x", "q")]).id for _ in range(3)]

    first_page = client.messages.batches.list(limit=2)
    every = [batch.id for batch in client.messages.batches.list(limit=2)]  # auto-paginates

    assert [batch.id for batch in first_page.data] == ids[::-1][:2] and first_page.has_more
    assert every == ids[::-1]


# Control API, lifecycle, command line.


def test_control_api_scripts_reads_and_resets_over_http(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    """What a test in another process does: script faults and latency, read stats, reset."""
    with httpx2.Client(base_url=f"{fake.base_url}/_fake") as control:
        scripted = control.post("/script", json={"faults": ["529:count=2", {"kind": "drop"}]})
        assert scripted.status_code == 200 and scripted.json() == {"queued_faults": 3}
        bad = control.post("/script", json={"faults": ["teapot"]})
        assert bad.status_code == 400 and "spend-limit" in bad.json()["error"]["message"]
        assert control.post("/latency", json={"ms": "50-60"}).status_code == 200

        for _ in range(2):
            with pytest.raises(anthropic.OverloadedError):
                ask(client, "hello")
        stats = FakeStats.from_json(control.get("/stats").json())
        assert stats.total_calls == 2 and stats.queued_faults == 1
        assert stats.status_counts() == {529: 2}
        assert all(call.seconds >= 0.05 for call in stats.calls)

        assert control.post("/reset").status_code == 200
        assert control.get("/stats").json()["total_calls"] == 0
        assert control.post("/limits", json={"rpm": 1}).status_code == 200
        ask(client, "allowed")
        with pytest.raises(anthropic.RateLimitError):
            ask(client, "over the limit")


def test_stop_joins_the_server_thread() -> None:
    fake = FakeAnthropic().start()
    url = fake.base_url
    fake.stop()
    fake.stop()  # idempotent

    assert not [thread for thread in threading.enumerate() if thread.name == "fake-anthropic"]
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{url}/_fake/stats")


def test_async_context_manager_serves_another_loop() -> None:
    async def run() -> str:
        async with (
            FakeAnthropic() as fake,
            anthropic.AsyncAnthropic(api_key="k", base_url=fake.base_url, max_retries=0) as sdk,
        ):
            message = await sdk.messages.create(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "async"}]
            )
            return text_of(message)

    assert "You asked: async" in asyncio.run(run())


@pytest.mark.parametrize(
    ("spec", "advice"),
    [
        ("teapot", "start with an HTTP status"),
        ("429:retry-after-ms=soon", "retry-after-ms='soon' is not valid"),
        ("429:colour=red", "unknown option"),
        ("200", "from 400 to 599"),
        ("529:count=0", "count=1 or more"),
    ],
)
def test_bad_fault_specs_say_what_to_change(spec: str, advice: str) -> None:
    with pytest.raises(FaultSpecError, match=advice):
        Fault.parse(spec)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "http"],
        ["--latency-ms", "slow"],
        ["--latency-ms", "500-100"],
        ["--fault", "teapot"],
        ["--rpm", "0"],
        ["--unknown"],
    ],
)
def test_main_rejects_a_bad_argument_with_one_line_and_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("fake-anthropic: ")


def test_main_serves_as_a_process_until_sigterm() -> None:
    """The process prints its URL, obeys --fault, answers the control API, exits 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchboard.devtools.fake_anthropic",
            "--port",
            "0",
            "--fault",
            "529",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 30.0)
        assert readable, "the fake printed no URL within 30 s"
        line = process.stdout.readline().strip()
        assert line.startswith("fake-anthropic listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        with anthropic.Anthropic(api_key="k", base_url=base_url, max_retries=0) as client:
            with pytest.raises(anthropic.OverloadedError):
                ask(client, "hello")
            assert text_of(ask(client, "hello"))
        assert httpx2.get(f"{base_url}/_fake/stats").json()["total_calls"] == 2
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
