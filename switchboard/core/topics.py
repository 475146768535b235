"""Topic names and roles: every topic the pipeline uses is named here, and only here."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.core.settings import SPECIALISTS

#: Delay tiers of the non-blocking retry topics, in seconds (a record waits in the first tier
#: whose delay is >= the delay its retry decision asks for).
RETRY_TIERS_S: tuple[int, ...] = (1, 10, 60, 600)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its role (stable, for tools and scripts), name and configuration."""

    role: str
    name: str
    config: dict[str, str]


@dataclass(frozen=True)
class Topics:
    """The names of every topic under one prefix (``switchboard`` by default)."""

    prefix: str = "switchboard"

    @property
    def requests(self) -> str:
        return f"{self.prefix}.requests"

    @property
    def responses(self) -> str:
        return f"{self.prefix}.responses"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def parking_lot(self) -> str:
        """Where replayed records that fail again go, so a replay never loops."""
        return f"{self.prefix}.dlq.parking-lot"

    def tasks(self, specialist: str) -> str:
        return f"{self.prefix}.tasks.{specialist}"

    def retry(self, tier_s: int) -> str:
        return f"{self.prefix}.retry.{tier_s}s"

    def tier_for_delay(self, delay_s: float) -> int:
        """The shortest retry tier that waits at least ``delay_s`` (the longest if none does)."""
        for tier in RETRY_TIERS_S:
            if tier >= delay_s:
                return tier
        return RETRY_TIERS_S[-1]

    def specs(self, *, retention_ms: int, dlq_retention_ms: int) -> list[TopicSpec]:
        """Every topic the pipeline uses, with its role and configuration."""
        plain = {"retention.ms": str(retention_ms)}
        long = {"retention.ms": str(dlq_retention_ms)}
        specs = [
            TopicSpec("requests", self.requests, plain),
            TopicSpec("responses", self.responses, plain),
            TopicSpec("dlq", self.dlq, long),
            TopicSpec("parking-lot", self.parking_lot, long),
        ]
        specs += [TopicSpec(f"tasks:{s}", self.tasks(s), plain) for s in SPECIALISTS]
        specs += [TopicSpec(f"retry:{t}s", self.retry(t), plain) for t in RETRY_TIERS_S]
        return specs
