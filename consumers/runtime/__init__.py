"""The one consumer runtime used by the router, the workers, the retry relay, replay and batch.

``loop.ConsumerRuntime`` runs a handler against Kafka; ``memory.MemoryRuntime`` runs the same
handler and the same failure strategy (``failures.FailureStrategy``) in memory, for unit tests.
Handlers read records through ``message.Record``.
"""

from consumers.runtime.loop import ConsumerRuntime, Context, Handler, RunStats, RuntimeConfig
from consumers.runtime.message import MemoryRecord, Record, Sink

__all__ = [
    "ConsumerRuntime",
    "Context",
    "Handler",
    "MemoryRecord",
    "Record",
    "RunStats",
    "RuntimeConfig",
    "Sink",
]
