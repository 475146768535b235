"""Quix Streams (3.x): an ``Application`` and a ``StreamingDataFrame`` per stage, Avro through
custom ``Serializer``/``Deserializer`` classes, and dynamic ``to_topic`` for routing."""

from __future__ import annotations

import tempfile
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers import Deserializer, SerializationContext, Serializer

from benchmarks.control import Control
from benchmarks.peers import logic


class AvroRequestDeserializer(Deserializer):
    def __call__(self, value: bytes, ctx: SerializationContext) -> Any:
        return logic.decode(value)


class AvroTaskSerializer(Serializer):
    def __call__(self, value: Any, ctx: SerializationContext) -> bytes:
        return logic.encode_task(value)


class AvroResponseSerializer(Serializer):
    def __call__(self, value: Any, ctx: SerializationContext) -> bytes:
        return logic.encode_response(value)


def _app(spec: dict[str, Any], group: str) -> Application:
    return Application(
        broker_address=spec["kafka"]["bootstrap.servers"],
        consumer_group=group,
        auto_offset_reset="earliest",
        auto_create_topics=False,
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        loglevel="WARNING",
    )


def router(spec: dict[str, Any], ctl: Control) -> None:
    app = _app(spec, f"{spec['prefix']}.quix-router")
    requests = app.topic(
        spec["requests"], key_deserializer="bytes", value_deserializer=AvroRequestDeserializer()
    )
    tasks = {
        s: app.topic(name, key_serializer="bytes", value_serializer=AvroTaskSerializer())
        for s, name in spec["tasks"].items()
    }
    sdf = app.dataframe(requests)
    sdf = sdf.apply(logic.route)
    sdf.to_topic(lambda value, key, ts, headers: tasks[value["specialist"]])
    ctl.ready()
    ctl.wait_go()
    ctl.watch(lambda: ctl.finish({}))
    app.run()


def worker(spec: dict[str, Any], ctl: Control) -> None:
    app = _app(spec, f"{spec['prefix']}.quix-worker")
    responses = app.topic(
        spec["responses"], key_serializer="bytes", value_serializer=AvroResponseSerializer()
    )
    for name in spec["tasks"].values():
        tasks = app.topic(
            name, key_deserializer="bytes", value_deserializer=AvroRequestDeserializer()
        )
        app.dataframe(tasks).apply(logic.answer).to_topic(responses)
    ctl.ready()
    ctl.wait_go()
    ctl.watch(lambda: ctl.finish({}))
    app.run()
