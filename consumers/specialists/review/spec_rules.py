"""API-spec checks for OpenAPI 3 and AsyncAPI documents (YAML or JSON).

The spec is parsed with PyYAML's composer, which keeps each node's line, so a finding quotes the
exact lines of the operation it is about. JSON parses the same way (JSON is YAML's flow style).
A part of a split spec is a run of top-level keys or paths; checks about the whole spec (no
``securitySchemes``, no rate limits) run only in the part holding the version key and also look
at the context the job sent (the outline of the other parts), so they do not fire on a part
that simply does not contain ``components``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consumers.specialists.review.rule import Detect, Hit, ReviewRule
from consumers.specialists.review.view import PartView
from switchboard.core.findings import Effort, Severity

API = "api"
SECURITY = "security"
PERF = "perf"
BACKEND = "backend"

_OPERATIONS = ("get", "put", "post", "delete", "patch")
_PAGINATION = re.compile(
    r"(?:^|/)(?:limit|page|page_?size|per_?page|cursor|offset|after|before|page_?token|"
    r"next_?token|starting_?after|max_?results|first|top|skip)$",
    re.IGNORECASE,
)
_ERROR_STATUS = re.compile(r"^(?:[45](?:\d\d|XX)|default)$", re.IGNORECASE)
_SECURITY_SCHEMES = re.compile(r"securitySchemes")
_RATE_LIMITED = re.compile(
    r"""["']?429["']?\s*:|rate[- ]?limit|x-ratelimit|retry-after""", re.IGNORECASE
)


def _compose(view: PartView) -> Node | None:
    text = view.text.replace("\t", " ")
    for candidate in (text, "{" + text.rstrip().rstrip(",") + "}"):
        try:
            node = yaml.compose(candidate)
        except yaml.YAMLError:
            continue
        if isinstance(node, MappingNode):
            return node
    return None


def _get(node: Node | None, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return v
    return None


def _items(node: Node | None) -> Iterator[tuple[ScalarNode, Node]]:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode):
                yield k, v


def _scalars(node: Node | None) -> Iterator[str]:
    if isinstance(node, ScalarNode):
        yield str(node.value)
    elif isinstance(node, SequenceNode):
        for child in node.value:
            yield from _scalars(child)
    elif isinstance(node, MappingNode):
        for k, v in node.value:
            yield from _scalars(k)
            yield from _scalars(v)


def _root_key(root: Node) -> ScalarNode | None:
    for key, _ in _items(root):
        if key.value in ("openapi", "asyncapi"):
            return key
    return None


def _operation_hit(view: PartView, path_key: ScalarNode, op_key: ScalarNode) -> Hit:
    """The path line through the operation line when they are close."""
    first, last = path_key.start_mark.line, op_key.start_mark.line
    if last - first <= 5:
        return Hit(first, last, confidence=0.9)
    # Far below its path (path-level parameters between): the operation line and the line
    # after it (its summary or operationId), so the quote still says which operation it is.
    return Hit(last, min(last + 1, len(view.lines) - 1), confidence=0.9)


def _operations(root: Node) -> Iterator[tuple[ScalarNode, ScalarNode, Node, Node]]:
    """(path key, operation key, operation node, path item node) for every operation."""
    paths = _get(root, "paths")
    # A part of a split spec may hold path items without the ``paths`` key above them.
    candidates = _items(paths) if paths is not None else _items(root)
    for path_key, item in candidates:
        if not path_key.value.startswith("/"):
            continue
        for op_key, operation in _items(item):
            if op_key.value in _OPERATIONS:
                yield path_key, op_key, operation, item


def _is_list_operation(path: str, operation: Node) -> bool:
    labels = [_get(operation, key) for key in ("summary", "operationId")]
    summary = " ".join(str(node.value) for node in labels if isinstance(node, ScalarNode))
    if re.match(r"\s*(?:list|search|get all|find all)", summary, re.IGNORECASE):
        return True
    ok = _get(_get(operation, "responses"), "200")
    return any(value == "array" for value in _scalars(ok)) and not path.rstrip("/").endswith("}")


def _paginated(operation: Node, item: Node) -> bool:
    names = [*_scalars(_get(operation, "parameters")), *_scalars(_get(item, "parameters"))]
    return any(_PAGINATION.search(name) for name in names)


def _unpaginated_lists(view: PartView) -> Iterator[Hit]:
    if view.doc_format != "openapi" or (root := _compose(view)) is None:
        return
    for path_key, op_key, operation, item in _operations(root):
        if (
            op_key.value == "get"
            and _is_list_operation(path_key.value, operation)
            and not _paginated(operation, item)
        ):
            yield _operation_hit(view, path_key, op_key)


def _no_error_schema(view: PartView) -> Iterator[Hit]:
    if view.doc_format != "openapi" or (root := _compose(view)) is None:
        return
    for path_key, op_key, operation, _ in _operations(root):
        documented = [
            status
            for status, response in _items(_get(operation, "responses"))
            if _ERROR_STATUS.match(status.value)
            and (_get(response, "content") is not None or _get(response, "$ref") is not None)
        ]
        if not documented:
            yield _operation_hit(view, path_key, op_key)


def _spec_wide(pattern: re.Pattern[str], formats: tuple[str, ...]) -> Detect:
    """Fires once, on the version key, when neither the part nor its context matches."""

    def detect(view: PartView) -> Iterator[Hit]:
        if view.doc_format not in formats or view.mentions(pattern):
            return
        root = _compose(view)
        key = _root_key(root) if root is not None else None
        if key is not None:
            yield Hit(key.start_mark.line, key.start_mark.line, confidence=0.9)

    return detect


RULES: tuple[ReviewRule, ...] = (
    ReviewRule(
        "SB-API-001",
        "No securitySchemes: the spec does not say how callers authenticate",
        Severity.HIGH,
        "security",
        "Declare `components.securitySchemes` (OAuth2/OIDC bearer JWT, or an API key for "
        "machine clients) and a top-level `security` requirement, so every operation states how "
        "it is authenticated.",
        frozenset({API, SECURITY}),
        Effort.SMALL,
        _spec_wide(_SECURITY_SCHEMES, ("openapi", "asyncapi")),
    ),
    ReviewRule(
        "SB-API-002",
        "List operation without pagination",
        Severity.MEDIUM,
        "api-design",
        "Paginate list operations: a `limit` (default 50, maximum 100-200) and an opaque "
        "`cursor` parameter, with `next_cursor` in the response; an unbounded list grows into "
        "timeouts and memory spikes.",
        frozenset({API, PERF}),
        Effort.MEDIUM,
        _unpaginated_lists,
    ),
    ReviewRule(
        "SB-API-003",
        "No 429 response or rate limit documented",
        Severity.MEDIUM,
        "api-design",
        "Document the rate limit (e.g. 1,000 RPS per user, a token bucket at the gateway): a "
        "`429 Too Many Requests` response with `Retry-After` and `RateLimit-*` headers, so "
        "clients back off instead of retrying blindly.",
        frozenset({API, BACKEND}),
        Effort.SMALL,
        _spec_wide(_RATE_LIMITED, ("openapi",)),
    ),
    ReviewRule(
        "SB-API-004",
        "Operation without an error response schema",
        Severity.LOW,
        "api-design",
        "Give every operation its error responses (4xx/5xx or `default`) with one shared error "
        "schema, e.g. RFC 9457 problem+json (type, title, status, detail, a correlation id).",
        frozenset({API}),
        Effort.SMALL,
        _no_error_schema,
    ),
)
