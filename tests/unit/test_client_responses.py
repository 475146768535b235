"""The client's response store: sealed responses are bounded like readable ones, and a waiter
that found one sealed never trips over the tail, another waiter or ``forget`` removing it.

No broker: the tail is replaced by one that reads nothing, and the test hands the store its
records as the tail would (``_on_message``), encoded by real sealing codecs.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Message

import producers.client as client_module
from producers.client import ResultTimeout, _Responses
from switchboard.core.envelope import KeyUnavailable, encrypting, parse_keyring
from switchboard.core.serde import RESPONSE, make_codec

TOPIC = "responses"


class _NoTail:
    """A tail that reads nothing: the test feeds the store itself."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def stop(self) -> None:
        pass


def _record(key: str, value: bytes) -> Message:
    return Message(topic=TOPIC, partition=0, key=key.encode(), value=value)


class _HookedCondition(threading.Condition):
    """A condition that runs ``hook`` once, on ``thread``, right after a ``with`` releases it:
    the moment another thread could change what the waiter just looked at."""

    def __init__(self) -> None:
        super().__init__()
        self.thread: threading.Thread | None = None
        self.hook: Callable[[], None] | None = None

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        hook = self.hook
        if hook is not None and threading.current_thread() is self.thread:
            self.hook = None
            hook()


def _codec(key_id: str) -> Any:
    keys = {key_id: base64.b64encode(os.urandom(32)).decode()}
    return encrypting(make_codec(None), parse_keyring({"keys": keys}, "test"))


def _response(request_id: str, content: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "tenant": "acme",
        "specialist": "api",
        "status": "answered",
        "content": content,
        "responded_at_ms": 1,
    }


@pytest.fixture
def responses(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], _Responses]]:
    monkeypatch.setattr(client_module, "TopicTail", _NoTail)
    made: list[_Responses] = []

    def make(keep: int) -> _Responses:
        store = _Responses({}, TOPIC, _codec("k1"), keep)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_sealed_responses_count_toward_keep_and_the_oldest_goes_first(
    responses: Callable[[int], _Responses],
) -> None:
    """Five answers sealed with k9 (which the client lacks) and one readable answer, with
    ``keep=3``: three are held, the readable one and the two newest sealed ones; the oldest
    sealed ones were dropped with their ids, so ``result()`` for them times out instead of
    naming the key, and a copy arriving later is not taken."""
    store = responses(3)
    stranger, ours = _codec("k9"), store._codec
    ids = [f"r{i}" for i in range(5)]
    for request_id in [*ids, "ok"]:
        store.expect(request_id)
    store._on_message(_record("ok", ours.encode(RESPONSE, _response("ok", "fine"), TOPIC)))
    for request_id in ids:
        sealed = stranger.encode(RESPONSE, _response(request_id, "secret"), TOPIC)
        store._on_message(_record(request_id, sealed))

    assert len(store._unreadable) + len(store) == 3
    assert store.wait("ok", 1).content == "fine"
    for request_id in ids[-2:]:
        with pytest.raises(KeyUnavailable, match="'k9'"):
            store.wait(request_id, 1)
    for request_id in ids[:3]:
        with pytest.raises(ResultTimeout):
            store.wait(request_id, 0.05)
        late = ours.encode(RESPONSE, _response(request_id, "late"), TOPIC)
        store._on_message(_record(request_id, late))
        assert not store.holds(request_id)


@pytest.mark.parametrize("meanwhile", ["a readable copy arrives", "the id is forgotten"])
def test_a_waiter_that_found_its_answer_sealed_survives_it_going_away(
    responses: Callable[[int], _Responses], meanwhile: str
) -> None:
    """A waiter finds its answer sealed with a key it lacks and lets go of the lock; before it
    opens the answer again, the tail admits a readable copy (the sealed one leaves the
    unreadable set), or the caller forgets the id. The waiter gets the readable copy, or the
    key error it would have had: never a KeyError from the set it looked in."""
    store = responses(10)
    store.expect("r1")
    sealed = _codec("k9").encode(RESPONSE, _response("r1", "secret"), TOPIC)
    store._on_message(_record("r1", sealed))
    readable = store._codec.encode(RESPONSE, _response("r1", "the answer"), TOPIC)

    def change() -> None:
        if meanwhile == "a readable copy arrives":
            store._on_message(_record("r1", readable))
        else:
            store.forget("r1")

    lock = _HookedCondition()
    lock.thread, lock.hook = threading.current_thread(), change
    store._lock = lock
    if meanwhile == "a readable copy arrives":
        assert store.wait("r1", 1).content == "the answer"
        assert "r1" not in store._unreadable
    else:
        with pytest.raises(KeyUnavailable, match="'k9'"):
            store.wait("r1", 1)
        assert "r1" not in store._unreadable and not store.holds("r1")
    assert lock.hook is None  # the change did run between the look and the reopening
