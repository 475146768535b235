"""The one consumer runtime used by the router, the workers, the retry relay, replay and batch."""

from consumers.runtime.loop import Context, ConsumerRuntime, RuntimeConfig, RunStats

__all__ = ["ConsumerRuntime", "Context", "RunStats", "RuntimeConfig"]
