"""Logging set-up, in one place: readable lines on a terminal, JSON lines for collectors.

``configure`` installs one handler on the root logger (librdkafka's own log, the
``switchboard.librdkafka`` logger, propagates to it, so it gets the same formatter). With
``SWITCHBOARD_LOG_FORMAT=json`` every line is one JSON object: ``timestamp``, ``level``,
``logger``, ``message`` and, when known, ``request_id``, ``tenant``, ``specialist``, ``stage``
(from the record being handled, carried by a ``contextvars`` variable that the runtime sets)
and ``trace_id``, ``span_id`` (from the current span). Every configured secret (the API key,
librdkafka passwords and tokens, content keys, a keyring's reloaded ones too) is replaced by
``***`` in whatever a line holds.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TextIO

from switchboard.core import tracing
from switchboard.core.envelope import content_key_texts, held_key_texts
from switchboard.core.settings import Settings

#: The record fields a log line carries when they are known, in this order.
RECORD_FIELDS: Final = ("request_id", "tenant", "specialist", "stage")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS: Final = ("text", "json")
#: What a secret is replaced with.
MASK: Final = "***"
#: Secrets shorter than this are not masked: replacing every "x" would mangle every line, and
#: a value that short protects nothing anyway.
MIN_SECRET_CHARS: Final = 4

_record_fields: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "switchboard_record_fields", default=MappingProxyType({})
)


class _Wanted:
    record_fields = False


_wanted = _Wanted()


def record_fields_wanted() -> bool:
    """Whether log lines print record fields (JSON logs): the runtime then binds them."""
    return _wanted.record_fields


def bind(fields: Mapping[str, str]) -> contextvars.Token[Mapping[str, str]]:
    """Log lines made from now on in this context carry ``fields``; ``unbind`` the token."""
    return _record_fields.set(fields)


def unbind(token: contextvars.Token[Mapping[str, str]]) -> None:
    _record_fields.reset(token)


def context_fields() -> dict[str, str]:
    """The record and trace fields a log line made here would carry."""
    fields = dict(_record_fields.get())
    ids = tracing.current_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    return fields


def secrets_of(settings: Settings) -> list[str]:
    """The secret values of ``settings``: whatever ``Settings.masked`` hides."""
    found = []
    if settings.anthropic_api_key is not None:
        found.append(settings.anthropic_api_key.get_secret_value())
    masked = settings.masked()["kafka_config"]
    found += [v for k, v in settings.kafka_config.items() if masked.get(k) == MASK]
    found += [password for password, _role in settings.console_accounts().values()]
    if settings.schema_registry_password is not None:
        found.append(settings.schema_registry_password)
    return found + content_key_texts(settings)


class _Redacting(logging.Formatter):
    """Masks the ``secrets`` it was given and every content key this process's keyrings have
    held, including keys a reload brought after start-up (``held_key_texts``)."""

    def __init__(self, secrets: Iterable[str] = (), fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._given = frozenset(secrets)
        #: (the held keys it was computed from, the secrets longest first): one attribute, so
        #: a line formatted during a refresh on another thread reads a matching pair.
        self._masked: tuple[frozenset[str] | None, list[str]] = (None, [])

    def _secrets(self) -> list[str]:
        keys = held_key_texts()
        seen, secrets = self._masked
        if keys is not seen:  # a keyring gained a key: one new list, then reused per line
            found = {s for s in self._given | keys if len(s) >= MIN_SECRET_CHARS}
            # Longest first: a secret that contains another is masked whole.
            secrets = sorted(found, key=len, reverse=True)
            self._masked = (keys, secrets)
        return secrets

    def redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class TextFormatter(_Redacting):
    """``time LEVEL logger: message``, then the record's request id and trace id when known."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets, TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = context_fields()
        extra = " ".join(
            f"{name}={fields[name]}" for name in ("request_id", "trace_id") if name in fields
        )
        return self.redact(f"{line} [{extra}]" if extra else line)


class JsonFormatter(_Redacting):
    """One JSON object a line (see the module docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(context_fields())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return self.redact(json.dumps(entry, default=str))


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """The handler ``configure`` installs (so a second call replaces it, never adds one).

    Without a stream of its own it writes to whatever ``sys.stderr`` is at each line, so a
    caller that swaps stderr (a test capturing output, a console) gets the lines.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure(
    *,
    fmt: str = "text",
    level: int = logging.WARNING,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log line to ``stream`` (stderr) in ``fmt``, at ``level`` and above."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = _OurHandler(stream)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    _wanted.record_fields = fmt == "json"
    return handler


def at_least(level: int) -> None:
    """Show ``level`` and above at least (a serving command wants its INFO lines)."""
    root = logging.getLogger()
    if root.getEffectiveLevel() > level:
        root.setLevel(level)
