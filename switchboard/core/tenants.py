"""Tenants: who may ask what, how often, how much, and where the answer may go.

The tenants file (``SWITCHBOARD_TENANTS_FILE``, YAML or TOML by its extension) is validated
with pydantic into a ``TenantsConfig``; ``TenantsSource`` reloads it when its mtime changes
(checked by a daemon thread about once a second, off the router's hot path:
``switchboard.core.filewatch``) and keeps the
last good configuration when an edit does not validate, logging one line that names the file
and the key to fix. Without a file, ``TenantsConfig.from_names`` keeps ``SWITCHBOARD_TENANTS``
working: the listed tenants (or any, when the list is empty), unsigned, with the global limits.

Request signing lives here too, since the client (producers) signs and the router (consumers)
verifies: HMAC-SHA256 over the record's value bytes, the request id and tenant headers and the
key id (``sign``), compared with ``hmac.compare_digest`` (``signature_ok``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from switchboard.core.errors import ErrorClass, SwitchboardError
from switchboard.core.filewatch import ReloadedFromFile, read_config_file
from switchboard.core.settings import SPECIALISTS

log = logging.getLogger(__name__)

#: What the signature covers is versioned, so the scheme can change without ambiguity.
SIGNATURE_SCHEME: Final = b"sb-hmac-sha256-v1"
#: The scheme of a record with routing headers: v1's inputs and those headers.
SIGNATURE_SCHEME_ROUTED: Final = b"sb-hmac-sha256-v2"


class TenantsFileError(SwitchboardError, ValueError):
    """The tenants file cannot be used; the message is one line naming the file and the key
    (the CLI prints it as ``switchboard: error: ...``)."""

    error_class = ErrorClass.FATAL
    code = "bad_tenants_file"


class TenantPolicy(BaseModel):
    """What one tenant may do. ``None`` on a limit means the global setting applies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Specialists it may ask; None: all of them.
    specialists: frozenset[str] | None = None
    #: Model ids its requests may be answered by (the specialist's configured model must be
    #: one of them); None: any.
    models: frozenset[str] | None = None
    #: Requests a second, sustained, and at once; None: the router's global rate.
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    #: Budgets, enforced group-wide by the router from usage summed off the response topic
    #: (docs/security.md, "Budgets"): tokens (input, output and cache) per UTC minute and day,
    #: dollars per UTC month; None: no limit.
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    dollars_per_month: float | None = Field(default=None, gt=0)
    #: Over ``rate_per_s`` or ``tokens_per_minute``: "reject" or "delay" (wait in a retry
    #: tier, then route); None: ``SWITCHBOARD_OVER_LIMIT``.
    over_limit: Literal["reject", "delay"] | None = None
    #: The largest prompt in UTF-8 bytes; None: ``SWITCHBOARD_MAX_PROMPT_BYTES``.
    max_prompt_bytes: int | None = Field(default=None, ge=1)
    #: Reply topics it may name start with this; None: no reply topic (the shared responses
    #: topic only); "": any topic that is not a pipeline or internal one.
    reply_to_prefix: str | None = None
    #: Whether every request must carry a valid signature by one of ``signing_keys``.
    require_signature: bool = False
    #: Key id -> secret. Several at once let a tenant rotate: add the new key, move clients
    #: over, remove the old one.
    signing_keys: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("specialists")
    @classmethod
    def _known_specialists(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        if value is not None and (unknown := value - set(SPECIALISTS)):
            raise ValueError(
                f"unknown specialists {sorted(unknown)}; use some of {', '.join(SPECIALISTS)}"
            )
        return value

    @field_validator("signing_keys")
    @classmethod
    def _real_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in value.items():
            if not key_id or len(secret.get_secret_value()) < 16:
                raise ValueError(
                    f"key {key_id!r} needs a non-empty id and a secret of at least 16 characters"
                )
        return value

    def secret(self, key_id: str) -> bytes | None:
        """The secret of ``key_id``, or None when the tenant has no such key."""
        found = self.signing_keys.get(key_id)
        return found.get_secret_value().encode() if found is not None else None


class TenantsConfig(BaseModel):
    """The whole tenants file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: "reject": a tenant not listed is rejected (``unknown_tenant``); "allow": it gets
    #: ``default``.
    unknown_tenants: Literal["reject", "allow"] = "reject"
    #: The policy of a tenant not listed, when unknown tenants are allowed.
    default: TenantPolicy = Field(default_factory=TenantPolicy)
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> TenantsConfig:
        """``SWITCHBOARD_TENANTS`` as a config: those tenants (any when empty), unsigned, any
        legal reply topic outside the pipeline's (what the router allowed before the file)."""
        open_policy = TenantPolicy(reply_to_prefix="")
        listed = sorted(names)
        return cls(
            unknown_tenants="reject" if listed else "allow",
            default=open_policy,
            tenants={name: open_policy for name in listed},
        )

    def policy(self, tenant: str) -> TenantPolicy | None:
        """The policy of ``tenant``; None when it is unknown and unknown tenants are rejected."""
        found = self.tenants.get(tenant)
        if found is not None:
            return found
        return self.default if self.unknown_tenants == "allow" else None

    def rate_shapes(self, rate_per_s: float, burst: int) -> dict[str, tuple[float, int]]:
        """Per-tenant (rate, burst) overrides for the limiter, the globals filling gaps."""
        return {
            name: (p.rate_per_s or rate_per_s, p.burst or burst)
            for name, p in self.tenants.items()
            if p.rate_per_s is not None or p.burst is not None
        }


def load_tenants(path: Path) -> TenantsConfig:
    """Read and validate the tenants file; raises ``TenantsFileError`` with one line."""
    data = read_config_file(
        path, f"tenants file {path}", TenantsFileError, formats=("yaml", "toml")
    )
    try:
        return TenantsConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise TenantsFileError(f"tenants file {path}: {key}: {error['msg']}{more}") from exc


class TenantsSource(ReloadedFromFile):
    """The current tenants configuration: fixed, or a file reloaded when it changes.

    ``config`` is a plain attribute read (one reference swap per reload), so the router reads
    it on every request for free; ``reload_if_changed`` is what the reload thread runs.
    """

    def __init__(
        self,
        config: TenantsConfig,
        path: Path | None = None,
        *,
        on_change: Callable[[TenantsConfig], None] | None = None,
    ) -> None:
        super().__init__(path, "tenants-reload")
        self.config = config
        self._on_change = on_change

    @classmethod
    def from_file(cls, path: Path) -> TenantsSource:
        """The file's configuration now (a bad file fails start-up with one line)."""
        return cls(load_tenants(path), path)

    @classmethod
    def from_settings(cls, tenants_file: Path | None, names: Iterable[str]) -> TenantsSource:
        if tenants_file is not None:
            return cls.from_file(tenants_file)
        return cls(TenantsConfig.from_names(names))

    def subscribe(self, on_change: Callable[[TenantsConfig], None]) -> None:
        """Call ``on_change`` with each new configuration (and once now)."""
        self._on_change = on_change
        on_change(self.config)

    bad_file = TenantsFileError
    what = "tenants configuration"

    def _reload(self, path: Path) -> None:
        config = load_tenants(path)
        self.config = config
        if self._on_change is not None:
            self._on_change(config)
        log.info("tenants file %s reloaded: %d tenants", path, len(config.tenants))


#: Kafka's and the Schema Registry's own topics: never a reply topic.
INTERNAL_TOPICS: Final = frozenset({"__consumer_offsets", "__transaction_state", "_schemas"})


def internal_topic(topic: str, pipeline_prefix: str) -> bool:
    """Whether ``topic`` belongs to Kafka, the registry or the pipeline (under its prefix): a
    request may never have its answer written there."""
    return (
        topic in INTERNAL_TOPICS
        or topic.startswith("__")
        or topic == pipeline_prefix
        or topic.startswith(pipeline_prefix + ".")
    )


def sign(
    value: bytes,
    request_id: str,
    tenant: str,
    key_id: str,
    secret: bytes,
    routing: Sequence[bytes] = (),
) -> str:
    """The request's signature: hex HMAC-SHA256 over the scheme, the key id, the request id
    and tenant headers and the value bytes, each length-prefixed (no two inputs collide).
    ``routing``: the routing headers' names and values (``switchboard.core.routing.
    signed_routing``); with any, the scheme is v2 and they are covered too, so a routing
    header cannot be forged or added to a signed record."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    scheme = SIGNATURE_SCHEME_ROUTED if routing else SIGNATURE_SCHEME
    for part in (scheme, key_id.encode(), request_id.encode(), tenant.encode(), value, *routing):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest()


def signature_ok(signature: str, expected: str) -> bool:
    """Whether a received ``signature`` is the ``expected`` one (what ``sign`` makes of the
    record), compared in constant time."""
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


__all__ = [
    "TenantPolicy",
    "TenantsConfig",
    "TenantsFileError",
    "TenantsSource",
    "internal_topic",
    "load_tenants",
    "sign",
    "signature_ok",
]
