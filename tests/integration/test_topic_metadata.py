"""Asking about a topic that does not exist creates nothing, on a broker that creates topics on
demand (``auto.create.topics.enable``, Kafka's default, as the test broker has it).

A metadata request that names a topic, sent by an admin or producer client, asks the broker to
create it, with the broker's defaults (uncompacted, its default partition count): the end
offsets of a topic (``end_offsets``, and ``read_to_end`` behind the DLQ and batch ledgers) and
the router's partition count of the requests topic (``partition_count``) read the whole topic
list instead, as the DLQ store's ``exists`` does (46c89fc).
"""

from __future__ import annotations

import contextlib
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from consumers.tenancy.shares import partition_count
from switchboard.core.admin import end_offsets
from switchboard.core.tail import read_to_end
from tests.support import wait_for

#: How long a topic the broker creates on demand may take to show in the topic list.
APPEAR_S = 15.0


def _listed(admin: AdminClient, topic: str) -> bool:
    return topic in admin.list_topics(timeout=10).topics


def _auto_create(admin: AdminClient, topic: str) -> bool:
    """Name ``topic`` in a metadata request (the broker creates it on demand) and wait for it
    to be listed; False when it is not (this broker does not create topics on demand)."""
    admin.list_topics(topic, timeout=10)
    with contextlib.suppress(AssertionError):
        return wait_for(lambda: _listed(admin, topic), APPEAR_S, f"{topic} created on demand")
    return False


def test_reading_a_missing_topics_ends_or_partition_count_does_not_create_it(
    admin: AdminClient, kafka_config: dict[str, str]
) -> None:
    run = uuid.uuid4().hex[:10]
    probe, marker = f"sb-meta-{run}-probe", f"sb-meta-{run}-marker"
    missing = {name: f"sb-meta-{run}-{name}" for name in ("ends", "scan", "count")}
    try:
        if not _auto_create(admin, probe):
            pytest.skip("this broker does not create topics on demand: nothing to guard")
        assert end_offsets(admin, missing["ends"], timeout_s=10) == {}
        read: list[object] = []
        read_to_end(kafka_config, missing["scan"], read.append, timeout_s=10, name="test-scan")
        assert read == []
        assert partition_count(kafka_config, missing["count"], fallback=7) == 7
        # Asked after the calls above: once it is listed, a creation they asked for would be
        # too (the controller creates topics in the order it is asked).
        assert _auto_create(admin, marker)
        listed = set(admin.list_topics(timeout=10).topics)
        assert not {name: topic for name, topic in missing.items() if topic in listed}
    finally:
        created = [t for t in (probe, marker, *missing.values()) if _listed(admin, t)]
        if created:
            for future in admin.delete_topics(created, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    future.result(30)
