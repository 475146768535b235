"""No configured secret appears in any output of a full run.

A pipeline (router, relay, backend worker) runs over SASL_SSL against the secure local broker
(a real SCRAM password), with an Anthropic API key the fake model server insists on, a tenant
signing key, console users, a content encryption key (SWITCHBOARD_ENCRYPTION_KEYS) and (for
`switchboard settings`) registry credentials in SCHEMA_REGISTRY_URL. Requests are answered,
retried once (a scripted 529), dead-lettered (a scripted HTTP 400) and rejected (unsigned, bad signature). Then every secret value is looked for in: the log lines Switchboard
wrote (text and JSON, INFO and up), the raw bytes of every record on every topic of the run
(keys, values, header names and values: requests, tasks, responses, retry tiers, DLQ, status),
the Prometheus exposition (/metrics), `switchboard status --json` and `switchboard settings`
(stdout and stderr). None may appear; a negative control plants one leak in a topic, one in
a metric label and one in the log stream and shows the same search finds each of them.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY, Counter, generate_latest

from consumers.app import Pipeline
from producers.client import SwitchboardClient
from switchboard.core import logs
from switchboard.core.envelope import keyring_from_json
from switchboard.devtools.fake_anthropic import FakeAnthropic
from switchboard.devtools.secure_kafka import SecureKafka

from .harness import RunningPipeline, create_topics, settings_for_test
from .helpers import topic_bytes

pytestmark = pytest.mark.integration

POISON = "poison-for-the-dlq"
FLAKY = "flaky-then-fine"


def _leaks(secrets: Mapping[str, str], outputs: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """(secret name, output) for every secret found in an output, raw or JSON-escaped."""
    found = []
    for name, secret in secrets.items():
        forms = {secret.encode(), json.dumps(secret)[1:-1].encode()}
        found += [(name, where) for where, blob in outputs.items() if any(f in blob for f in forms)]
    return found


def _cli(args: Iterable[str], env: Mapping[str, str]) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "switchboard.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.stdout + b"\n" + done.stderr


def test_no_configured_secret_appears_in_any_output(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    listener = secure_kafka.listeners()["sasl_ssl"]
    kafka_extra = secure_kafka.client_config("admin")
    kafka = {"bootstrap.servers": listener, **kafka_extra}
    secrets = {
        "anthropic api key": f"sk-ant-api03-{uuid.uuid4().hex}",
        "sasl password": kafka_extra["sasl.password"],
        "signing key": f"sign-{uuid.uuid4().hex}",
        "console password": f"console-{uuid.uuid4().hex}",
        "registry password": f"registry-{uuid.uuid4().hex}",
        "content key": base64.b64encode(os.urandom(32)).decode(),
    }
    content_keys = json.dumps({"keys": {"c1": secrets["content key"]}, "primary": "c1"})
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  acme:\n    require_signature: true\n"
        f'    signing_keys: {{k1: "{secrets["signing key"]}"}}\n'
    )
    console_users = json.dumps(
        {"olga": {"password": secrets["console password"], "role": "operator"}}
    )
    text_log, json_log = io.StringIO(), io.StringIO()
    with FakeAnthropic(
        api_keys=[secrets["anthropic api key"]],
        faults=[f"400:match={POISON}", f"529:count=1:match={FLAKY}"],
    ) as fake:
        settings = settings_for_test(
            listener,
            topic_prefix=f"sbsec-{uuid.uuid4().hex[:10]}",
            partitions=2,
            kafka_config=kafka_extra,
            anthropic_api_key=secrets["anthropic api key"],
            anthropic_base_url=fake.base_url,
            tenants_file=tenants,
            console_users=console_users,
            encryption_keys=content_keys,
            status_interval_s=0.5,
        )
        create_topics(settings, kafka)
        # The handlers a process installs (`switchboard up --log-format ...`): both formats.
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        logs.configure(
            fmt="text", level=logging.INFO, secrets=logs.secrets_of(settings), stream=text_log
        )
        json_handler = logging.StreamHandler(json_log)
        json_handler.setFormatter(logs.JsonFormatter(logs.secrets_of(settings)))
        root.addHandler(json_handler)
        try:

            def setup(p: Pipeline) -> None:
                p.add_router()
                p.add_relay()
                p.add_worker("backend", concurrency=4)

            kw: dict[str, Any] = {
                "topic_prefix": settings.topic_prefix,
                "tenant": "acme",
                "keyring": keyring_from_json(content_keys),
            }
            key = ("k1", secrets["signing key"])
            with (
                RunningPipeline(settings, kafka, setup) as running,
                SwitchboardClient(kafka, signing_key=key, **kw) as signed,
                SwitchboardClient(kafka, **kw) as unsigned,
                SwitchboardClient(kafka, signing_key=("k1", "not-the-key-" * 2), **kw) as forged,
            ):
                ids = {
                    "answered": signed.submit("/backend size the connection pool"),
                    "failed": signed.submit(f"/backend {POISON}"),
                    "retried": signed.submit(f"/backend {FLAKY}"),
                    "unsigned": unsigned.submit("/backend size a pool"),
                    "bad_signature": forged.submit("/backend size a pool"),
                }
                clients = {"unsigned": unsigned, "bad_signature": forged}
                got = {k: clients.get(k, signed).result(rid, 60) for k, rid in ids.items()}
                time.sleep(1.0)  # at least one status report of every consumer
                status_env = {
                    "KAFKA_BOOTSTRAP_SERVERS": listener,
                    "SWITCHBOARD_KAFKA_CONFIG": json.dumps(kafka_extra),
                    "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
                    "ANTHROPIC_API_KEY": secrets["anthropic api key"],
                    "SWITCHBOARD_CONSOLE_USERS": console_users,
                    "SWITCHBOARD_ENCRYPTION_KEYS": content_keys,
                }
                status = _cli(["status", "--json"], status_env)
                assert b'"groups"' in status or b"groups" in status, status[-500:]
                assert running.pipeline.runtimes
        finally:
            root.removeHandler(json_handler)
            for handler in root.handlers[:]:
                root.removeHandler(handler)
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])
        assert got["answered"].status == "answered" and got["answered"].backend != "offline"
        assert got["failed"].status == "failed" and got["failed"].record["dlq"]
        assert got["retried"].status == "answered" and got["retried"].record["attempts"] == 2
        assert got["unsigned"].record["error_code"] == "unsigned"
        assert got["bad_signature"].record["error_code"] == "bad_signature"
        assert fake.stats().total_calls >= 2  # the key was sent, and accepted, for real
    settings_out = _cli(
        ["settings"],
        {
            **status_env,
            "SCHEMA_REGISTRY_URL": f"https://reg-user:{secrets['registry password']}@127.0.0.1:1",
        },
    )
    assert b"kafka_config" in settings_out, settings_out[-500:]
    assert text_log.getvalue() and json_log.getvalue()  # the run did log
    outputs = {
        "text log": text_log.getvalue().encode(),
        "json log": json_log.getvalue().encode(),
        "/metrics": generate_latest(REGISTRY),
        "switchboard status --json": status,
        "switchboard settings": settings_out,
        **topic_bytes(kafka, settings.topic_prefix),
    }
    assert outputs[f"topic {settings.topic_prefix}.dlq"]  # a dead letter, a retry: both read
    assert outputs[f"topic {settings.topic_prefix}.retry.1s"]
    print({where: len(blob) for where, blob in outputs.items()})
    assert _leaks(secrets, outputs) == []

    # --- the negative control: the same search finds a planted leak in each kind of output
    producer = Producer(kafka)
    producer.produce(
        f"{settings.topic_prefix}.status",
        b"{}",
        b"x",
        headers=[("h", secrets["sasl password"].encode())],
    )
    assert producer.flush(20) == 0
    leak = Counter("switchboard_test_leak", "planted by the negative control", ["who"])
    try:
        leak.labels(secrets["anthropic api key"]).inc()
        planted = {
            "text log": (text_log.getvalue() + f"oops {secrets['signing key']}\n").encode(),
            "/metrics": generate_latest(REGISTRY),
            **topic_bytes(kafka, settings.topic_prefix),
        }
    finally:
        REGISTRY.unregister(leak)
    assert sorted(_leaks(secrets, planted)) == sorted(
        [
            ("anthropic api key", "/metrics"),
            ("sasl password", f"topic {settings.topic_prefix}.status"),
            ("signing key", "text log"),
        ]
    )
