"""Security basics: secrets written down, weak password hashing, plaintext traffic, no authn.

A secret is reported wherever it appears, even in a section about what not to do: once it is
in a repository it is leaked. Placeholders (``${DB_PASSWORD}``, ``<token>``, ``****``) are not.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from consumers.specialists.review.rule import Hit, ReviewRule, presence
from consumers.specialists.review.view import PartView
from switchboard.core.findings import Effort, Severity

SECURITY = "security"
BACKEND = "backend"
API = "api"

_SECRET_KEY_VALUE = re.compile(
    r"""(?P<key>[\w.-]*(?:password|passwd|pwd|secret|api[_-]?key|apikey|access[_-]?key|"""
    r"""private[_-]?key|client[_-]?secret|auth[_-]?token|token|credentials?)[\w.-]*)"""
    r"""["']?\s*[:=]\s*["']?(?P<value>[^\s"',}#]+)""",
    re.IGNORECASE,
)
# Keys that name, point to or describe a secret rather than hold one.
_DESCRIPTIVE_KEY = re.compile(
    r"(?:name|ref|file|path|url|uri|id|env|length|len|ttl|rotation|type|format|header|policy|"
    r"expiry|expires|lifetime|scopes?|count|size|mode|algorithm|hash|store|provider|source|"
    r"manager|enabled|required|endpoint|location|in)$",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(
    r"^(?:\$[{(]|\{\{|<|%|env:|vault:|secretref|arn:|ref\+|\*{3,}|x{4,}|\.\.\.)|"
    r"^(?:redacted|changeme_in_env|example\w*|dummy|placeholder|null|none|true|false|string|"
    r"required|optional|secret|password|token|integer|boolean|object|array)$|^https?://",
    re.IGNORECASE,
)
_KNOWN_TOKENS = re.compile(
    r"\bAKIA[0-9A-Z]{16}\b|-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----|"
    r"\bsk_live_[0-9a-zA-Z]{16,}|\bgh[pousr]_[A-Za-z0-9]{36}\b|\bxox[abpr]-[A-Za-z0-9-]{10,}|"
    r"\bAIza[0-9A-Za-z_-]{35}\b"
)
_URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<pw>[^\s@/]{3,})@")
_WORDS_ONLY = re.compile(r"^[A-Za-z]+$")


def _secret_in_line(line: str, config: bool) -> bool:
    if _KNOWN_TOKENS.search(line):
        return True
    url = _URL_CREDENTIALS.search(line)
    if url and not _PLACEHOLDER.search(url.group("pw")) and url.group("pw").lower() != "pass":
        return True
    for match in _SECRET_KEY_VALUE.finditer(line):
        key, value = match.group("key"), match.group("value")
        if _DESCRIPTIVE_KEY.search(key) or _PLACEHOLDER.search(value) or len(value) < 6:
            continue
        # In prose a "Token: generated per session" is a sentence, not a secret: demand a value
        # that looks generated (digits or symbols); in config files any literal value counts.
        if config or (len(value) >= 8 and not _WORDS_ONLY.match(value)):
            return True
    return False


def _secrets(view: PartView) -> Iterator[Hit]:
    config = not view.is_prose
    for index, line in enumerate(view.lines):
        if _secret_in_line(line, config):
            yield Hit(index, index, confidence=0.9)


_INTERNAL_SUFFIXES = (
    ".internal",
    ".svc",
    ".cluster.local",
    ".local",
    ".corp",
    ".lan",
    ".intranet",
    ".intra",
    ".consul",
    ".private",
)
_HTTP_URL = re.compile(r"\bhttp://(?P<host>[A-Za-z0-9.-]+)")


def _internal_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in ("localhost", "0.0.0.0") or host.startswith("127."):
        return False  # a developer's own machine, not traffic between services
    try:
        return ipaddress.ip_address(host).is_private
    except ValueError:
        pass
    return "." not in host or host.endswith(_INTERNAL_SUFFIXES)


def _plaintext_urls(view: PartView) -> Iterator[Hit]:
    for index, line in enumerate(view.lines):
        if any(_internal_host(m.group("host")) for m in _HTTP_URL.finditer(line)):
            yield Hit(index, index, confidence=0.9)


_TLS_DISABLED = presence(
    r"\b(?:tls|ssl|use_?tls|use_?ssl|tls_?enabled|ssl_?enabled|https)[\"']?\s*[:=]\s*[\"']?(?:false|off|no|disabled?)\b",
    r"\b(?:verify|verify_?ssl|ssl_?verify|tls_?verify|verify_?certs?|check_?hostname)[\"']?\s*[:=]\s*[\"']?(?:false|off|no|none)\b",
    r"\binsecure_?skip_?verify[\"']?\s*[:=]\s*[\"']?true\b|\brejectUnauthorized[\"']?\s*[:=]\s*false\b",
    r"\bsslmode\s*=\s*disable\b|\bsecurity\.protocol[\"']?\s*[:=]\s*[\"']?(?:PLAINTEXT|SASL_PLAINTEXT)\b",
    r"\b(?:tls|ssl|https|mtls|encryption in transit)\b(?:[^.]|\.(?=\S)){0,30}?\b(?:is|are|will be|stays?) "
    r"(?:disabled|turned off|off|not (?:enabled|used|required))\b",
    r"\b(?:plain ?text|unencrypted)\b(?:[^.]|\.(?=\S)){0,40}?\b(?:internal|between services|inside the "
    r"(?:cluster|vpc|network)|traffic|connections?|http|grpc)\b",
    r"\bwithout (?:tls|ssl|encryption)\b|\bdisabl(?:e|es|ed|ing) (?:tls|ssl|certificate verification)\b",
)
# AsyncAPI names plaintext protocols by their bare names (kafka vs kafka-secure, amqp vs amqps).
_ASYNCAPI_PLAINTEXT = re.compile(
    r"^\s*[\"']?protocol[\"']?\s*:\s*[\"']?(?:kafka|amqp|mqtt|ws|http)[\"']?,?\s*$"
)


def _tls_disabled(view: PartView) -> Iterator[Hit]:
    yield from _TLS_DISABLED(view)
    if view.doc_format == "asyncapi":
        for index, line in enumerate(view.lines):
            if _ASYNCAPI_PLAINTEXT.match(line):
                yield Hit(index, index, confidence=0.7)


RULES: tuple[ReviewRule, ...] = (
    ReviewRule(
        "SB-SEC-001",
        "Secret written into a document or configuration",
        Severity.CRITICAL,
        "security",
        "Remove the secret from the file and the repository history, rotate it now (it is "
        "compromised once committed), and load it at run time from a secret manager (Vault, AWS "
        "Secrets Manager, Kubernetes Secrets) through the environment or a mounted file.",
        frozenset({SECURITY, BACKEND}),
        Effort.SMALL,
        _secrets,
    ),
    ReviewRule(
        "SB-SEC-002",
        "Weak password hashing (MD5, SHA-1 or unsalted SHA-2)",
        Severity.HIGH,
        "security",
        "Hash passwords with a slow, salted algorithm: Argon2id (e.g. m=19 MiB, t=2, p=1) or "
        "bcrypt with cost 12 or more; MD5 and SHA-1 are fast and broken for passwords. Rehash "
        "each password at the user's next login.",
        frozenset({SECURITY}),
        Effort.SMALL,
        presence(
            r"\b(?:md5|sha-?1)\b(?:[^.]|\.(?=\S)){0,50}?\bpass(?:word|wd|phrase)s?\b",
            # "passwords ... MD5", unless "rather than" / "instead of" / "not" stands between.
            r"\bpass(?:word|wd|phrase)s?\b(?:(?!rather than|instead of|\bnot\b|\bnever\b|no longer)"
            r"(?:[^.]|\.(?=\S))){0,50}?\b(?:md5|sha-?1)\b",
            r"\b(?:md5|sha1)\s*\(\s*\w*pass",
            r"\bunsalted\b(?:[^.]|\.(?=\S)){0,30}?\b(?:sha-?\d+|hash(?:es|ed)?)\b",
        ),
    ),
    ReviewRule(
        "SB-SEC-003",
        "Plaintext HTTP to an internal service",
        Severity.HIGH,
        "security",
        "Use TLS (1.3) for all internal traffic, or mTLS through the service mesh (Istio, "
        "Linkerd); an internal network is not a trust boundary.",
        frozenset({SECURITY}),
        Effort.SMALL,
        _plaintext_urls,
    ),
    ReviewRule(
        "SB-SEC-004",
        "TLS disabled or certificate verification turned off",
        Severity.HIGH,
        "security",
        "Keep TLS on with certificate verification (TLS 1.3 in transit, mTLS between services); "
        "trust the internal CA's bundle instead of turning verification off.",
        frozenset({SECURITY}),
        Effort.TRIVIAL,
        _tls_disabled,
    ),
    ReviewRule(
        "SB-SEC-005",
        "API without authentication",
        Severity.CRITICAL,
        "security",
        "Authenticate every call: OAuth2/OIDC with JWTs validated at the gateway (signature, "
        "issuer, audience, expiry) for users, mTLS or signed tokens between services; an "
        "anonymous endpoint must be an explicit, reviewed exception.",
        frozenset({SECURITY, API}),
        Effort.MEDIUM,
        presence(
            r"\b(?:no|without(?: any)?) (?:authn|authentication|auth|api keys?|credentials)\b",
            r"\b(?:unauthenticated|anonymous)\b(?:[^.]|\.(?=\S)){0,30}?\b(?:access|requests?|callers?|clients?|endpoints?|api|users?)\b",
            r"\b(?:does not|doesn't|do not|don't|will not|won't|need not) (?:require|need|use|check) "
            r"(?:any )?(?:authn|authentication|auth|credentials|tokens?)\b",
            r"\b(?:is|are) (?:left )?(?:unauthenticated|anonymous|open to (?:anyone|everyone|the internet))\b",
            r"\b(?:is|are) (?:public|open) (?:and|to) (?:unauthenticated|anyone|everyone|the internet)\b",
            r"\bauth(?:entication)?[\"']?\s*[:=]\s*[\"']?(?:none|false|off|disabled)\b",
            unless_after=r"\b(?:reject\w*|401|403|denied|refused|blocked|not allowed)\b",
        ),
    ),
)
