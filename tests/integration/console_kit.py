"""Shared by the console's tests: dead letters written the way a worker writes them, and a
console served by uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from confluent_kafka import Message

from consumers.outcomes import Attempt, Outcomes, now_ms
from producers.client import build_request
from switchboard.console.app import Console, create_app
from switchboard.console.command import build_console
from switchboard.core import headers as h
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.classify import Failure
from switchboard.core.errors import ErrorClass
from switchboard.core.kafka_clients import producer_config
from switchboard.core.serde import REQUEST, Codec, make_codec
from switchboard.core.settings import Settings
from switchboard.core.topics import Topics

PERMANENT = Failure(
    ErrorClass.PERMANENT,
    "invalid_request",
    "prompt rejected",
    "BadRequestError",
    provider_status=400,
)
EXHAUSTED = Failure(
    ErrorClass.TRANSIENT, "overloaded", "Overloaded", "OverloadedError", provider_status=529
)


@dataclass(frozen=True)
class Seed:
    request_id: str
    specialist: str
    tenant: str
    failure: Failure
    text: str = ""


async def worker_failure(
    outcomes: Outcomes,
    codec: Codec,
    topic: str,
    request: dict[str, Any],
    failure: Failure,
    *,
    attempts: int,
    partition: int,
    offset: int,
    now: int,
) -> list[Outbound]:
    """What a worker writes when ``request``, read from ``topic`` at ``partition``/``offset``,
    failed ``attempts`` times, the last with ``failure``: its dead letter (with the history of
    the earlier attempts) and its ``failed`` response."""
    request["attempt"] = attempts - 1
    msg = Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=request["request_id"].encode(),
        value=codec.encode(REQUEST, request, topic),
        headers=[
            (h.REQUEST_ID, request["request_id"].encode()),
            (h.TENANT, request["tenant"].encode()),
            (h.SPECIALIST, request["specialist"].encode()),
        ],
        timestamp=(1, now),
    )
    history = [Attempt(a, now, failure.error_type, failure.message) for a in range(1, attempts)]
    return await outcomes.fail(
        msg,
        failure,
        request=request,
        history=history,
        specialist=request["specialist"],
        attempts=attempts,
    )


async def _seed(settings: Settings, kafka: dict[str, Any], seeds: list[Seed]) -> None:
    topics = Topics(settings.topic_prefix)
    codec = make_codec(None)
    producer = AsyncProducer(producer_config(kafka))
    now = now_ms()

    async def one(i: int, s: Seed) -> list[Outbound]:
        outcomes = Outcomes(
            codec, topics, producer, topics.prefix + ".worker." + s.specialist, "model"
        )
        text = s.text or f"/{s.specialist} question {i}"
        request = build_request(
            text, tenant=s.tenant, specialist=s.specialist, request_id=s.request_id
        )
        attempts = 5 if s.failure is EXHAUSTED else 1
        return await worker_failure(
            outcomes,
            codec,
            topics.tasks(s.specialist),
            request,
            s.failure,
            attempts=attempts,
            partition=i % settings.partitions,
            offset=i,
            now=now,
        )

    try:
        responses = await asyncio.gather(*(one(i, s) for i, s in enumerate(seeds)))
        await producer.send_all([r for rs in responses for r in rs])
    finally:
        await asyncio.to_thread(producer.close)


def seed(settings: Settings, kafka: dict[str, Any], seeds: list[Seed]) -> None:
    """Dead letters (and their ``failed`` responses) as a worker writes them."""
    asyncio.run(_seed(settings, kafka, seeds))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedConsole:
    """``switchboard console``'s app under uvicorn on a thread, for a browser or httpx."""

    def __init__(self, settings: Settings, kafka: dict[str, Any]) -> None:
        self.console: Console = build_console(settings, kafka)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(self.console), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedConsole:
        self._thread.start()
        until(lambda: self.server.started, 30)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)


def until(condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            assert value, "condition not met in time"
            return value
        time.sleep(0.1)
