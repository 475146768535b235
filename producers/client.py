"""The client upstream services use: submit a request, await its one terminal response.

Responses are correlated by request id (the response record's key) on the shared response
topic, or on a reply topic of the caller's own. The client starts following the response topic
before it submits anything, so no response can slip past, and keeps the first response per
request id (a duplicate, should one ever be written, is counted and ignored).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message, Producer
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from switchboard.core import headers as h
from switchboard.core import tracing
from switchboard.core.aio_producer import AsyncProducer, Outbound
from switchboard.core.envelope import (
    Keyring,
    KeyringSource,
    KeyUnavailable,
    encrypting,
)
from switchboard.core.kafka_clients import producer_config
from switchboard.core.routing import routing_headers, signed_routing
from switchboard.core.serde import REQUEST, RESPONSE, Codec, make_codec
from switchboard.core.settings import DEFAULTS
from switchboard.core.status import ResponseStatus
from switchboard.core.tail import TopicTail, read_once
from switchboard.core.tenants import sign
from switchboard.core.topics import Topics


class ResultTimeout(TimeoutError):
    """Raised when no terminal response arrived within the timeout."""


@dataclass(frozen=True)
class Response:
    """A terminal response, as the response topic carries it."""

    request_id: str
    status: str
    specialist: str
    backend: str
    content: str
    record: dict[str, Any] = field(repr=False)

    @property
    def answered(self) -> bool:
        return self.status == ResponseStatus.ANSWERED

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of ``switchboard submit --json``."""
        r = self.record
        return {
            "request_id": self.request_id,
            "status": self.status,
            "specialist": self.specialist,
            "backend": self.backend,
            "model": r.get("model"),
            "content": self.content,
            "tenant": r.get("tenant"),
            "usage": r.get("usage"),
            "cost_micro_usd": r.get("cost_micro_usd", 0),
            "stage_latency_ms": r.get("stage_latency_ms") or {},
            "attempts": r.get("attempts", 1),
            "error_code": r.get("error_code"),
            "error_message": r.get("error_message"),
            "dlq": r.get("dlq"),
        }


def build_request(
    text: str,
    *,
    tenant: str = "default",
    specialist: str | None = None,
    request_id: str | None = None,
    deadline_s: float | None = None,
    priority: str = "NORMAL",
    reply_to: str | None = None,
    metadata: Mapping[str, str] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> dict[str, Any]:
    """A SpecialistRequest record (the Avro contract's fields)."""
    now = int(time.time() * 1000)
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "tenant": tenant,
        "text": text,
        "specialist": specialist,
        "prompt": "",
        "priority": priority,
        "deadline_ms": now + int(deadline_s * 1000) if deadline_s is not None else None,
        "reply_to": reply_to,
        "attempt": 0,
        "traceparent": traceparent,
        "tracestate": tracestate,
        "created_at_ms": now,
        "metadata": dict(metadata or {}),
    }


#: Responses a client keeps for ``result()`` before the oldest is dropped (see ``_Responses``).
DEFAULT_KEEP_RESPONSES = 100_000


class _Responses:
    """Follows the response topic and keeps the first response for each awaited request id.

    Memory is bounded: at most ``keep`` responses are held, oldest dropped first (with their
    ids, so a late duplicate of a dropped one is no longer counted). A long-lived client that
    collects each result soon after it arrives never notices; call ``forget(id)`` to drop one
    early. Responses sealed with a key the client lacks count toward ``keep`` too, and go
    first: past the bound the oldest sealed one is dropped with its id, and ``result()`` for it
    then waits for another copy (a replay, say) and raises ``ResultTimeout`` without one.
    """

    def __init__(
        self, kafka: dict[str, Any], topic: str, codec: Codec, keep: int = DEFAULT_KEEP_RESPONSES
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep_responses must be at least 1, not {keep}")
        self._codec = codec
        self._kafka = kafka
        self._topic = topic
        self._keep = keep
        self._lock = threading.Condition()
        self._wanted: set[str] = set()
        self._results: OrderedDict[str, Response] = OrderedDict()
        self._futures: dict[
            str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Response]]]
        ] = {}
        #: Awaited responses sealed with a key this client lacked when they arrived, with
        #: why, oldest first: ``wait`` opens them again (the keyring may have reloaded since)
        #: or raises the error, naming the key, at once instead of timing out.
        self._unreadable: OrderedDict[str, tuple[bytes, KeyUnavailable]] = OrderedDict()
        self.duplicates = 0
        self._tail = TopicTail(kafka, topic, self._on_message, name="client-responses")

    def expect(self, request_id: str) -> None:
        with self._lock:
            self._wanted.add(request_id)

    def _on_message(self, msg: Message, *, lookup: bool = False) -> None:
        key = msg.key()
        if not key:
            return
        request_id = key.decode("utf-8", "replace")
        with self._lock:
            if request_id not in self._wanted:
                return
            if request_id in self._results:
                # A lookup and the live tail may both read a response that just arrived.
                self.duplicates += 0 if lookup else 1
                return
        self._admit(request_id, msg.value() or b"")

    def _admit(self, request_id: str, value: bytes) -> Response | None:
        """Decode and hold the response to ``request_id`` (the first one held stays); None
        when it is sealed with a key this client lacks (held as unreadable, and its waiters
        told why) and no readable copy is held."""
        try:
            record = self._codec.decode(RESPONSE, value, self._topic)
        except KeyUnavailable as exc:
            with self._lock:
                held = self._results.get(request_id)
                if held is not None or request_id not in self._wanted:
                    return held  # a readable copy came first, or the id was forgotten
                self._unreadable[request_id] = (value, exc)
                self._unreadable.move_to_end(request_id)
                self._trim()
                waiters = self._futures.pop(request_id, [])
                self._lock.notify_all()
            for loop, future in waiters:
                loop.call_soon_threadsafe(_reject, future, exc)
            return None
        response = Response(
            request_id=request_id,
            status=record["status"],
            specialist=record["specialist"],
            backend=record.get("backend") or "",
            content=record.get("content") or "",
            record=record,
        )
        with self._lock:
            held = self._results.get(request_id)
            if held is not None:
                return held
            self._unreadable.pop(request_id, None)
            if request_id not in self._wanted:
                return response  # forgotten while it was decoded: not held
            self._results[request_id] = response
            self._trim()
            waiters = self._futures.pop(request_id, [])
            self._lock.notify_all()
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future, response)
        return response

    def _trim(self) -> None:
        """Drop the oldest responses past ``keep``, sealed ones first (with the lock held)."""
        while len(self._results) + len(self._unreadable) > self._keep:
            held = self._unreadable or self._results
            dropped, _ = held.popitem(last=False)
            self._wanted.discard(dropped)

    def _reopened(self, request_id: str, sealed: tuple[bytes, KeyUnavailable]) -> Response:
        """``sealed``, the unreadable response to ``request_id`` as ``wait`` found it, opened
        again; ``KeyUnavailable`` when the keyring still lacks its key. The caller passes what
        it read under the lock: by now the tail, another waiter or ``forget`` may have removed
        it from ``_unreadable``."""
        value, exc = sealed
        response = self._admit(request_id, value)
        if response is None:
            raise exc
        return response

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)

    def lookup(self, request_ids: set[str], since_ms: int, timeout_s: float) -> dict[str, Response]:
        """Read the topic from ``since_ms`` up to its end now, keeping the responses of
        ``request_ids`` (held for ``wait`` afterwards, like any other)."""
        for request_id in request_ids:
            self.expect(request_id)
        read_once(
            self._kafka,
            self._topic,
            lambda m: self._on_message(m, lookup=True),
            since_ms=since_ms,
            timeout_s=timeout_s,
            name="client-lookup",
        )
        with self._lock:
            return {i: self._results[i] for i in request_ids if i in self._results}

    def holds(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._results

    def wait(self, request_id: str, timeout_s: float) -> Response:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                held = self._results.get(request_id)
                if held is not None:
                    return held
                sealed = self._unreadable.get(request_id)
                if sealed is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _timeout(request_id, timeout_s)
                self._lock.wait(remaining)
        return self._reopened(request_id, sealed)

    async def wait_async(self, request_id: str, timeout_s: float) -> Response:
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._results.get(request_id)
            if held is not None:
                return held
            sealed = self._unreadable.get(request_id)
            if sealed is None:
                future: asyncio.Future[Response] = loop.create_future()
                self._futures.setdefault(request_id, []).append((loop, future))
        if sealed is not None:
            return self._reopened(request_id, sealed)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise _timeout(request_id, timeout_s) from None

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._wanted.discard(request_id)
            self._results.pop(request_id, None)
            self._unreadable.pop(request_id, None)

    def close(self) -> None:
        self._tail.stop()


def _end_send(span: Span, err: Any, msg: Any) -> None:
    """End a ``send`` span with where its record landed, or why it did not."""
    if err is not None:
        span.set_status(Status(StatusCode.ERROR, str(err)))
    elif msg is not None:
        span.set_attribute(tracing.PARTITION, str(msg.partition()))
        span.set_attribute(tracing.OFFSET, msg.offset())
    span.end()


def _send_ender(span: Span | None) -> Any:
    """A delivery callback that ends ``span`` (None without one)."""
    if span is None:
        return None
    return lambda err, msg: _end_send(span, err, msg)


def _resolve(future: asyncio.Future[Response], response: Response) -> None:
    if not future.done():
        future.set_result(response)


def _reject(future: asyncio.Future[Response], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _timeout(request_id: str, timeout_s: float) -> ResultTimeout:
    return ResultTimeout(
        f"no response for request {request_id} within {timeout_s:g}s: is the pipeline running "
        "(`switchboard up`)? A larger --wait may help under load"
    )


class _ClientBase:
    def __init__(
        self,
        kafka: dict[str, Any],
        *,
        topic_prefix: str = "switchboard",
        codec: Codec | None = None,
        tenant: str = "default",
        reply_topic: str | None = None,
        keep_responses: int = DEFAULT_KEEP_RESPONSES,
        lookback_s: float = DEFAULTS.dedup_window_s,
        signing_key: tuple[str, str | bytes] | None = None,
        keyring: Keyring | KeyringSource | None = None,
    ) -> None:
        """``keyring``: seal prompts with its primary key and open answers with any of its
        keys (``switchboard.core.envelope``); a ``codec`` made by ``content_codec`` brings its
        own."""
        self.topics = Topics(topic_prefix)
        #: (key id, secret) from the tenants file: every request is signed with it.
        self._signing_key = (
            None
            if signing_key is None
            else (
                signing_key[0],
                signing_key[1].encode() if isinstance(signing_key[1], str) else signing_key[1],
            )
        )
        self.lookback_s = lookback_s
        self.codec = encrypting(codec or make_codec(None), keyring)
        self.tenant = tenant
        self.reply_topic = reply_topic
        self._responses = _Responses(
            kafka, reply_topic or self.topics.responses, self.codec, keep_responses
        )
        #: Asked once: with tracing off a submit creates no span and reads no context.
        self._tracer = tracing.tracer()

    def _outbound(self, text: str, **kwargs: Any) -> tuple[str, Outbound, Span | None]:
        """The request's id, its record and, with tracing on, its ``send`` span (ended by
        the caller once the broker acknowledged the record)."""
        kwargs.setdefault("tenant", self.tenant)
        request = build_request(text, reply_to=self.reply_topic, **kwargs)
        request_id = request["request_id"]
        self._responses.expect(request_id)
        # The routing facts (id, tenant, reply topic; specialist, priority, deadline, schema
        # when the text names a specialist): the router routes from them without decoding.
        headers: list[tuple[str, bytes | str | None]] = list(routing_headers(request))
        topic = self.topics.requests
        span = None
        if self._tracer is not None:
            span = self._send_span(self._tracer, request, topic, headers)
        elif request["traceparent"]:
            # Not tracing ourselves: the caller's context travels on unchanged.
            headers.append((h.TRACEPARENT, str(request["traceparent"]).encode()))
            if request["tracestate"]:
                headers.append((h.TRACESTATE, str(request["tracestate"]).encode()))
        value = self.codec.encode(REQUEST, request, topic)
        if self._signing_key is not None:
            key_id, secret = self._signing_key
            signature = sign(
                value, request_id, str(request["tenant"]), key_id, secret, signed_routing(headers)
            )
            headers += [(h.KEY_ID, key_id.encode()), (h.SIGNATURE, signature.encode())]
        return request_id, Outbound(topic, value, request_id.encode(), headers), span

    @staticmethod
    def _send_span(
        tracer: trace.Tracer, request: dict[str, Any], topic: str, headers: list[Any]
    ) -> Span:
        """Start the request's ``send`` span (the child of the caller's ``traceparent``, else
        of the current span), put its context in ``headers`` and in the request's trace
        fields, with the tenant as baggage."""
        given = [(h.TRACEPARENT, request["traceparent"]), (h.TRACESTATE, request["tracestate"])]
        parent = (
            tracing.extract([(k, v) for k, v in given if v]) if request["traceparent"] else None
        )
        parent = tracing.with_tenant(parent or otel_context.get_current(), request["tenant"])
        attrs = tracing.message_attributes("send", topic, key=request["request_id"].encode())
        attrs[tracing.REQUEST_ID] = request["request_id"]
        attrs[tracing.TENANT] = request["tenant"]
        span = tracer.start_span(f"send {topic}", parent, SpanKind.PRODUCER, attrs)
        tracing.inject(headers, trace.set_span_in_context(span, parent))
        request["traceparent"], request["tracestate"] = tracing.traceparent(span)
        return span

    def _lookup(
        self, request_ids: Iterable[str], since_ms: int | None, timeout_s: float
    ) -> dict[str, Response]:
        if since_ms is None:
            since_ms = int((time.time() - self.lookback_s) * 1000)
        return self._responses.lookup(set(request_ids), since_ms, timeout_s)

    def _already_answered(self, kwargs: Mapping[str, Any]) -> str | None:
        """The given request id when its response is already held (a lookup found it): its
        submit sends nothing, since the router would drop it as answered anyway."""
        request_id = kwargs.get("request_id")
        return request_id if request_id and self._responses.holds(request_id) else None

    def expect(self, request_id: str) -> None:
        """Await ``request_id`` too, though this client did not submit it (e.g. a request
        another process sent, or one replayed from the DLQ)."""
        self._responses.expect(request_id)

    def forget(self, request_id: str) -> None:
        """Stop awaiting ``request_id`` and drop its response if one is held."""
        self._responses.forget(request_id)

    @property
    def held_responses(self) -> int:
        """Responses held for ``result()``: at most ``keep_responses``."""
        return len(self._responses)

    @property
    def duplicate_responses(self) -> int:
        return self._responses.duplicates


class SwitchboardClient(_ClientBase):
    """Blocking client: ``submit`` returns once the request is durably on the requests topic."""

    def __init__(self, kafka: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(kafka, **kwargs)
        self._producer = Producer(producer_config(kafka))

    def lookup(
        self, request_ids: Iterable[str], *, since_ms: int | None = None, timeout: float = 60.0
    ) -> dict[str, Response]:
        """The responses already on the response topic for ``request_ids``, read from
        ``since_ms`` (default: now minus ``lookback_s``, the pipeline's dedup window). Found ones
        are held for ``result()``, and ``submit`` with such an id sends nothing: a resumed job
        gets its earlier answers instead of waiting for ones the router will never route."""
        return self._lookup(request_ids, since_ms, timeout)

    def submit(self, text: str, **kwargs: Any) -> str:
        """Submit one request; returns its request id after the broker acknowledged it (at
        once, sending nothing, when ``lookup`` found the id already answered)."""
        if answered := self._already_answered(kwargs):
            return answered
        request_id, out, span = self._outbound(text, **kwargs)
        done = threading.Event()
        errors: list[Any] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            if span is not None:
                _end_send(span, err, msg)
            done.set()

        self._producer.produce(
            out.topic, out.value, out.key, headers=list(out.headers), on_delivery=on_delivery
        )
        while not done.is_set():
            self._producer.poll(0.05)
        if errors:
            raise ConnectionError(f"could not submit {request_id}: {errors[0]}")
        return request_id

    def submit_many(self, items: list[dict[str, Any]]) -> list[str]:
        """Submit many requests with one flush; each item holds ``text`` and submit's keywords."""
        ids = []
        for item in items:
            item = dict(item)
            if answered := self._already_answered(item):
                ids.append(answered)
                continue
            request_id, out, span = self._outbound(item.pop("text"), **item)
            self._producer.produce(
                out.topic,
                out.value,
                out.key,
                headers=list(out.headers),
                on_delivery=_send_ender(span),
            )
            self._producer.poll(0)
            ids.append(request_id)
        if self._producer.flush(60) != 0:
            raise ConnectionError("could not submit every request within 60s")
        return ids

    def result(self, request_id: str, timeout: float = 60.0) -> Response:
        """The terminal response of ``request_id``; raises ResultTimeout after ``timeout`` s."""
        return self._responses.wait(request_id, timeout)

    def ask(self, text: str, timeout: float = 60.0, **kwargs: Any) -> Response:
        return self.result(self.submit(text, **kwargs), timeout)

    def close(self) -> None:
        try:
            self._producer.flush(10)  # may raise the broker's refusal (error_cb)
        finally:
            self._responses.close()

    def __enter__(self) -> SwitchboardClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncSwitchboardClient(_ClientBase):
    """asyncio client: many requests in flight from one task or many."""

    def __init__(self, kafka: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(kafka, **kwargs)
        self._producer = AsyncProducer(producer_config(kafka))

    async def lookup(
        self, request_ids: Iterable[str], *, since_ms: int | None = None, timeout: float = 60.0
    ) -> dict[str, Response]:
        """``SwitchboardClient.lookup``, off the event loop."""
        return await asyncio.to_thread(self._lookup, list(request_ids), since_ms, timeout)

    async def submit(self, text: str, **kwargs: Any) -> str:
        if answered := self._already_answered(kwargs):
            return answered
        request_id, out, span = self._outbound(text, **kwargs)
        try:
            delivered = await self._producer.send(out)
        except Exception as exc:
            if span is not None:
                _end_send(span, exc, None)
            raise
        if span is not None:
            _end_send(span, None, delivered)
        return request_id

    async def result(self, request_id: str, timeout: float = 60.0) -> Response:
        return await self._responses.wait_async(request_id, timeout)

    async def ask(self, text: str, timeout: float = 60.0, **kwargs: Any) -> Response:
        return await self.result(await self.submit(text, **kwargs), timeout)

    async def close(self) -> None:
        try:
            await asyncio.to_thread(self._producer.close)
        finally:
            await asyncio.to_thread(self._responses.close)

    async def __aenter__(self) -> AsyncSwitchboardClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
