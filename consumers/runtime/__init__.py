"""The one consumer runtime used by the router, the workers, the retry relay, replay and batch."""

from consumers.runtime.loop import ConsumerRuntime, Context, RunStats, RuntimeConfig

__all__ = ["ConsumerRuntime", "Context", "RunStats", "RuntimeConfig"]
