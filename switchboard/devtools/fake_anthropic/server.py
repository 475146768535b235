"""The aiohttp application: Anthropic's HTTP surface over a ``FakeState``, plus ``/_fake`` control.

Every handler is a coroutine and every wait is ``asyncio.sleep``, so one process holds
thousands of slow calls in flight.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from switchboard.devtools.fake_anthropic.batches import Batch
from switchboard.devtools.fake_anthropic.faults import ApiError, Fault, FaultSpecError
from switchboard.devtools.fake_anthropic.prompts import last_user_text, request_key, split_prompt
from switchboard.devtools.fake_anthropic.ratelimit import Admission
from switchboard.devtools.fake_anthropic.replies import stream_events
from switchboard.devtools.fake_anthropic.state import CallTracker, FakeState, parse_latency

STATE: Final = web.AppKey("state", FakeState)
REQUEST_ID: Final = web.RequestKey("request_id", str)
MAX_BODY_BYTES: Final = 256 * 1024 * 1024  # the Batches API's own request limit
MAX_BATCH_REQUESTS: Final = 100_000
CUSTOM_ID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(state: FakeState) -> web.Application:
    app = web.Application(middlewares=[_anthropic_errors], client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    routes = app.router
    routes.add_post("/v1/messages", create_message)
    routes.add_post("/v1/messages/count_tokens", count_tokens)
    routes.add_post("/v1/messages/batches", create_batch)
    routes.add_get("/v1/messages/batches", list_batches)
    routes.add_get("/v1/messages/batches/{batch_id}", retrieve_batch)
    routes.add_delete("/v1/messages/batches/{batch_id}", delete_batch)
    routes.add_post("/v1/messages/batches/{batch_id}/cancel", cancel_batch)
    routes.add_get("/v1/messages/batches/{batch_id}/results", batch_results)
    routes.add_get("/_fake/stats", control_stats)
    routes.add_post("/_fake/script", control_script)
    routes.add_post("/_fake/reset", control_reset)
    routes.add_post("/_fake/latency", control_latency)
    routes.add_post("/_fake/limits", control_limits)
    routes.add_post("/_fake/batch-items", control_batch_items)
    return app


@web.middleware
async def _anthropic_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every response a ``request-id`` and every error the API's JSON shape."""
    request_id = "req_fake_" + secrets.token_hex(12)
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(exc, request_id)
    except web.HTTPException as exc:  # aiohttp's own 404 and 405 for unknown routes
        if exc.status < 400:
            raise
        response = _error_response(ApiError(exc.status, exc.reason), request_id)
    if not response.prepared:
        response.headers.setdefault("request-id", request_id)
    return response


def _error_response(error: ApiError, request_id: str) -> web.Response:
    body = {"type": "error", "error": error.error_object(), "request_id": request_id}
    return web.json_response(body, status=error.status, headers=error.headers)


# Messages.


async def create_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    with state.track_call() as call:
        api_key = _authenticate(request)
        params = await _read_json(request)
        _check_message_params(params, state)
        call.key = request_key(params)
        state.count_call(call.key)
        split = split_prompt(params)
        admission = state.admit(api_key, split)
        if not admission.admitted:
            raise _rate_limited(admission)
        call.tokens = admission.tokens
        fault = state.pick_fault(last_user_text(params["messages"]), call.key)
        await asyncio.sleep(state.draw_latency_s())
        if fault is not None and fault.kind == "status":
            raise ApiError.from_fault(fault, admission.headers)
        # From here the model has run, whatever the client ends up seeing: bill it.
        state.bill(call.key)
        kind = fault.kind if fault is not None else None
        if kind == "drop":
            call.outcome = "dropped"
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        if fault is not None and kind == "timeout":
            await asyncio.sleep(fault.seconds)  # the client's own timeout should fire first
        message = state.answer(params, split, refusal=kind == "refusal")
        call.status, call.outcome = 200, "refusal" if kind == "refusal" else "ok"
        headers = {**admission.headers, "request-id": request[REQUEST_ID]}
        if params.get("stream") is True:
            return await _stream(request, message, headers, call)
        return web.json_response(message, headers=headers)


async def _stream(
    request: web.Request, message: dict[str, Any], headers: dict[str, str], call: CallTracker
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
        for frame in stream_events(message):
            await response.write(frame)
        await response.write_eof()
    except ConnectionResetError:
        call.status, call.outcome = 0, "client_gone"
    return response


async def count_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _authenticate(request)
    params = await _read_json(request)
    _check_message_params(params, state, needs_max_tokens=False)
    return web.json_response({"input_tokens": split_prompt(params).total_tokens})


def _authenticate(request: web.Request) -> str:
    api_key = request.app[STATE].authenticate(request.headers)
    if api_key is None:
        raise ApiError(401, "invalid x-api-key", outcome="unauthorized")
    return api_key


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "The request exceeds the maximum size.", outcome="invalid") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", outcome="invalid") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", outcome="invalid")
    return body


def _check_message_params(
    params: dict[str, Any], state: FakeState, *, needs_max_tokens: bool = True, where: str = ""
) -> None:
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"{where}model: Field required", outcome="invalid")
    if state.models is not None and model not in state.models:
        raise ApiError(404, f"{where}model: {model}", outcome="invalid")
    max_tokens = params.get("max_tokens")
    if needs_max_tokens and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise ApiError(400, f"{where}max_tokens: a positive integer is required", outcome="invalid")
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"{where}messages: at least one message is required", outcome="invalid")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ApiError(
                400, f"{where}messages.{index}.role: use user or assistant", outcome="invalid"
            )


def _rate_limited(admission: Admission) -> ApiError:
    wait_s = admission.retry_after_s or 0.0
    headers = {
        **admission.headers,
        "retry-after-ms": str(math.ceil(wait_s * 1000)),
        "retry-after": str(math.ceil(wait_s)),
    }
    return ApiError(
        429,
        "This request would exceed the rate limit for your organization.",
        headers=headers,
        outcome="rate_limited",
    )


# Message Batches.


async def create_batch(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _authenticate(request)
    body = await _read_json(request)
    requests = body.get("requests")
    if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_BATCH_REQUESTS:
        raise ApiError(400, f"requests: give 1 to {MAX_BATCH_REQUESTS} requests")
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id) or custom_id in seen:
            raise ApiError(
                400, f"requests.{index}.custom_id: give a unique id of [A-Za-z0-9_-]{{1,64}}"
            )
        seen.add(custom_id)
        params = item.get("params")
        if not isinstance(params, dict):
            raise ApiError(400, f"requests.{index}.params: Field required")
        _check_message_params(params, state, where=f"requests.{index}.params.")
    return web.json_response(state.create_batch(requests).to_json(_origin(request)))


async def retrieve_batch(request: web.Request) -> web.Response:
    return web.json_response((await _find_batch(request)).to_json(_origin(request)))


async def list_batches(request: web.Request) -> web.Response:
    _authenticate(request)
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit: use an integer from 1 to 1000")
    await asyncio.to_thread(request.app[STATE].end_due_batches)
    batches, has_more = request.app[STATE].batch_page(
        limit=limit,
        after_id=request.query.get("after_id"),
        before_id=request.query.get("before_id"),
    )
    return web.json_response(
        {
            "data": [batch.to_json(_origin(request)) for batch in batches],
            "has_more": has_more,
            "first_id": batches[0].id if batches else None,
            "last_id": batches[-1].id if batches else None,
        }
    )


async def cancel_batch(request: web.Request) -> web.Response:
    batch = await _find_batch(request)
    request.app[STATE].cancel_batch(batch)
    return web.json_response(batch.to_json(_origin(request)))


async def delete_batch(request: web.Request) -> web.Response:
    batch = await _find_batch(request)
    if batch.ended_at is None:
        raise ApiError(400, f"Batch {batch.id} has not ended: cancel it before deleting it.")
    request.app[STATE].delete_batch(batch)
    return web.json_response({"id": batch.id, "type": "message_batch_deleted"})


async def batch_results(request: web.Request) -> web.Response:
    batch = await _find_batch(request)
    if batch.results is None:
        raise ApiError(404, f"Batch {batch.id} has no results until it has ended.")
    lines = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in batch.results)
    return web.Response(text=lines, content_type="application/x-jsonl")


async def _find_batch(request: web.Request) -> Batch:
    _authenticate(request)
    await asyncio.to_thread(request.app[STATE].end_due_batches)
    batch_id = request.match_info["batch_id"]
    batch = request.app[STATE].batch(batch_id)
    if batch is None:
        raise ApiError(404, f"No batch with id {batch_id}.")
    return batch


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


# Control API, for tests in another process. Loopback only: it takes no key.


async def control_stats(request: web.Request) -> web.Response:
    with_calls = request.query.get("calls", "1") not in ("0", "false")
    return web.json_response(request.app[STATE].stats().to_json(with_calls=with_calls))


async def control_script(request: web.Request) -> web.Response:
    """``{"faults": [SPEC or {Fault fields}...], "clear": false}``; clear runs first."""
    state = request.app[STATE]
    body = await _read_json(request)
    specs = body.get("faults", [])
    try:
        if not isinstance(specs, list):
            raise FaultSpecError('faults: give a list of specs such as "429:count=3"')
        faults = [spec if isinstance(spec, str) else Fault(**spec) for spec in specs]
        if body.get("clear"):
            state.clear_faults()
        state.script(*faults)
    except (FaultSpecError, TypeError) as exc:
        raise ApiError(400, str(exc)) from None
    return web.json_response({"queued_faults": state.stats().queued_faults})


async def control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"reset": True})


async def control_latency(request: web.Request) -> web.Response:
    """``{"ms": 200}``, ``{"ms": [1000, 5000]}`` or ``{"ms": "1000-5000"}``."""
    ms = (await _read_json(request)).get("ms")
    try:
        if isinstance(ms, str):
            latency = parse_latency(ms)
        elif isinstance(ms, list) and len(ms) == 2:
            latency = (float(ms[0]), float(ms[1]))
        else:
            latency = float(ms)  # type: ignore[arg-type]  # bad types raise, answered below
        request.app[STATE].set_latency(latency)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f'ms: {exc}; give MS, [LO, HI] or "LO-HI"') from None
    return web.json_response({"latency_ms": ms})


async def control_limits(request: web.Request) -> web.Response:
    """``{"rpm": N or null, "tpm": N or null}``; replaces the buckets, full."""
    body = await _read_json(request)
    limits = {name: body.get(name) for name in ("rpm", "tpm")}
    if any(v is not None and not (isinstance(v, int) and v > 0) for v in limits.values()):
        raise ApiError(400, "rpm, tpm: give positive integers or null")
    request.app[STATE].set_rate_limits(**limits)
    return web.json_response(limits)


async def control_batch_items(request: web.Request) -> web.Response:
    """``{"outcomes": {CUSTOM_ID: OUTCOME or [OUTCOME...]}, "seconds": S}``: script batch items
    (``FakeState.script_batch_items``) and, with ``seconds``, how long new batches take."""
    body = await _read_json(request)
    state = request.app[STATE]
    outcomes, seconds = body.get("outcomes", {}), body.get("seconds")
    try:
        if not isinstance(outcomes, dict):
            raise ValueError("outcomes: give an object of custom_id -> outcome(s)")
        state.script_batch_items(outcomes)
        if seconds is not None:
            state.set_batch_seconds(float(seconds))
    except (TypeError, ValueError) as exc:
        raise ApiError(400, str(exc)) from None
    return web.json_response({"scripted": len(outcomes), "batch_seconds": state.batch_seconds})
