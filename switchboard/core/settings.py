"""Switchboard's settings: the only module that reads the environment.

Every other module takes its configuration as constructor arguments, so tests and tools can
build components without touching ``os.environ``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchboard.core.msk_iam import MSK_IAM, MSK_IAM_KEYS, missing_signer, msk_iam_config

SPECIALISTS: tuple[str, ...] = ("backend", "api", "data", "perf", "security")

#: Sonnet for expert answers, Opus for the deepest reviews (security), Haiku for cheap triage.
DEFAULT_MODELS: dict[str, str] = {
    "backend": "claude-sonnet-5-5",
    "api": "claude-sonnet-5-5",
    "data": "claude-sonnet-5-5",
    "perf": "claude-sonnet-5-5",
    "security": "claude-opus-5-5",
    "triage": "claude-haiku-5-5",
}

#: librdkafka keys whose values are secrets: masked whenever settings are printed.
_SECRET_KAFKA_KEYS = ("password", "secret", "key.pem", "sasl.oauthbearer.config", "token")


class Settings(BaseSettings):
    """Effective configuration, from ``SWITCHBOARD_*`` variables (and a few standard names).

    librdkafka settings pass through as dotted keys: ``SWITCHBOARD_KAFKA__SECURITY__PROTOCOL``
    is awkward, so pass them as JSON instead: ``SWITCHBOARD_KAFKA_CONFIG='{"security.protocol":
    "SASL_SSL", "sasl.mechanism": "PLAIN", ...}'``.
    """

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", frozen=True, extra="ignore", populate_by_name=True
    )

    # --- Kafka -------------------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="An existing cluster; when set, Switchboard starts no broker of its own.",
    )
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka settings passed to every client (security, tuning).",
    )
    #: "aws-msk-iam": every client authenticates to Amazon MSK with IAM (OAUTHBEARER tokens
    #: signed with AWS credentials; needs the ``switchboard[msk]`` extra and a region).
    kafka_auth: Literal["none", "aws-msk-iam"] = "none"
    aws_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SWITCHBOARD_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="The MSK cluster's region, for kafka_auth=aws-msk-iam.",
    )
    topic_prefix: str = "switchboard"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)
    dlq_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, ge=60_000)
    schema_registry_url: str | None = Field(default=None, validation_alias="SCHEMA_REGISTRY_URL")

    # --- local broker --------------------------------------------------------------------
    state_dir: Path = Path(".switchboard")
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    #: The local broker's JVM heap: Kafka's own default (``KAFKA_HEAP_OPTS``, -Xmx1G). Its log
    #: cleaner alone pins 128 MB of it (``log.cleaner.dedupe.buffer.size``) from the start.
    kafka_heap: str = "1g"
    kafka_start_timeout_s: float = Field(default=60.0, gt=0)

    # --- Anthropic -----------------------------------------------------------------------
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, validation_alias="ANTHROPIC_BASE_URL")
    anthropic_timeout_s: float = Field(default=120.0, gt=0)
    #: The pipeline owns retries (retry topics); the SDK retries at most this many times.
    anthropic_max_retries: int = Field(default=0, ge=0, le=2)
    max_output_tokens: int = Field(default=2048, ge=1, le=16_000)
    #: Model per specialist (and "triage"); a partial map overrides only the names it gives.
    models: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODELS))
    #: "keyword" (deterministic, default) or "model" (a cheap Claude model classifies free text).
    triage: str = "keyword"

    # --- pipeline behaviour --------------------------------------------------------------
    max_prompt_bytes: int = Field(default=32_000, ge=1)
    max_metadata_entries: int = Field(default=32, ge=0)
    max_metadata_bytes: int = Field(default=8_192, ge=0)
    tenants: Annotated[frozenset[str], NoDecode] = Field(
        default_factory=frozenset, description="Known tenants; empty means any tenant."
    )
    #: The tenants file (YAML or TOML, ``switchboard.core.tenants``); when set it replaces
    #: ``tenants`` and is reloaded on change.
    tenants_file: Path | None = None
    #: Headers a request may carry, and the bytes of one header (name and value).
    max_headers: int = Field(default=32, ge=1)
    max_header_bytes: int = Field(default=4_096, ge=64)
    #: The router's recent-id cache and the client's lookback: how far back a resubmitted id
    #: is looked for. The workers' answered index keeps ``dedup_horizon_s`` instead.
    dedup_window_s: float = Field(default=3600.0, ge=0)
    #: How far back the answered index remembers answers: unset, the requests topic's
    #: ``retention.ms`` (or the responses topic's, when shorter), 7 days when neither is
    #: readable or both keep forever. A request created before ``now - horizon`` is answered
    #: ``expired``, never sent to the model.
    dedup_horizon_s: float | None = Field(default=None, ge=60)
    #: Where the answered index keeps its on-disk stores (one per response partition), under
    #: ``<answered_dir>/<responses topic>/<instance id or a free slot m0, m1, ...>``; unset:
    #: ``<state_dir>/answered``.
    answered_dir: Path | None = None
    #: The answered index's block cache in MiB, shared by the process's stores (their
    #: memtables, 16 MiB, are charged to it). Lookups stay in memory while the stores' filter
    #: and index blocks fit: about 12 million answers a process at 64 (a lookup 5-20 us);
    #: beyond, they page from disk (200-500 us; a larger cache helps only so far: 50.4M
    #: answers at 320 MiB still 250-350 us). Measured: benchmarks/README.md, G13.
    answered_cache_mb: int = Field(default=64, ge=32)
    #: Per-tenant request rate at the router (the seed's "1000 RPS per user"); 0 turns it off.
    tenant_rate_per_s: float = Field(default=1000.0, ge=0)
    tenant_burst: int = Field(default=1000, ge=1)
    #: Over the tenant's rate: "reject" (answered rejected with a retry hint) or "delay"
    #: (held in a retry tier until the bucket allows it, then routed).
    over_limit: str = Field(default="reject", pattern="^(reject|delay)$")
    concurrency: int = Field(default=64, ge=1, le=10_000)
    #: The fraction of a worker's in-flight cap that ``priority=BATCH`` records (the batch
    #: task topics) may hold at once; interactive records always have the rest, and take slots
    #: before any waiting batch record (docs/review.md, "Priority").
    batch_share: float = Field(default=0.25, gt=0, le=1)
    #: Static group membership (``group.instance.id`` = ``<role>-<instance_id>``): a restarted
    #: process with the same id takes its partitions back at once, without a rebalance.
    instance_id: str | None = None
    #: Serve Prometheus ``/metrics`` on this port (router, worker, relay, up); None: off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: The metrics server's bind address: loopback on a laptop, 0.0.0.0 in containers (probes
    #: and Prometheus connect from outside the container).
    metrics_addr: str = "127.0.0.1"
    #: ``/healthz`` fails when the event loop has not turned for this long (Kubernetes'
    #: liveness probe then restarts the container).
    health_stale_s: float = Field(default=15.0, gt=0)
    #: How often consumer lag is read through the admin API (also the broker reachability
    #: check of ``/readyz``, which fails after three intervals without an answer).
    lag_interval_s: float = Field(default=5.0, gt=0, le=300)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    #: The interpreter's thread switch interval in a pipeline process (``sys.setswitchinterval``;
    #: Python's default is 5 ms). Each consumer and producer has a thread that hands records to
    #: the event loop; a shorter interval cuts how long a record waits for the GIL (at 100
    #: req/s, e2e p99 59-64 ms -> 33-40 ms here). 0 leaves the interpreter's value alone.
    gil_switch_interval_ms: float = Field(default=0.5, ge=0, le=100)
    max_attempts: int = Field(default=5, ge=1, le=50)
    #: How long a fatal failure (bad key, spend limit) pauses a worker's model calls when the
    #: provider named no time; the breaker then probes with one call.
    halt_pause_s: float = Field(default=30.0, gt=0)
    #: Consecutive overload failures (429, 529, 5xx) that open a worker's circuit breaker.
    breaker_failure_threshold: int = Field(default=5, ge=1)
    #: How long an open breaker waits before its first probe (doubling on each re-open).
    breaker_open_s: float = Field(default=5.0, gt=0, le=300)
    #: How often each pipeline process publishes its report to the status topic (read by
    #: ``switchboard status``); 0 publishes nothing.
    status_interval_s: float = Field(default=5.0, ge=0, le=3600)

    # --- content encryption (switchboard.core.envelope, docs/security.md) ---------------
    #: The keyring file (JSON, YAML or TOML: ``{keys: {<id>: <base64 of 32 bytes>}, primary:
    #: <id>}``), reloaded on change; with a primary, prompts and answers are sealed.
    keyring_file: Path | None = None
    #: The same keyring as JSON, from the environment (a secret: masked when printed).
    encryption_keys: SecretStr | None = None

    # --- operator console (switchboard console, docs/console.md) -------------------------
    #: Console users as JSON, ``{"alice": {"password": "...", "role": "operator"}}`` (roles
    #: ``viewer`` and ``operator``); a secret: masked in ``switchboard settings`` and logs.
    console_users: SecretStr | None = None
    #: Where the console looks for review jobs (``review-*/report.json`` under it).
    review_dir: Path = Path(".")
    #: How often the console rereads the pipeline's status (the overview is served from it).
    console_refresh_s: float = Field(default=2.0, gt=0, le=300)
    #: The highest replay rate (records a second) the console's replay form accepts.
    console_max_replay_rate: float = Field(default=200.0, gt=0)

    # --- logs and traces (switchboard.core.logs, switchboard.core.tracing) ---------------
    #: "text": readable lines (default); "json": one JSON object a line, for log collectors.
    log_format: str = Field(default="text", pattern="^(text|json)$")
    #: Export spans over OTLP/HTTP to this endpoint; unset: no exporter, tracing off.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    #: Record prompts and answers on the model-call spans (they can hold personal data).
    trace_content: bool = False

    @field_validator("models", mode="before")
    @classmethod
    def _merge_models(cls, value: Any) -> Any:
        return {**DEFAULT_MODELS, **value} if isinstance(value, dict) else value

    @field_validator("tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(t.strip() for t in value.split(",") if t.strip())
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        unknown = set(self.models) - set(SPECIALISTS) - {"triage"}
        if unknown:
            raise ValueError(
                f"models has unknown keys {sorted(unknown)}; use {', '.join(SPECIALISTS)}, triage"
            )
        if self.triage not in ("keyword", "model"):
            raise ValueError("triage must be 'keyword' or 'model'")
        if self.console_users is not None:
            _parse_console_users(self.console_users.get_secret_value())
        if self.keyring_file is not None and self.encryption_keys is not None:
            raise ValueError(
                "SWITCHBOARD_KEYRING_FILE and SWITCHBOARD_ENCRYPTION_KEYS are both set: give "
                "the keyring one way, not both"
            )
        if self.trace_content and (
            self.keyring_file is not None or self.encryption_keys is not None
        ):
            raise ValueError(
                "trace_content would export the prompts and answers that content encryption "
                "seals: turn SWITCHBOARD_TRACE_CONTENT off"
            )
        if self.kafka_auth == MSK_IAM:
            self._check_msk_iam()
        if self.triage == "model" and self.anthropic_api_key is None:
            raise ValueError("triage=model needs ANTHROPIC_API_KEY; set it or use triage=keyword")
        return self

    def _check_msk_iam(self) -> None:
        if not self.aws_region:
            raise ValueError(
                f"kafka_auth={MSK_IAM} needs a region: set AWS_REGION (or SWITCHBOARD_AWS_REGION)"
            )
        clash = {
            key: self.kafka_config[key]
            for key, value in MSK_IAM_KEYS.items()
            if key in self.kafka_config and self.kafka_config[key].upper() != value
        }
        if clash:
            raise ValueError(
                f"kafka_auth={MSK_IAM} sets {MSK_IAM_KEYS} but SWITCHBOARD_KAFKA_CONFIG has "
                f"{clash}: drop those keys"
            )
        if (line := missing_signer()) is not None:
            raise ValueError(line)

    def console_accounts(self) -> dict[str, tuple[str, str]]:
        """User -> (password, role) of ``console_users``; {} when unset."""
        if self.console_users is None:
            return {}
        return _parse_console_users(self.console_users.get_secret_value())

    @property
    def kafka_state_dir(self) -> Path:
        return self.state_dir.resolve() / "kafka"

    @property
    def answered_state_dir(self) -> Path:
        """The answered index's stores (``answered_dir``, else ``<state_dir>/answered``)."""
        return (self.answered_dir or self.state_dir / "answered").resolve()

    @property
    def offline(self) -> bool:
        """True when specialists answer from the built-in rulebook, not Claude."""
        return self.anthropic_api_key is None

    def client_config(self, bootstrap: str) -> dict[str, Any]:
        """Base librdkafka configuration for every client: bootstrap plus passthrough keys,
        and with ``kafka_auth=aws-msk-iam`` the OAUTHBEARER keys and their ``oauth_cb``."""
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, **self.kafka_config}
        if self.kafka_auth == MSK_IAM and self.aws_region:
            config.update(msk_iam_config(self.aws_region))
        return config

    @property
    def schema_registry_password(self) -> str | None:
        """The password inside ``SCHEMA_REGISTRY_URL`` (``https://user:pass@host``), if any."""
        if not self.schema_registry_url:
            return None
        return urlsplit(self.schema_registry_url).password or None

    def masked(self) -> dict[str, Any]:
        """The effective settings, safe to print or log: every secret is masked."""
        data = self.model_dump(mode="json")
        if self.anthropic_api_key is not None:
            data["anthropic_api_key"] = "***"
        if self.console_users is not None:
            data["console_users"] = "***"
        if self.encryption_keys is not None:
            data["encryption_keys"] = "***"
        if (password := self.schema_registry_password) is not None:
            data["schema_registry_url"] = data["schema_registry_url"].replace(password, "***", 1)
        data["kafka_config"] = {
            key: ("***" if any(s in key for s in _SECRET_KAFKA_KEYS) else value)
            for key, value in self.kafka_config.items()
        }
        return data


#: The console's roles: ``viewer`` reads, ``operator`` also replays and purges.
CONSOLE_ROLES: Final = ("viewer", "operator")
_CONSOLE_USERS_HELP: Final = (
    'give a JSON object such as {"alice": {"password": "...", "role": "operator"}} '
    f"(roles: {', '.join(CONSOLE_ROLES)})"
)


def _parse_console_users(text: str) -> dict[str, tuple[str, str]]:
    """``SWITCHBOARD_CONSOLE_USERS`` as user -> (password, role); the message never quotes it."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError(f"console_users is not JSON: {_CONSOLE_USERS_HELP}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"console_users must be an object: {_CONSOLE_USERS_HELP}")
    users: dict[str, tuple[str, str]] = {}
    for name, entry in raw.items():
        password = entry.get("password") if isinstance(entry, dict) else None
        role = entry.get("role", "viewer") if isinstance(entry, dict) else None
        if not name or ":" in name or not isinstance(password, str) or not password:
            raise ValueError(
                f"console user {name!r} needs a name without ':' and a non-empty password: "
                + _CONSOLE_USERS_HELP
            )
        if role not in CONSOLE_ROLES:
            raise ValueError(
                f"console user {name!r} has role {role!r}: use one of {', '.join(CONSOLE_ROLES)}"
            )
        users[str(name)] = (password, str(role))
    return users


#: Every setting's default, read without the environment: the one place a default is written.
#: Components that take a setting as a constructor argument default it from here; the CLI and
#: ``consumers.app`` pass the effective ``Settings`` values.
DEFAULTS: Final[Settings] = Settings.model_construct()
