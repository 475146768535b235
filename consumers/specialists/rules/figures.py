"""The figures a request states ("50K RPS", "10TB", "200ms to <50ms"), read once per answer.

Rules turn these into capacity arithmetic, so the offline answer to "50K RPS" talks about
50,000 requests a second rather than a generic fleet. Extraction is regex-only and
deterministic; anything it cannot read is simply absent (``None``) and rules fall back to the
platform's defaults (p99 100 ms, and so on).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from consumers.weighted_patterns import PatternGroups

# ASCII word boundaries are several times cheaper than Unicode ones, and prompts' figures are ASCII.
_FLAGS = re.IGNORECASE | re.ASCII

# Every repetition is bounded and every number starts at a word boundary, so a hostile prompt
# ("1111…", "a, a, a, …") costs linear time: prompts may be tens of kilobytes.
_NUM = r"\b(?P<num>\d{1,3}(?:,\d{3}){1,4}|\d{1,12}(?:\.\d{1,6})?)"
_MULT = r"(?:\s*(?P<mult>[kmb](?![a-z])|thousand|million|billion|mn)\b)?"
_QTY = _NUM + _MULT

_MULTIPLIERS = {
    "": 1.0,
    "k": 1e3,
    "thousand": 1e3,
    "m": 1e6,
    "mn": 1e6,
    "million": 1e6,
    "b": 1e9,
    "billion": 1e9,
}

_PRINCIPALS = (
    r"user|client|tenant|ip(?:\s+address)?|api[\s-]+key|key|account|customer|token|route|"
    r"endpoint|consumer|app"
)

_RPS = re.compile(
    _QTY + r"\s*\+?\s*(?P<unit>rps|qps|tps|req(?:uest)?s?\s*/\s*s(?:ec(?:ond)?)?\b|"
    r"(?:requests?|queries|transactions|calls)\s+(?:per|a|/)\s*sec(?:ond)?\b)"
    + r"(?:\s+(?:per|each|for\s+each|/)\s+(?P<principal>"
    + _PRINCIPALS
    + r")\b)?",
    _FLAGS,
)

_PER_UNITS = {
    "second": 1.0,
    "sec": 1.0,
    "s": 1.0,
    "minute": 60.0,
    "min": 60.0,
    "m": 60.0,
    "hour": 3600.0,
    "hr": 3600.0,
    "h": 3600.0,
    "day": 86400.0,
    "d": 86400.0,
}

_EVENT_RATE = re.compile(
    _QTY + r"\s*\+?\s*(?P<noun>events?|messages?|msgs|records?|rows?|orders?|transactions?|jobs?|"
    r"writes?|reads?|logs?|log\s+lines|requests?|calls?|payments?|emails?|notifications?)"
    r"\s*(?:/|per\s+|an?\s+|each\s+)\s*(?P<per>second|sec|s|minute|min|m|hour|hr|h|day|d)\b",
    _FLAGS,
)

_CONCURRENCY = re.compile(
    _QTY + r"\s*\+?\s*(?:(?P<adj>concurrent|simultaneous|active|open|parallel|in-flight|live)\s+)?"
    r"(?P<noun>connections?|conns|requests?|users?|sessions?|clients?|websockets?|streams?|"
    r"devices?)\b",
    _FLAGS,
)
_NOUNS_WITHOUT_ADJECTIVE = ("connection", "conn", "session", "websocket")

_SIZE_UNITS = {
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "pb": 1e15,
    "kilobyte": 1e3,
    "megabyte": 1e6,
    "gigabyte": 1e9,
    "terabyte": 1e12,
    "petabyte": 1e15,
}
_DATA_SIZE = re.compile(
    r"\b(?P<num>\d{1,12}(?:\.\d{1,6})?)\s*(?P<unit>[kmgtp]b|(?:kilo|mega|giga|tera|peta)bytes?)\b",
    _FLAGS,
)

_DURATION = r"(?P<{n}>\d{{1,9}}(?:\.\d{{1,6}})?)\s*(?P<{u}>ms|milliseconds?|µs|us|microseconds?|s|secs?|seconds?)\b"
_BOUND = r"(?:<=?|≤|under|below|sub-?|less\s+than|at\s+most|max(?:imum)?\s+(?:of\s+)?)\s*"
_FROM_TO = re.compile(
    r"from\s+(?:an?\s+)?(?:p\d{1,3}(?:\.\d{1,3})?\s+(?:of\s+)?)?"
    + _DURATION.format(n="cur", u="cur_unit")
    + r"\s+(?:down\s+)?to\s+(?:an?\s+)?(?:p\d{1,3}(?:\.\d{1,3})?\s+(?:of\s+)?)?(?:"
    + _BOUND
    + r")?"
    + _DURATION.format(n="tgt", u="tgt_unit"),
    _FLAGS,
)
_TARGET = re.compile(
    r"(?:"
    + _BOUND
    + r"|(?:within|budget\s+of|target\s+of|slo\s+of|sla\s+of)\s+"
    + r"|p\d{1,3}(?:\.\d{1,3})?\s*(?:latency\s*)?(?:of\s+|<=?\s*|under\s+|below\s+|at\s+|=\s*))"
    + _DURATION.format(n="num", u="unit"),
    _FLAGS,
)
_CURRENT = re.compile(
    r"(?:is|are|at|currently|takes?|taking|around|about|~|hits?|reach(?:es)?|spikes?\s+to|"
    r"jumped\s+to|went\s+to|of)\s+" + _DURATION.format(n="num", u="unit"),
    _FLAGS,
)
_MS_PER_UNIT = {
    "ms": 1.0,
    "millisecond": 1.0,
    "µs": 1e-3,
    "us": 1e-3,
    "microsecond": 1e-3,
    "s": 1000.0,
    "sec": 1000.0,
    "second": 1000.0,
}

_WORD_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_REGIONS = re.compile(
    r"\b(?P<n>\d{1,3}|two|three|four|five|six|seven|eight)\s+(?:aws\s+|gcp\s+|azure\s+|cloud\s+)?"
    r"(?:regions|data\s*cent(?:er|re)s|dcs)\b",
    _FLAGS,
)
_MULTI_REGION = re.compile(
    r"\b(?:multi|cross|inter)[\s-]?regions?\b|\bacross\s+(?:multiple\s+|several\s+)?regions\b|"
    r"\bgeo[\s-]?distributed\b|\bmultiple\s+regions\b",
    _FLAGS,
)

_SERVICE_WORD = r"\b[a-z][a-z0-9-]{0,40}"
_SERVICES_SLASHED = re.compile(
    rf"(?P<list>{_SERVICE_WORD}(?:\s*/\s*{_SERVICE_WORD}){{1,8}})\s+(?:micro)?services\b",
    _FLAGS,
)
_SERVICES_LISTED = re.compile(
    rf"(?P<list>{_SERVICE_WORD}(?:\s*,\s*{_SERVICE_WORD}){{0,8}},?\s+(?:and|&)\s+{_SERVICE_WORD})"
    r"\s+(?:micro)?services\b",
    _FLAGS,
)

_ITEM_COUNT = re.compile(
    _QTY + r"\s*\+?\s*(?P<noun>rows|records|items|documents|objects|entries|users|customers|orders|"
    r"products|accounts|files|tables)\b(?!\s*(?:/|per\b|an?\s+(?:second|minute|hour|day)))",
    _FLAGS,
)

_LANGUAGE_NAMES = ("go", "jvm", "python", "node", "rust")
_LANGUAGES = PatternGroups(
    [(pattern, 1)]
    for pattern in (
        r"\bgolang\b|\bgoroutines?\b|\bpprof\b|\bgo\s+(?:service|services|app|api|binary|code|"
        r"program|server|microservices?|backend|worker|handler)\b|\bin\s+go\b",
        r"\bjava\b|\bjvm\b|\bspring(?:\s+boot)?\b|\bkotlin\b|\bscala\b|\bhotspot\b|\bquarkus\b",
        r"\bpython\b|\bfastapi\b|\bdjango\b|\bflask\b|\bcelery\b|\bgunicorn\b|\buvicorn\b",
        r"\bnode\.?js\b|\bnode\s+(?:service|app|server|workers?)\b|\bexpress(?:\.js)?\b|\bnestjs\b",
        r"\brust\b|\btokio\b|\bactix\b|\baxum\b",
    )
)

# Cheap substring gates (on the lowercased text) in front of each extractor: every match of the
# extractor's regex contains one of these, so skipping on a miss never changes the result.
_DIGIT = re.compile(r"\d")
_HAS_DURATION = re.compile(r"\d\s*(?:ms|milli|µs|us|micro|s\b|sec)", _FLAGS)
_RATE_HINTS = ("ps", "sec", "/")
_EVENT_HINTS = (
    "event",
    "messag",
    "msg",
    "record",
    "row",
    "order",
    "transaction",
    "job",
    "write",
    "read",
    "log",
    "request",
    "call",
    "payment",
    "email",
    "notification",
)
_CONCURRENCY_HINTS = (
    "conn",
    "request",
    "user",
    "session",
    "client",
    "websocket",
    "stream",
    "device",
)
_SIZE_HINTS = ("kb", "mb", "gb", "tb", "pb", "byte")
_ITEM_HINTS = (
    "row",
    "record",
    "item",
    "document",
    "object",
    "entr",
    "user",
    "customer",
    "order",
    "product",
    "account",
    "file",
    "table",
)
_REGION_HINTS = ("region", "data cent", "dcs")
_MULTI_REGION_HINTS = ("region", "geo")


@dataclass(frozen=True)
class Quantity:
    """A figure read from the request: ``value`` normalised, ``text`` as the user wrote it.

    Rates are per second, sizes in bytes, durations in milliseconds, counts as counts.
    """

    value: float
    text: str


@dataclass(frozen=True)
class Figures:
    """Everything numeric a request said, plus a few words rules need (language, services)."""

    text: str
    rps: Quantity | None = None
    per_principal_rps: Quantity | None = None
    principal: str | None = None
    event_rate: Quantity | None = None
    event_noun: str | None = None
    concurrency: Quantity | None = None
    concurrency_noun: str | None = None
    data_bytes: Quantity | None = None
    item_count: Quantity | None = None
    item_noun: str | None = None
    latency_current_ms: Quantity | None = None
    latency_target_ms: Quantity | None = None
    regions: int | None = None
    multi_region: bool = False
    services: tuple[str, ...] = ()
    language: str | None = None

    def headline(self) -> str | None:
        """The request's most telling figure, for the answer's title ("50,000 RPS")."""
        if self.rps:
            return f"{fmt_int(self.rps.value)} RPS"
        if self.per_principal_rps:
            return f"{fmt_int(self.per_principal_rps.value)} RPS per {self.principal}"
        if self.event_rate:
            return f"{fmt_rate(self.event_rate.value)} {self.event_noun or 'event'}s/s"
        if self.concurrency:
            return f"{fmt_int(self.concurrency.value)} concurrent {self.concurrency_noun}"
        if self.data_bytes:
            return fmt_bytes(self.data_bytes.value)
        if self.latency_current_ms and self.latency_target_ms:
            current, target = self.latency_current_ms.value, self.latency_target_ms.value
            return f"{fmt_ms(current)} → {fmt_ms(target)}"
        if self.latency_target_ms:
            return f"< {fmt_ms(self.latency_target_ms.value)}"
        if len(self.services) >= 2:
            return " / ".join(self.services)
        return None

    def mentions(self) -> list[str]:
        """One line per figure read, as "what you wrote → what it means" for the answer."""
        lines: list[str] = []
        if self.rps:
            lines.append(f'"{self.rps.text}" → {fmt_int(self.rps.value)} requests/s in total')
        if self.per_principal_rps:
            lines.append(
                f'"{self.per_principal_rps.text}" → {fmt_int(self.per_principal_rps.value)} '
                f"requests/s per {self.principal} (a limit, not fleet throughput)"
            )
        if self.event_rate:
            lines.append(
                f'"{self.event_rate.text}" → {fmt_rate(self.event_rate.value)} '
                f"{self.event_noun or 'event'}s/s on average"
            )
        if self.concurrency:
            lines.append(
                f'"{self.concurrency.text}" → {fmt_int(self.concurrency.value)} concurrent '
                f"{self.concurrency_noun}"
            )
        if self.data_bytes:
            lines.append(f'"{self.data_bytes.text}" → {fmt_bytes(self.data_bytes.value)} of data')
        if self.item_count:
            lines.append(
                f'"{self.item_count.text}" → {fmt_count(self.item_count.value)} {self.item_noun}'
            )
        if self.latency_current_ms:
            lines.append(
                f'"{self.latency_current_ms.text}" → {fmt_ms(self.latency_current_ms.value)} today'
            )
        if self.latency_target_ms:
            target = self.latency_target_ms
            lines.append(f'"{target.text}" → target of {fmt_ms(target.value)}')
        if self.regions:
            lines.append(f"{self.regions} regions")
        elif self.multi_region:
            lines.append("more than one region")
        if len(self.services) >= 2:
            lines.append(f"services: {', '.join(self.services)}")
        return lines


def extract_figures(prompt: str) -> Figures:
    """Read the figures a request states; deterministic, regex-only, no I/O."""
    text = " ".join(prompt.split())
    low = text.lower()
    numeric = _DIGIT.search(text) is not None
    rps = per_principal = event_rate = concurrency = current = target = item_count = None
    principal = event_noun = concurrency_noun = item_noun = None
    if numeric:
        if _hinted(low, _RATE_HINTS):
            rps, per_principal, principal = _request_rates(text)
        if _hinted(low, _EVENT_HINTS):
            event_rate, event_noun = _event_rate(text)
        if event_noun in ("request", "call"):  # "2M requests/day" is a request rate after all
            rps = rps or event_rate
            event_rate, event_noun = None, None
        if _hinted(low, _CONCURRENCY_HINTS):
            concurrency, concurrency_noun = _concurrency(text)
        if _HAS_DURATION.search(text):
            current, target = _latencies(text)
        if _hinted(low, _ITEM_HINTS):
            item_count, item_noun = _item_count(text)
    regions = _regions(text) if _hinted(low, _REGION_HINTS) else None
    multi_region = regions is not None or (
        _hinted(low, _MULTI_REGION_HINTS) and _MULTI_REGION.search(text) is not None
    )
    languages = _LANGUAGES.matches(low)
    return Figures(
        text=text,
        rps=rps,
        per_principal_rps=per_principal,
        principal=principal,
        event_rate=event_rate,
        event_noun=event_noun,
        concurrency=concurrency,
        concurrency_noun=concurrency_noun,
        data_bytes=_data_size(text) if numeric and _hinted(low, _SIZE_HINTS) else None,
        item_count=item_count,
        item_noun=item_noun,
        latency_current_ms=current,
        latency_target_ms=target,
        regions=regions,
        multi_region=multi_region,
        services=_services(text) if "service" in low else (),
        language=next(
            (name for name, hits in zip(_LANGUAGE_NAMES, languages, strict=True) if hits), None
        ),
    )


def _hinted(low: str, hints: tuple[str, ...]) -> bool:
    return any(hint in low for hint in hints)


def _number(match: re.Match[str]) -> float:
    raw = match["num"].replace(",", "")
    mult = (match["mult"] or "").lower()
    return float(raw) * _MULTIPLIERS[mult]


def _request_rates(text: str) -> tuple[Quantity | None, Quantity | None, str | None]:
    total: Quantity | None = None
    per: Quantity | None = None
    principal: str | None = None
    for match in _RPS.finditer(text):
        quantity = Quantity(_number(match), match.group(0).strip())
        if match["principal"]:
            if per is None:
                per = quantity
                principal = " ".join(match["principal"].lower().split())
        elif total is None or quantity.value > total.value:
            total = quantity
    return total, per, principal


def _event_rate(text: str) -> tuple[Quantity | None, str | None]:
    best: tuple[Quantity, str] | None = None
    for match in _EVENT_RATE.finditer(text):
        per_second = _number(match) / _PER_UNITS[match["per"].lower()]
        if best is None or per_second > best[0].value:
            noun = (
                match["noun"].lower().rstrip("s") if match["noun"].lower() != "msgs" else "message"
            )
            best = (Quantity(per_second, match.group(0).strip()), noun)
    return (best[0], best[1]) if best else (None, None)


def _concurrency(text: str) -> tuple[Quantity | None, str | None]:
    for match in _CONCURRENCY.finditer(text):
        noun = match["noun"].lower()
        singular = noun[:-1] if noun.endswith("s") and noun != "conns" else noun
        if match["adj"] is None and singular not in _NOUNS_WITHOUT_ADJECTIVE:
            continue
        plural = "connections" if singular in ("conn", "conns") else singular + "s"
        return Quantity(_number(match), match.group(0).strip()), plural
    return None, None


def _data_size(text: str) -> Quantity | None:
    best: Quantity | None = None
    for match in _DATA_SIZE.finditer(text):
        unit = match["unit"].lower().rstrip("s")
        quantity = Quantity(float(match["num"]) * _SIZE_UNITS[unit], match.group(0).strip())
        if best is None or quantity.value > best.value:
            best = quantity
    return best


def _to_ms(number: str, unit: str) -> float:
    unit = unit.lower()
    key = unit if unit in _MS_PER_UNIT else unit.rstrip("s")
    return float(number) * _MS_PER_UNIT.get(key, 1.0)


def _latencies(text: str) -> tuple[Quantity | None, Quantity | None]:
    span = _FROM_TO.search(text)
    if span:
        return (
            Quantity(_to_ms(span["cur"], span["cur_unit"]), f"{span['cur']}{span['cur_unit']}"),
            Quantity(_to_ms(span["tgt"], span["tgt_unit"]), span.group(0).strip()),
        )
    target_match = _TARGET.search(text)
    target = (
        Quantity(_to_ms(target_match["num"], target_match["unit"]), target_match.group(0).strip())
        if target_match
        else None
    )
    current: Quantity | None = None
    for match in _CURRENT.finditer(text):
        if target_match and match.start("num") == target_match.start("num"):
            continue
        current = Quantity(_to_ms(match["num"], match["unit"]), match.group(0).strip())
        break
    return current, target


def _item_count(text: str) -> tuple[Quantity | None, str | None]:
    for match in _ITEM_COUNT.finditer(text):
        value = _number(match)
        if value >= 1000:  # "3 tables" is a design detail, not a scale figure
            return Quantity(value, match.group(0).strip()), match["noun"].lower()
    return None, None


def _regions(text: str) -> int | None:
    match = _REGIONS.search(text)
    if not match:
        return None
    raw = match["n"].lower()
    return int(raw) if raw.isdigit() else _WORD_NUMBERS[raw]


def _services(text: str) -> tuple[str, ...]:
    match = _SERVICES_SLASHED.search(text) or _SERVICES_LISTED.search(text)
    if not match:
        return ()
    names = re.split(r"\s*(?:/|,|\band\b|&)\s*", match["list"].lower())
    return tuple(dict.fromkeys(name.strip() for name in names if name.strip()))


def fmt_int(value: float) -> str:
    """50000 → "50,000"."""
    return f"{round(value):,}"


def fmt_count(value: float) -> str:
    """Large counts in words: 4.32e9 → "4.32 billion", 1.5e6 → "1.5 million"."""
    for size, word in ((1e9, "billion"), (1e6, "million")):
        if value >= size:
            return f"{value / size:.3g} {word}"
    return fmt_int(value)


def fmt_rate(per_second: float) -> str:
    """A per-second rate with sensible precision: 277.78 → "278", 0.5 → "0.5"."""
    if per_second >= 100:
        return fmt_int(per_second)
    return f"{per_second:.3g}"


def fmt_bytes(value: float) -> str:
    """Decimal units, as disks and clouds bill them: 1e13 → "10 TB"."""
    for size, unit in ((1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def fmt_ms(value: float) -> str:
    """Milliseconds, switching to seconds from 1 s: 50 → "50 ms", 1500 → "1.5 s"."""
    if value >= 1000:
        return f"{value / 1000:.3g} s"
    return f"{value:.3g} ms"


def ceil_div(numerator: float, denominator: float) -> int:
    """Whole units needed to cover ``numerator`` in steps of ``denominator`` (at least 1)."""
    return max(1, math.ceil(numerator / denominator - 1e-9))
