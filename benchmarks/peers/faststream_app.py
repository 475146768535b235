"""FastStream (0.5+ API, aiokafka ``KafkaBroker``): one ``@broker.subscriber`` per stage, the
body as ``bytes`` (no content-type on our records), ``await broker.publish(...)`` to route."""

from __future__ import annotations

import asyncio
from typing import Any

from faststream.kafka import KafkaBroker

from benchmarks.control import Control
from benchmarks.peers import logic


def _serve(broker: KafkaBroker, ctl: Control) -> None:
    async def main() -> None:
        async with broker:
            await broker.start()
            ctl.ready()
            await asyncio.to_thread(ctl.wait_go)
            ctl.watch(lambda: ctl.finish({}))
            await asyncio.Event().wait()

    asyncio.run(main())


def router(spec: dict[str, Any], ctl: Control) -> None:
    # No per-message "Received"/"Processed" log lines: logger=None, as a throughput-minded
    # deployment would run it (the default logs two lines per message).
    broker = KafkaBroker(spec["kafka"]["bootstrap.servers"], logger=None)
    tasks = spec["tasks"]

    @broker.subscriber(
        spec["requests"], group_id=f"{spec['prefix']}.fs-router", auto_offset_reset="earliest"
    )
    async def route(body: bytes) -> None:
        task = logic.route(logic.decode(body))
        await broker.publish(
            logic.encode_task(task),
            topic=tasks[task["specialist"]],
            key=task["request_id"].encode(),
        )

    _serve(broker, ctl)


def worker(spec: dict[str, Any], ctl: Control) -> None:
    broker = KafkaBroker(spec["kafka"]["bootstrap.servers"], logger=None)
    responses = spec["responses"]

    @broker.subscriber(
        *spec["tasks"].values(),
        group_id=f"{spec['prefix']}.fs-worker",
        auto_offset_reset="earliest",
    )
    async def respond(body: bytes) -> None:
        response = logic.answer(logic.decode(body))
        await broker.publish(
            logic.encode_response(response), topic=responses, key=response["request_id"].encode()
        )

    _serve(broker, ctl)
