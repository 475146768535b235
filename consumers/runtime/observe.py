"""The runtime's tracing and log-context hook: a span per record, in one place for every group.

``observed`` wraps a handler and its failure path once, when a runtime is built, and only when
tracing is on or log lines carry record fields (JSON logs); otherwise it returns them
untouched, so a record costs nothing extra. Wrapped, each record gets a ``process <topic>``
span (``switchboard.core.tracing.HopSpan``), the child of the context its headers carry:

- its context (and the record's request id, tenant, specialist, stage for log lines) is
  current while the handler runs, and inside the task that awaits a slow handler, so the
  model-call span is its child and log lines name the record;
- a handler that raises leaves its span to the failure path, which runs in the same context:
  the retry record, the dead letter (``Outcomes.dead_letter`` stamps it) and the ``failed``
  response carry the span's context, so a retried request stays in its trace;
- every output leaves with the span's ``traceparent``, ``tracestate`` and ``baggage``.

Why here and not in each handler: the router, the workers and the relay get the same span and
the failure path is covered too, with one hook in each runtime's constructor.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry.trace import Tracer

from switchboard.core import logs, tracing
from switchboard.core.aio_producer import Outbound
from switchboard.core.tracing import HopSpan

if TYPE_CHECKING:  # the runtime imports this module: types only
    from consumers.runtime.failures import FailurePath
    from consumers.runtime.loop import Context, Handler
    from consumers.runtime.message import Record

#: Spans of records whose handler raised, awaiting their failure path, at most (a record
#: abandoned in between, by a revoke or a stop, leaves its entry: the oldest go first).
MAX_PENDING_FAILURES: Final = 10_000


def observed(
    handler: Handler, failures: FailurePath, group: str | None = None
) -> tuple[Handler, FailurePath]:
    """``handler`` and ``failures`` with a span and log fields per record, or both unchanged
    when tracing is off and log lines carry no record fields. ``group`` defaults to the
    failure strategy's consumer group."""
    tracer = tracing.tracer()
    if tracer is None and not logs.record_fields_wanted():
        return handler, failures
    if group is None:
        group = str(getattr(getattr(failures, "outcomes", None), "consumer_group", ""))
    hook = _Observer(handler, failures, group, tracer)
    return hook.handle, hook


class _Observer:
    def __init__(
        self, handler: Handler, failures: FailurePath, group: str, tracer: Tracer | None
    ) -> None:
        self._handler = handler
        self._failures = failures
        self._group = group
        self._tracer = tracer
        outcomes = getattr(failures, "outcomes", None)
        self._stage = str(outcomes.stage) if outcomes is not None else None
        # id(record) -> its span, from the handler's raise to the failure path's resolve.
        self._pending: dict[int, tuple[Record, HopSpan]] = {}

    # --- the handler ------------------------------------------------------------------
    def handle(
        self, msg: Record, ctx: Context
    ) -> Sequence[Outbound] | Awaitable[Sequence[Outbound]]:
        hop = tracing.start_hop(
            self._tracer,
            topic=str(msg.topic()),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            headers=msg.headers(),
            group=self._group,
            stage=self._stage,
        )
        with self._inside(msg, hop):
            result = self._handler(msg, ctx)
        if type(result) is list or type(result) is tuple or not inspect.isawaitable(result):
            return hop.finish(result)
        return self._awaited(msg, hop, result)

    async def _awaited(
        self, msg: Record, hop: HopSpan, result: Awaitable[Sequence[Outbound]]
    ) -> Sequence[Outbound]:
        # Runs in the record's own task: what it attaches lives and dies with that task.
        with self._inside(msg, hop):
            outputs = await result
        return hop.finish(outputs)

    @contextlib.contextmanager
    def _inside(self, msg: Record, hop: HopSpan) -> Iterator[None]:
        """The hop's context and log fields are current inside; a raise is left to the
        failure path (``_raised``) and goes on."""
        token = hop.attach()
        fields = logs.bind(hop.fields)
        try:
            yield
        except Exception as exc:
            self._raised(msg, hop, exc)
            raise
        finally:
            logs.unbind(fields)
            hop.detach(token)

    def _raised(self, msg: Record, hop: HopSpan, exc: BaseException) -> None:
        hop.failed(exc)
        pending = self._pending
        while len(pending) >= MAX_PENDING_FAILURES:
            _record, stale = pending.pop(next(iter(pending)))
            stale.span.end()
        pending[id(msg)] = (msg, hop)

    # --- the failure path (a FailurePath) -----------------------------------------------
    def expected(self, exc: BaseException) -> bool:
        return self._failures.expected(exc)

    async def resolve(self, msg: Record, exc: BaseException) -> Sequence[Outbound]:
        entry = self._pending.pop(id(msg), None)
        if entry is None or entry[0] is not msg:
            # An output that could not be delivered after the handler succeeded (its span has
            # ended): the failure path runs in the runtime's context.
            return await self._failures.resolve(msg, exc)
        _msg, hop = entry
        token = hop.attach()
        fields = logs.bind(hop.fields)
        try:
            outputs = await self._failures.resolve(msg, exc)
        finally:
            logs.unbind(fields)
            hop.detach(token)
        return hop.finish(outputs)
