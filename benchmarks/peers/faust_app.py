"""Faust (faust-streaming): an ``App``, raw-bytes topics, one ``@app.agent`` per stage that
iterates ``stream.items()`` and ``await topic.send(...)``s its output."""

from __future__ import annotations

import tempfile
from typing import Any

import faust

from benchmarks.control import Control
from benchmarks.peers import logic


def _app(spec: dict[str, Any], role: str) -> faust.App:
    return faust.App(
        f"{spec['prefix']}-faust-{role}",
        broker=f"kafka://{spec['kafka']['bootstrap.servers']}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=spec.get("partitions", 3),
        datadir=tempfile.mkdtemp(prefix="faust-"),
    )


def _run(app: faust.App, ctl: Control) -> None:
    ctl.ready()
    ctl.wait_go()
    ctl.watch(lambda: ctl.finish({}))
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


def router(spec: dict[str, Any], ctl: Control) -> None:
    app = _app(spec, "router")
    requests = app.topic(spec["requests"], value_type=bytes)
    tasks = {s: app.topic(name, value_type=bytes) for s, name in spec["tasks"].items()}

    @app.agent(requests)
    async def route(stream: Any) -> None:
        async for _key, value in stream.items():
            task = logic.route(logic.decode(value))
            await tasks[task["specialist"]].send(
                key=task["request_id"].encode(), value=logic.encode_task(task)
            )

    _run(app, ctl)


def worker(spec: dict[str, Any], ctl: Control) -> None:
    app = _app(spec, "worker")
    tasks = app.topic(*spec["tasks"].values(), value_type=bytes)
    responses = app.topic(spec["responses"], value_type=bytes)

    @app.agent(tasks)
    async def respond(stream: Any) -> None:
        async for _key, value in stream.items():
            response = logic.answer(logic.decode(value))
            await responses.send(
                key=response["request_id"].encode(), value=logic.encode_response(response)
            )

    _run(app, ctl)
