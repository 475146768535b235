# ruff: noqa: RUF001
# (The multiplication sign and other typographic signs are intended: this module is answer prose.)
"""The api specialist's offline rules: contract-first design and the HTTP/gRPC/GraphQL details."""

from __future__ import annotations

from consumers.specialists.rules.figures import Figures, ceil_div, fmt_bytes, fmt_count, fmt_int
from consumers.specialists.rules.rule import Derived, Rule, SpecialistRules

DEFAULT_PAGE = 50
MAX_PAGE = 200


def pagination_math(figures: Figures) -> Derived:
    if not figures.item_count:
        return Derived()
    items = figures.item_count.value
    noun = figures.item_noun or "items"
    return Derived(
        numbers=(
            f"{fmt_count(items)} {noun} at {DEFAULT_PAGE} per page is "
            f"{fmt_count(ceil_div(items, DEFAULT_PAGE))} pages: OFFSET on the last page reads and "
            f"discards ~{fmt_count(items)} rows, a keyset cursor reads {DEFAULT_PAGE}.",
            f"A full export of {fmt_count(items)} {noun} through the list endpoint is "
            f"{fmt_count(ceil_div(items, MAX_PAGE))} requests at the max page size of {MAX_PAGE}: "
            "offer a bulk export (async job + file) instead.",
        )
    )


def idempotency_math(figures: Figures) -> Derived:
    rps = figures.rps.value if figures.rps else None
    if rps is None:
        return Derived()
    keys = rps * 86_400
    return Derived(
        numbers=(
            f"At {fmt_int(rps)} unsafe requests/s, 24 h of idempotency records is "
            f"{fmt_count(keys)} keys; at ~500 B each (key, fingerprint, status, response "
            f"pointer) that is ~{fmt_bytes(keys * 500)}: store in Redis or a TTL-partitioned "
            "table.",
        )
    )


def rate_limit_contract_math(figures: Figures) -> Derived:
    if not figures.per_principal_rps:
        return Derived()
    rate = figures.per_principal_rps.value
    who = figures.principal or "client"
    return Derived(
        numbers=(
            f"Publish the quota as policy: {fmt_int(rate)} requests/s per {who} with a burst of "
            f'{fmt_int(rate * 2)}, e.g. `RateLimit-Policy: "default";q={fmt_int(rate)};w=1`, and '
            "document what counts as one request.",
        )
    )


def webhook_math(figures: Figures) -> Derived:
    if not figures.event_rate:
        return Derived()
    per_day = figures.event_rate.value * 86_400
    return Derived(
        numbers=(
            f'"{figures.event_rate.text}" is {fmt_count(per_day)} deliveries a day per '
            "subscribed endpoint before retries; if 1% of endpoints are down for a day, the "
            f"retry queue holds ~{fmt_count(per_day * 0.01)} deliveries: store them durably.",
        )
    )


RULES = SpecialistRules(
    specialist="api",
    label="API",
    rules=(
        Rule(
            id="api.contract-first",
            title="Contract-first with OpenAPI",
            triggers=(
                (r"\bopen\s*api\b|\bswagger\b", 3),
                (r"contract[\s-]first|design[\s-]first|spec[\s-]first|schema[\s-]first", 3),
                (r"\bapi\s+(?:spec\w*|contracts?|design)\b", 2),
                (r"\bspectral\b|\bprism\b|\bschemathesis\b|\bpact\b|\basyncapi\b", 2),
                (r"\bsdks?\b|code\s*gen\w*", 1),
            ),
            recommendation=(
                "Write the OpenAPI 3.1 document first, review it like code, lint it and gate "
                "breaking changes in CI, mock it so clients start immediately, and generate "
                "stubs and SDKs from it; contract tests keep the implementation from drifting."
            ),
            design=(
                "Repository layout: one spec per API (openapi.yaml) with shared components "
                "($ref'd schemas, parameters, responses, securitySchemes) and examples that CI "
                "validates.",
                "Lint with Spectral (a ruleset for naming, operationId, pagination and error "
                "shapes); fail the build on errors.",
                "Breaking-change gate: `oasdiff breaking base.yaml head.yaml --fail-on ERR` "
                "against the last published spec.",
                "Mock server from the spec (Prism) for client teams; contract tests "
                "(Schemathesis property tests, or Pact for consumer-driven contracts) against "
                "the real service.",
                "Every operation: operationId, summary, tags, security, 2xx and error responses "
                "with Problem Details schemas; every field documented, formats explicit "
                "(date-time, uuid, int64 as string where clients are JavaScript).",
            ),
            numbers=(
                "Zero unreviewed spec changes: every change goes through a PR with the diff "
                "report.",
                "Read endpoints p50 < 20 ms, p99 < 100 ms (the platform's benchmark) written into "
                "the spec's x-slo extension or the docs.",
            ),
            anti_patterns=(
                "Specs generated from code after the fact and never reviewed.",
                "Free-form `object` schemas with additionalProperties everywhere.",
                "Examples in docs that no test validates.",
            ),
            checklist=(
                "Spec linted in CI with a shared ruleset.",
                "Breaking-change gate against the published version.",
                "Contract tests run against the implementation on every build.",
                "SDKs and docs generated from the same spec version.",
            ),
        ),
        Rule(
            id="api.versioning",
            title="Versioning and deprecation",
            triggers=(
                (r"\bversion\w*", 3),
                (r"breaking\s+changes?|backward[\s-]*compat\w*", 3),
                (r"\bdeprecat\w*|\bsunset\w*", 3),
                (r"\bv\d+\b", 1),
                (r"\bmigrat\w*\s+(?:clients|consumers|integrators)", 2),
            ),
            recommendation=(
                "Evolve additively inside a major version, and version only for breaking "
                "changes: a URI major version (/v1) for most APIs, or dated versions pinned per "
                "account (Stripe style) when you change often and can run translation layers. "
                "Announce removals with Deprecation and Sunset headers, a migration guide and "
                "per-version usage telemetry."
            ),
            design=(
                "Allowed without a new version: new endpoints, new optional request fields, new "
                "response fields, new enum values only where clients were told to tolerate them.",
                "Breaking: removing or renaming fields, changing types or formats, new required "
                "inputs, stricter validation, changed defaults or error codes.",
                "Dated versions: the account's pinned version is applied by response/request "
                "transformers at the edge; the core speaks only the newest model.",
                "Deprecation: `Deprecation` (RFC 9745) and `Sunset` (RFC 8594) headers plus a "
                "`Link` to the migration guide; email owners of keys still calling the old "
                "version.",
                "gRPC/protobuf: never renumber or reuse field numbers; `reserved` removed ones; a "
                "new package (v2) for breaking changes; `buf breaking` in CI.",
            ),
            numbers=(
                "Notice before sunset: ≥ 6 months for internal APIs, ≥ 12 months for public ones.",
                "Run at most two major versions at once; remove a version when its traffic is "
                "< 1% and named customers have moved.",
            ),
            anti_patterns=(
                'Breaking changes shipped without a version ("it\'s just a rename").',
                "A new version per endpoint, so clients juggle v1, v3 and v7 at once.",
                "Versioning by Accept media types nobody's tooling supports.",
            ),
            checklist=(
                "A written versioning policy linked from the docs.",
                "Breaking-change detection in CI (oasdiff, buf breaking).",
                "Usage per version and per client on a dashboard.",
                "Deprecation and Sunset headers emitted by deprecated operations.",
            ),
        ),
        Rule(
            id="api.pagination",
            title="Pagination",
            triggers=(
                (r"paginat\w*", 3),
                (r"\bcursors?\b|\bkeyset\b", 3),
                (r"\boffset\b|page\s+size|\blimit\s+parameter", 2),
                (r"list\s+endpoints?|\bcollections?\b|infinite\s+scroll", 2),
            ),
            recommendation=(
                "Use cursor (keyset) pagination over a stable sort that ends in a unique key, "
                "returned as an opaque cursor with a bounded page size; keep offset pagination "
                "only for small, bounded, admin-style lists."
            ),
            design=(
                '`GET /orders?limit=50&cursor=...` → `{ "data": [...], "next_cursor": "..." }` '
                '(or a `Link: <...>; rel="next"` header, RFC 8288); no next_cursor on the last '
                "page.",
                "Cursor = base64url of the last row's sort key and id, e.g. (created_at, id), "
                "optionally HMAC-signed; the query is `WHERE (created_at, id) < ($1, $2) ORDER BY "
                "created_at DESC, id DESC LIMIT 51` (fetch one extra to know if there is more).",
                "Index matching the sort: (tenant_id, created_at DESC, id DESC).",
                "Filters and sort are part of the cursor's context: changing them without "
                "dropping the cursor is a 400.",
                "Totals are optional and expensive: offer `has_more`, or an approximate count "
                "behind a separate parameter.",
            ),
            numbers=(
                f"limit default {DEFAULT_PAGE}, maximum {MAX_PAGE}; values above the maximum are "
                "clamped or rejected with 400, documented either way.",
                "A keyset page costs the same at page 1 and page 10,000 (O(limit)).",
            ),
            anti_patterns=(
                "OFFSET/LIMIT on large or live tables: slow deep pages, skipped or repeated rows "
                "when data changes.",
                "Unbounded list endpoints with no limit.",
                "Sorting by a non-unique column without a tie-breaker.",
            ),
            checklist=(
                "Every list endpoint paginated with a documented max page size.",
                "Cursor stability test: inserts during iteration neither skip nor repeat rows.",
                "EXPLAIN shows an index range scan for a deep page.",
            ),
            calculate=pagination_math,
        ),
        Rule(
            id="api.idempotency",
            title="Idempotency keys",
            triggers=(
                (r"idempoten\w*", 3),
                (r"idempotency[\s-]key", 3),
                (
                    r"double[\s-](?:charg|submi|post)\w*|duplicate\s+(?:requests?|orders?|"
                    r"payments?)",
                    3,
                ),
                (r"safe\s+(?:to\s+)?retr\w*|\bretries\b", 1),
                (r"\bpayments?\b|\bcharges?\b", 1),
            ),
            recommendation=(
                "Require an `Idempotency-Key` header on every unsafe POST that has side effects: "
                "store the key with a fingerprint of the request and the first response, replay "
                "that response for retries, and reject the same key with a different body."
            ),
            design=(
                "Key: client-generated UUIDv4/v7, scoped per API key or account; header name "
                "`Idempotency-Key` (IETF httpapi draft).",
                "Flow: INSERT the key with status in_progress (unique per scope) before doing "
                "work → do the work → store status code and body → return. A concurrent retry "
                "finding in_progress gets 409 (or waits briefly).",
                "Fingerprint = hash of method, path and canonical body; a mismatch is 422 "
                '("key reused with a different request").',
                "Replayed responses carry a header such as `Idempotent-Replayed: true`.",
                "Do not store 5xx results for replay: let the client retry them; do store 4xx "
                "validation results.",
                "PUT and DELETE are idempotent by definition; make their implementations so.",
            ),
            numbers=(
                "Retain keys ≥ 24 h (Stripe's window), longer than any client retry schedule.",
                "Key length ≤ 255 characters; reject missing keys on endpoints that require them "
                "with 400.",
            ),
            anti_patterns=(
                "Client retries of POST /payments without a key: double charges.",
                "Server-generated idempotency keys (the client cannot reuse them on retry).",
                "Checking for a duplicate after doing the work.",
            ),
            checklist=(
                "Two concurrent requests with the same key perform the side effect once.",
                "Same key with a different body returns 422.",
                "Expiry job or TTL in place; retention documented.",
            ),
            calculate=idempotency_math,
        ),
        Rule(
            id="api.rate-limits",
            title="Rate limits in the contract",
            triggers=(
                (r"rate[\s-]*limit\w*|\bthrottl\w*", 3),
                (r"\bquotas?\b", 2),
                (r"\b429\b|retry[\s-]after", 3),
                (r"\bper\s+(?:user|client|tenant|api[\s-]*key)\b", 1),
            ),
            recommendation=(
                "Make limits part of the contract: document quotas per plan and per operation, "
                "return 429 with Retry-After when exceeded, expose the remaining budget in "
                "headers, and design clients (and SDKs) to back off on them."
            ),
            design=(
                "Headers on every response: `RateLimit-Policy` and `RateLimit` (IETF draft) or the "
                "de-facto `X-RateLimit-Limit/Remaining/Reset`; `Retry-After` on 429.",
                "429 body as Problem Details with a stable code (`rate_limited`) and the policy "
                "that fired.",
                "Separate limits for reads, writes and expensive operations (search, exports); "
                "cost-based limits for GraphQL.",
                "SDKs retry 429 and 503 honouring Retry-After, with jittered backoff and a cap.",
            ),
            numbers=("Retry-After in whole seconds; clients cap total retry time (e.g. 60 s).",),
            anti_patterns=(
                "Undocumented limits discovered by integrators in production.",
                "503 or 500 for throttling; 429 with no Retry-After.",
            ),
            checklist=(
                "Limits published per plan and operation.",
                "429 responses tested for headers and Problem Details body.",
                "SDK backoff tested against a throttling mock.",
            ),
            calculate=rate_limit_contract_math,
        ),
        Rule(
            id="api.protocol-choice",
            title="REST vs gRPC vs GraphQL",
            triggers=(
                (r"\bgrpc\b|\bprotobuf\b|protocol\s+buffers", 3),
                (r"\brest(?:ful)?\b(?!\s+of\b)", 2),
                (r"\bgraphql\b", 2),
                (
                    r"\bvs\.?\b|\bversus\b|trade[\s-]*offs?|\bwhich\s+(?:protocol|"
                    r"api\s+style)",
                    1,
                ),
                (r"\bwebsockets?\b|server[\s-]sent\s+events|\bsse\b|\bstreaming\b", 1),
            ),
            recommendation=(
                "Choose per audience: REST/JSON with OpenAPI for public and partner APIs, gRPC "
                "for internal service-to-service calls that need strict schemas, deadlines and "
                "streaming, and GraphQL only where many client shapes read one graph and you can "
                "afford its operational controls."
            ),
            design=(
                "REST: cacheable GETs (ETag, Cache-Control), broad tooling, easy debugging; weaker "
                "for streaming and chatty aggregation.",
                "gRPC: HTTP/2, protobuf, deadlines propagated, bidirectional streaming, generated "
                "clients; browsers need gRPC-Web or Connect; L7 load balancing required "
                "(long-lived HTTP/2 connections defeat L4 balancing).",
                "GraphQL: one round trip for nested reads, typed schema; needs DataLoader against "
                "N+1, depth and cost limits, persisted queries, per-field authorisation, and "
                "different caching (no plain HTTP caching of POSTs).",
                "Mixed is normal: gRPC inside, REST (or GraphQL via a BFF) at the edge, "
                "generated from one set of schemas where possible.",
                "Real-time: SSE for server → client streams over HTTP, WebSockets for "
                "bidirectional; both need reconnect/resume semantics (Last-Event-ID).",
            ),
            numbers=(
                "gRPC deadlines on every call, derived from the caller's remaining budget.",
                "Public REST reads p99 < 100 ms (platform benchmark); GraphQL query cost limit set "
                "so the worst allowed query still fits that budget.",
            ),
            anti_patterns=(
                "GraphQL as a thin pass-through to REST services without batching (N+1 over HTTP).",
                "gRPC to browsers without a gateway plan.",
                "Choosing by fashion instead of by client needs.",
            ),
            checklist=(
                "Decision recorded (ADR) with the client types and their needs.",
                "Schema linting and breaking-change checks for the chosen IDL.",
                "Load balancing verified for HTTP/2 (gRPC) traffic.",
            ),
        ),
        Rule(
            id="api.graphql",
            title="GraphQL schema and safety",
            triggers=(
                (r"\bgraphql\b", 3),
                (r"\bresolvers?\b|\bdataloader\b|\bapollo\b|\bfederation\b|\bsupergraph\b", 3),
                (r"persisted\s+quer\w*|query\s+(?:depth|complexity|cost)", 3),
                (r"\bmutations?\b|\bsubscriptions?\b", 1),
            ),
            recommendation=(
                "Design the schema around client use cases (not tables), batch every resolver "
                "that touches storage through DataLoader, and protect the server with depth and "
                "cost limits, persisted queries for first-party clients, and field-level "
                "authorisation."
            ),
            design=(
                "Relay-style connections for lists (edges, node, pageInfo, cursors); input types "
                "and payload types per mutation with typed user errors.",
                "DataLoader per request for every foreign-key hop; verify with a query-count "
                "assertion in tests.",
                "Cost analysis: static cost per field × list sizes; reject above a budget; depth "
                "limit (e.g. 10); timeouts per operation.",
                "Persisted queries (allow-list by hash) for first-party apps; introspection off "
                "in production for public endpoints if the schema is not meant to be public.",
                "Federation (Apollo/GraphQL Fusion) only when several teams own subgraphs; "
                "schema checks in CI against registered client operations.",
                "Errors: partial data plus `errors[]` with `extensions.code`; HTTP 200 for "
                "GraphQL-level errors, 4xx/5xx for transport failures.",
            ),
            numbers=(
                "Resolver database calls per operation bounded (e.g. ≤ number of DataLoader "
                "batches).",
                "Max query depth ~10, max cost budget tuned to keep p99 < 100 ms.",
            ),
            anti_patterns=(
                "Exposing the database schema 1:1 as the graph.",
                "No query cost limits: one nested query can scan everything.",
                "Authorisation only at the top-level resolver.",
            ),
            checklist=(
                "N+1 regression test counting database queries per operation.",
                "Depth and cost limits enforced and tested with abusive queries.",
                "Schema checks against registered operations in CI.",
            ),
        ),
        Rule(
            id="api.errors",
            title="Status codes and error format",
            triggers=(
                (r"error\s+(?:format|handling|responses?|codes?|model)", 3),
                (r"problem\s+details|rfc\s*(?:7807|9457)", 3),
                (r"status\s+codes?|\b4\d\d\b|\b5\d\d\b", 2),
                (r"\bvalidation\s+errors?\b", 2),
            ),
            recommendation=(
                "Return Problem Details (RFC 9457) for every error with a stable machine-readable "
                "code, use status codes for their HTTP meaning, and keep error bodies free of "
                "internals."
            ),
            design=(
                "`application/problem+json`: type (a URI documenting the error), title, status, "
                "detail, instance (request id), code (stable, snake_case), errors[] with "
                "{pointer, code, message} per invalid field.",
                "400 malformed syntax, 422 semantically invalid, 401 unauthenticated (with "
                "WWW-Authenticate), 403 forbidden, 404 not found (also for resources the caller "
                "may not know exist), 409 state conflict, 412 failed If-Match, 429 throttled, "
                "503 temporarily unavailable with Retry-After.",
                "Every error carries the request id that appears in server logs and traces.",
                "Document each operation's possible error codes in the spec; clients switch on "
                "`code`, never on `detail` text.",
            ),
            numbers=("Error bodies < 1 KB; no stack traces, SQL or hostnames.",),
            anti_patterns=(
                "200 OK with an error payload.",
                "500 for client mistakes; one generic 400 for everything.",
                "Error messages that change wording and break clients parsing them.",
            ),
            checklist=(
                "Problem Details schema shared across the spec.",
                "Tests asserting status and code for each documented error.",
                "Request id in every error response and log line.",
            ),
        ),
        Rule(
            id="api.webhooks",
            title="Webhooks",
            triggers=(
                (r"\bwebhooks?\b", 3),
                (r"\bcallbacks?\b", 2),
                (r"event\s+notifications?|notify\s+(?:clients|subscribers)", 2),
                (r"\bhmac\b|signature", 1),
            ),
            recommendation=(
                "Deliver webhooks as signed, at-least-once, retried events with stable ids: "
                "receivers verify an HMAC over timestamp and body, de-duplicate by event id, and "
                "answer 2xx fast; senders retry with backoff for days and offer replay."
            ),
            design=(
                "Payload: {id, type, created_at, api_version, data}; thin events (ids + type) "
                "plus a fetch endpoint when payloads are sensitive or large.",
                "Signature header over `timestamp.body` with HMAC-SHA256 and a per-endpoint "
                "secret; support two active secrets for rotation (Standard Webhooks spec).",
                "Delivery from a durable queue per endpoint; timeout 5-10 s; exponential backoff "
                "with jitter; disable endpoints after prolonged failure and notify the owner.",
                "Ordering is not guaranteed: include versions or timestamps so receivers can "
                "ignore stale events.",
                "Self-service: endpoint registration, event-type filters, delivery logs, manual "
                "redelivery and replay by time range.",
            ),
            numbers=(
                "Reject signatures older than 5 minutes (replay tolerance).",
                "Retries for up to ~3 days (e.g. 1 min → 5 min → 30 min → 2 h → … hourly).",
                "Receivers should answer within 5 s and process asynchronously.",
            ),
            anti_patterns=(
                "Unsigned webhooks, or signatures without timestamps (replayable).",
                "Synchronous delivery from the request path.",
                "Dropping events after one failed attempt.",
            ),
            checklist=(
                "Signature verification sample code in the docs for each language.",
                "Delivery log and manual redelivery in the dashboard.",
                "Secret rotation with overlap tested.",
            ),
            calculate=webhook_math,
        ),
        Rule(
            id="api.long-running",
            title="Long-running and bulk operations",
            triggers=(
                (r"long[\s-]running|\basync(?:hronous)?\s+(?:api|operations?|jobs?|requests?)", 3),
                (r"\bbulk\b|\bbatch\s+(?:api|endpoint|requests?|operations?)", 3),
                (r"\b202\b|\bpolling\b|\bjob\s+status\b", 2),
                (r"\bexports?\b|\bimports?\b|\buploads?\b", 1),
            ),
            recommendation=(
                "Model slow work as an operation resource: the request returns 202 Accepted with "
                "a Location to poll (and optionally a webhook on completion); bulk endpoints "
                "accept bounded batches and report per-item results."
            ),
            design=(
                "`POST /exports` → 202 + `Location: /operations/{id}`; `GET /operations/{id}` → "
                "{status: queued|running|succeeded|failed, progress, result_url, error}; "
                "`Retry-After` suggests the poll interval.",
                "Results as files behind short-lived signed URLs for large outputs.",
                "Bulk writes: `POST /orders:batchCreate` with ≤ N items; response lists each "
                "item's status or Problem Details; the whole batch idempotent by key.",
                "Cancellation: `POST /operations/{id}:cancel`; operations expire after a "
                "documented retention.",
            ),
            numbers=(
                "Batch size ≤ 100-1,000 items and ≤ a few MB per request.",
                "Poll interval ≥ 1-5 s via Retry-After; operation records kept ≥ 24 h.",
            ),
            anti_patterns=(
                "Holding an HTTP request open for minutes.",
                "All-or-nothing bulk endpoints that fail 10,000 items for one bad row.",
            ),
            checklist=(
                "Operation resource documented with states and retention.",
                "Per-item results for bulk endpoints tested with partial failure.",
            ),
        ),
    ),
    general=Rule(
        id="api.general",
        title="API design review checklist",
        triggers=(),
        recommendation=(
            "No specific API topic was recognised, so this is the review the api specialist "
            "runs on any new or changed API. Name the resource, the clients and the operation "
            "in question for a specific contract."
        ),
        design=(
            "Start from the clients' use cases; model resources and operations, then write the "
            "OpenAPI 3.1 (or protobuf) contract before code.",
            "HTTP semantics: correct methods, status codes, conditional requests (ETag/If-Match).",
            "Errors as Problem Details with stable codes.",
            "Collections paginated by cursor with a max page size.",
            "Idempotency keys on unsafe POSTs with side effects.",
            "Versioning policy and deprecation process written down.",
        ),
        numbers=(
            "Read p50 < 20 ms, p99 < 100 ms; write p99 < 200 ms.",
            "Page size default 50, max 100-200; idempotency keys kept ≥ 24 h.",
        ),
        anti_patterns=(
            "Verbs in URLs and RPC-over-POST for everything.",
            "200 with error bodies.",
            "Breaking changes without a version.",
            "Unbounded list endpoints.",
        ),
        checklist=(
            "Spec linted and breaking-change-gated in CI.",
            "Contract tests against the implementation.",
            "Docs with runnable examples.",
            "Security schemes and scopes declared per operation (review with /security).",
        ),
    ),
)
