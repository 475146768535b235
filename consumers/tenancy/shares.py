"""The requests topic's partition count: what a tenant's rate (and per-minute tokens) is split
by. A partition has exactly one owner in the router group and a tenant's requests spread over
the partitions by request id, so a share of ``1/P`` per partition adds up to the tenant's
limit across any number of routers, with no coordination between them."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException

from switchboard.core.admin import listed_topic
from switchboard.core.budgets import BROKER_REQUEST_TIMEOUT_S
from switchboard.core.kafka_clients import make_admin

log = logging.getLogger(__name__)


def partition_count(config: dict[str, Any], topic: str, fallback: int = 1) -> int:
    """How many partitions ``topic`` has (a metadata request); ``fallback`` when the topic
    cannot be described now (the caller keeps its last count)."""
    admin = make_admin(config)
    try:
        found = listed_topic(admin, topic, BROKER_REQUEST_TIMEOUT_S)  # never creates it
    except KafkaException as exc:
        log.warning("cannot read %s's partition count (%s); keeping %d", topic, exc, fallback)
        return fallback
    if found is None or found.error is not None or not found.partitions:
        return fallback
    return len(found.partitions)
