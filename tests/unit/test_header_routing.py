"""Header routing on the in-memory runtime: the router routes a record with the client's routing
headers from those headers alone and forwards its original bytes; the worker validates the body
with the router's reasons before any model call; records without the headers, free text and
refusals take the decoding path; a forged routing header cannot pass a signed tenant's fence."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from consumers.answered import AnsweredLedger
from consumers.outcomes import Stage
from consumers.resilience.breaker import CircuitBreaker
from consumers.resilience.ratelimit import TenantLimiter
from consumers.router import RouterRules
from consumers.runtime.memory import MemoryRuntime, MemorySink
from consumers.specialists.backends import Answer
from consumers.validation import ROUTING_MISMATCH, BodyRules, admit_routed
from consumers.worker import SpecialistWorker
from switchboard.core import headers as h
from switchboard.core.errors import RequestInvalid
from switchboard.core.routing import routing_headers, signed_routing
from switchboard.core.serde import REQUEST, SingleObjectCodec
from switchboard.core.settings import SPECIALISTS
from switchboard.core.status import ResponseStatus
from switchboard.core.tenants import TenantsConfig, TenantsSource, sign
from tests.support import FakeClock

from .memory_kit import (
    CODEC,
    TOPICS,
    decoded_response,
    encoded,
    header,
    request,
    responses,
    router_runtime,
    strategy,
)

SECRET = "0123456789abcdef-acme"
CONFIG = TenantsConfig.model_validate(
    {
        "unknown_tenants": "reject",
        "tenants": {
            "acme": {
                "specialists": ["backend"],
                "require_signature": True,
                "signing_keys": {"k1": SECRET},
            },
            "open": {},
        },
    }
)


class CountingCodec(SingleObjectCodec):
    """Counts request decodes: the header path must not decode."""

    def __init__(self) -> None:
        super().__init__()
        self.decodes = 0

    def decode(self, contract: str, data: bytes | None, topic: str) -> dict[str, Any]:
        self.decodes += contract == REQUEST
        return super().decode(contract, data, topic)


class Backend:
    name = "instant"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def answer_now(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        self.prompts.append(prompt)
        return Answer(ResponseStatus.ANSWERED, f"ok: {prompt}", backend="instant")

    async def answer(self, specialist: str, prompt: str, request: Mapping[str, Any]) -> Answer:
        return self.answer_now(specialist, prompt, request)


class Stages:
    """The router and the backend worker, each on its in-memory runtime, one sink each."""

    def __init__(
        self, config: TenantsConfig = CONFIG, router_rules: RouterRules | None = None, **rules: Any
    ) -> None:
        self.sink = MemorySink()
        self.router_runtime, self.router = router_runtime(
            self.sink, tenants=TenantsSource(config), rules=router_rules
        )
        self.codec = CountingCodec()
        self.router._codec = self.codec
        self.worker_sink = MemorySink()
        failures = strategy(Stage.MODEL, self.worker_sink)
        self.backend = Backend()
        self.worker = SpecialistWorker(
            "backend",
            codec=failures.outcomes.codec,
            outcomes=failures.outcomes,
            index=AnsweredLedger(3600),
            backend=self.backend,
            failures=failures,
            breaker=CircuitBreaker("backend:test", failure_threshold=2, open_s=0.05),
            rules=BodyRules(**rules),
        )
        self.worker_runtime = MemoryRuntime(self.worker.handle, failures, self.worker_sink)

    def send(
        self,
        record: dict[str, Any],
        *,
        value: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
        key: tuple[str, str] | None = None,
    ) -> None:
        """As the client sends it: its routing headers (signed with ``key``)."""
        value = encoded(record, TOPICS.requests) if value is None else value
        hdrs: list[tuple[str, bytes | None]] = (
            list(routing_headers(record)) if headers is None else headers
        )
        if key is not None:
            signature = sign(
                value,
                record["request_id"],
                record["tenant"],
                key[0],
                key[1].encode(),
                signed_routing(hdrs),
            )
            hdrs += [(h.KEY_ID, key[0].encode()), (h.SIGNATURE, signature.encode())]
        asyncio.run(
            self.router_runtime.feed(
                TOPICS.requests, value, key=record["request_id"].encode(), headers=hdrs
            )
        )

    def tasks(self, specialist: str = "backend") -> list[Any]:
        return self.sink.records(TOPICS.tasks(specialist))

    def all_tasks(self) -> int:
        return sum(len(self.sink.records(TOPICS.tasks(s))) for s in SPECIALISTS)

    def work(self) -> list[dict[str, Any]]:
        """Feed every backend task to the worker; its responses."""
        for task in self.tasks():
            asyncio.run(
                self.worker_runtime.feed(
                    TOPICS.tasks("backend"), task.value(), key=task.key(), headers=task.headers()
                )
            )
        return responses(self.worker_sink)


def test_a_header_routed_request_is_forwarded_byte_for_byte_without_a_decode() -> None:
    stages = Stages()
    record = request("/backend  size a pool", tenant="open")
    value = encoded(record, TOPICS.requests)
    stages.send(record, value=value)
    [task] = stages.tasks()
    assert task.value() == value and task.key() == record["request_id"].encode()
    assert stages.codec.decodes == 0 and stages.router_runtime.fast_path == 1
    assert header(task, h.SPECIALIST) == "backend" and header(task, h.ROUTED)
    [response] = stages.work()
    assert (response["status"], response["content"]) == ("answered", "ok: size a pool")
    assert response["request_id"] == record["request_id"]
    assert stages.backend.prompts == ["size a pool"]
    assert "route" in response["stage_latency_ms"] and "queue" in response["stage_latency_ms"]


class SyncingLedger(AnsweredLedger):
    """An index that has not read the answers up to an assignment until ``sync`` is awaited
    (as after a start or a rebalance)."""

    def __init__(self) -> None:
        super().__init__(3600)
        self.syncs = 0
        self._synced = False

    def synced(self, since: float) -> bool:
        return self._synced

    async def sync(self, since: float) -> None:
        await asyncio.sleep(0)
        self.syncs += 1
        self._synced = True


def test_a_request_fetched_before_the_index_sync_is_forwarded_from_its_headers_after_it() -> None:
    # Records fetched between an assignment and its barrier wait for the sync, then take the
    # header path as every later record does: the original bytes, no validate-and-encode.
    stages = Stages()
    index = SyncingLedger()
    stages.router._index = index
    record = request("/backend  size a pool", tenant="open")
    value = encoded(record, TOPICS.requests)
    stages.send(record, value=value)
    [task] = stages.tasks()
    assert index.syncs == 1 and stages.router_runtime.fast_path == 0  # it waited
    assert task.value() == value and header(task, h.ROUTED)  # forwarded, not re-encoded
    [response] = stages.work()
    assert (response["status"], response["content"]) == ("answered", "ok: size a pool")
    stages.send(record)  # after the sync: a duplicate, dropped on the header path at once
    assert len(stages.tasks()) == 1 and stages.router.duplicates == 1


def test_batch_priority_goes_to_the_batch_topic_from_its_header() -> None:
    stages = Stages()
    stages.send(request("/backend size a pool", tenant="open", priority="BATCH"))
    assert len(stages.sink.records(TOPICS.batch_tasks("backend"))) == 1
    assert stages.codec.decodes == 0


def test_a_duplicate_is_dropped_on_the_header_path() -> None:
    stages = Stages()
    record = request("/backend size a pool", tenant="open")
    stages.send(record)
    stages.send(record)
    assert len(stages.tasks()) == 1 and stages.router.duplicates == 1
    assert stages.codec.decodes == 0


def test_records_without_routing_headers_and_free_text_take_the_decoding_path() -> None:
    stages = Stages()
    plain = request("/backend size a pool", tenant="open")
    stages.send(plain, headers=[(h.REQUEST_ID, plain["request_id"].encode())])
    free = request("why is my API slow and how do I paginate it", tenant="open")
    stages.send(free)
    assert header_names(free) == {h.REQUEST_ID, h.TENANT}  # no specialist: triage decides
    assert stages.codec.decodes == 2 and stages.all_tasks() == 2
    [task] = stages.tasks()
    assert header(task, h.ROUTED) is None  # validated by the router: re-encoded
    [response] = stages.work()
    assert response["content"] == "ok: size a pool"


def header_names(record: dict[str, Any]) -> set[str]:
    return {name for name, _value in routing_headers(record)}


def _rejected_by_worker(stages: Stages) -> dict[str, Any]:
    assert len(stages.tasks()) == 1
    [response] = stages.work()
    assert response["status"] == ResponseStatus.REJECTED and stages.backend.prompts == []
    assert stages.codec.decodes == 0
    return response


def _rejected_by_router(record: dict[str, Any], value: bytes | None = None) -> dict[str, Any]:
    """The decoding path's answer for the same body (no routing headers)."""
    stages = Stages()
    stages.send(record, value=value, headers=[(h.REQUEST_ID, record["request_id"].encode())])
    [response] = stages.sink.records(TOPICS.responses)
    assert stages.all_tasks() == 0
    return decoded_response(response)


def test_bad_bodies_are_rejected_by_the_worker_with_the_routers_reasons() -> None:
    bodies = [
        request("/backend size\x07 a pool", tenant="open"),
        request("/backend   ", tenant="open"),
        request("/backend size a pool", tenant="open", metadata={f"k{i}": "v" for i in range(40)}),
    ]
    for record in bodies:
        stages = Stages()
        stages.send(record)
        response = _rejected_by_worker(stages)
        expected = _rejected_by_router(record)
        assert (response["error_code"], response["content"]) == (
            expected["error_code"],
            expected["content"],
        )
        assert response["error_code"] in {
            "control_characters",
            "empty_prompt",
            "too_much_metadata",
        }


def test_a_body_that_is_not_utf8_is_rejected_by_the_worker() -> None:
    stages = Stages()
    record = request("/backend size a pool", tenant="open")
    value = encoded(record, TOPICS.requests).replace(b"size", b"s\xffze")
    stages.send(record, value=value)
    response = _rejected_by_worker(stages)
    assert response["error_code"] == "invalid_utf8"
    assert response["error_code"] == _rejected_by_router(record, value)["error_code"]


def test_a_body_that_does_not_match_its_headers_is_rejected() -> None:
    stages = Stages()
    record = request("/security audit the login", tenant="open")
    forged = [
        (name, b"backend" if name == h.SPECIALIST else value)
        for name, value in routing_headers(record)
    ]
    stages.send(record, headers=list(forged))
    response = _rejected_by_worker(stages)
    assert response["error_code"] == "routing_mismatch" and "specialist" in response["content"]


def test_a_value_over_the_prompt_limit_is_decoded_and_checked_by_the_router() -> None:
    stages = Stages()
    stages.router._rules = type(stages.router._rules)(max_prompt_bytes=40)
    stages.send(request("/backend " + "x" * 60, tenant="open"))
    [response] = responses(stages.sink)
    assert response["error_code"] == "prompt_too_large" and stages.codec.decodes == 1


def test_header_limits_on_the_header_path_are_the_decoding_paths() -> None:
    """Each header counts its name and value bytes, as the decoding path counts them: a request
    id, a tenant or any other header over ``max_header_bytes`` is decoded and refused
    ``header_too_large``; one at the limit, and a trace context beside the routing headers,
    are routed from the headers."""
    limit = 128
    stages = Stages(TenantsConfig.from_names(frozenset()), RouterRules(max_header_bytes=limit))
    at_limit = "r" * (limit - len(h.REQUEST_ID))
    stages.send(request("/backend size a pool", tenant="open", request_id=at_limit))
    traced = request("/backend size a pool", tenant="open")
    trace = (h.TRACEPARENT, b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")
    stages.send(traced, headers=[*routing_headers(traced), trace])
    assert len(stages.tasks()) == 2 and stages.codec.decodes == 0
    long_id = request("/backend size a pool", tenant="open", request_id=at_limit + "r")
    long_tenant = request("/backend size a pool", tenant="t" * (limit - len(h.TENANT) + 1))
    extra = request("/backend size a pool", tenant="open")
    stages.send(long_id)
    stages.send(long_tenant)
    stages.send(extra, headers=[*routing_headers(extra), ("x-note", b"n" * limit)])
    codes = [r["error_code"] for r in responses(stages.sink)]
    assert codes == ["header_too_large"] * 3
    assert stages.codec.decodes == 3 and len(stages.tasks()) == 2


def test_a_bad_body_routed_by_its_headers_costs_a_rate_token_and_a_refused_one_does_not() -> None:
    """The header path charges the tenant's rate when it routes, before the worker checks the
    body: a bad body the worker then refuses has still used its token (it was admitted into a
    task topic). On the decoding path the body is checked first: a refusal costs none."""
    stages = Stages()
    stages.router._limiter = TenantLimiter(default_rate=1.0, default_burst=2, clock=FakeClock())
    refused = request("/backend size\x07 a pool", tenant="open")
    stages.send(refused, headers=[(h.REQUEST_ID, refused["request_id"].encode())])
    stages.send(request("/backend size\x07 a pool", tenant="open"))  # routed: one token
    stages.send(request("/backend size a pool", tenant="open"))  # routed: the second
    stages.send(request("/backend size a pool", tenant="open"))  # none left
    codes = [r["error_code"] for r in responses(stages.sink)]
    assert codes == ["control_characters", "rate_limited"] and len(stages.tasks()) == 2
    assert [r["error_code"] for r in stages.work()] == ["control_characters", None]


def test_a_signed_request_is_routed_by_headers_and_a_forged_header_is_refused() -> None:
    stages = Stages()
    good = request("/backend size a pool", tenant="acme")
    stages.send(good, key=("k1", SECRET))
    assert len(stages.tasks()) == 1 and stages.codec.decodes == 0
    # The tenant may ask backend only; a signed /security request with its header rewritten
    # to backend would pass the specialist fence if the signature did not cover the header.
    sneaky = request("/security audit the login", tenant="acme")
    value = encoded(sneaky, TOPICS.requests)
    honest = routing_headers(sneaky)
    signature = sign(
        value, sneaky["request_id"], "acme", "k1", SECRET.encode(), signed_routing(honest)
    )
    forged: list[tuple[str, bytes | None]] = [
        (name, b"backend" if name == h.SPECIALIST else v) for name, v in honest
    ]
    forged += [(h.KEY_ID, b"k1"), (h.SIGNATURE, signature.encode())]
    stages.send(sneaky, value=value, headers=forged)
    [response] = responses(stages.sink)
    assert response["error_code"] == "bad_signature" and len(stages.tasks()) == 1
    # Honestly signed, the same request meets the specialist fence on the decoding path.
    stages.send(request("/security audit the login", tenant="acme"), key=("k1", SECRET))
    codes = [r["error_code"] for r in responses(stages.sink)]
    assert codes == ["bad_signature", "specialist_not_allowed"]


def test_refusals_on_the_header_path_are_the_decoding_paths() -> None:
    stages = Stages()
    stages.send(request("/backend size a pool", tenant="stranger"))
    stages.send(request("/backend size a pool", tenant="open", reply_to="__consumer_offsets"))
    codes = [r["error_code"] for r in responses(stages.sink)]
    assert codes == ["unknown_tenant", "forbidden_reply_to"] and stages.all_tasks() == 0


def test_admit_routed_fills_the_decoded_request_in_place_and_leaves_a_refused_one_as_it_was() -> (
    None
):
    body = decoded_request_of(request("/backend size a pool", tenant="open"))
    facts = dict([*routing_headers(body), (h.ROUTED, b"1700000000000 3")])
    admitted = admit_routed(body, facts, BodyRules())
    assert admitted is body  # no copy per task
    assert (body["specialist"], body["prompt"]) == ("backend", "size a pool")
    assert body["metadata"] == {"routed_at_ms": "1700000000000", "route_ms": "3"}

    other = decoded_request_of(request("/backend size a pool", tenant="open"))
    before = copy.deepcopy(other)
    lying = {**dict(routing_headers(other)), h.SPECIALIST: b"api", h.ROUTED: b"1 0"}
    with pytest.raises(RequestInvalid) as refused:
        admit_routed(other, lying, BodyRules())
    assert refused.value.code == ROUTING_MISMATCH
    assert other == before  # what the worker answers from: the body as it came


def decoded_request_of(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as the worker decodes it from the bytes the client sent."""
    return CODEC.decode(REQUEST, encoded(record, TOPICS.requests), TOPICS.requests)
