# ruff: noqa: RUF001
# (The multiplication sign and other typographic signs are intended: this module is answer prose.)
"""The data specialist's offline rules: ingestion, CDC, streaming, warehouses and data quality."""

from __future__ import annotations

from consumers.specialists.rules.figures import (
    Figures,
    ceil_div,
    fmt_bytes,
    fmt_count,
    fmt_int,
    fmt_rate,
)
from consumers.specialists.rules.rule import Derived, Rule, SpecialistRules

TARGET_FILE_BYTES = 512e6  # Iceberg's default write.target-file-size-bytes
PARTITION_MB_PER_S = 5.0  # conservative per-partition sizing figure
RECORD_BYTES = 1_000.0


def _rate(figures: Figures) -> tuple[float, str] | None:
    if figures.event_rate:
        return figures.event_rate.value, figures.event_rate.text
    if figures.rps:
        return figures.rps.value, figures.rps.text
    return None


def layout_math(figures: Figures) -> Derived:
    if not figures.data_bytes:
        return Derived()
    size = figures.data_bytes.value
    files = ceil_div(size, TARGET_FILE_BYTES)
    daily = size / 365
    return Derived(
        numbers=(
            f"{fmt_bytes(size)} in {fmt_bytes(TARGET_FILE_BYTES)} Parquet files is "
            f"~{fmt_int(files)} "
            "files; the same data in 10 MB files would be "
            f"{fmt_int(ceil_div(size, 10e6))} files and planning time would dominate queries.",
            f"If that is a year of data, daily partitions hold ~{fmt_bytes(daily)} each "
            f"({'fine' if daily >= 1e9 else 'small: partition by month, cluster by day'}).",
        )
    )


def streaming_math(figures: Figures) -> Derived:
    rate = _rate(figures)
    if rate is None:
        return Derived()
    per_second, text = rate
    mb_per_s = per_second * RECORD_BYTES / 1e6
    partitions = max(6, ceil_div(mb_per_s * 2, PARTITION_MB_PER_S))
    return Derived(
        numbers=(
            f'"{text}" at ~1 KB per record is {mb_per_s:.3g} MB/s '
            f"({fmt_bytes(per_second * RECORD_BYTES * 86_400)}/day) → ≥ {partitions} partitions at "
            f"≤ 50% of ~{PARTITION_MB_PER_S:.0f} MB/s each, and Flink source parallelism ≤ "
            "partitions.",
            f"{fmt_count(per_second * 86_400)} records/day: reconcile daily counts per source "
            "against the sink within 0.01%.",
        )
    )


def warehouse_math(figures: Figures) -> Derived:
    if not figures.data_bytes:
        return Derived()
    size = figures.data_bytes.value
    return Derived(
        numbers=(
            f"A full scan of {fmt_bytes(size)} on an on-demand, per-byte-billed warehouse is paid "
            "on every unfiltered query: partition pruning and clustering that cut scans to the "
            f"last 30 days (~{fmt_bytes(size * 30 / 365)} if a year of data) are cost controls, "
            "not just speed-ups.",
        )
    )


def backfill_math(figures: Figures) -> Derived:
    if not figures.data_bytes:
        return Derived()
    size = figures.data_bytes.value
    hours = size / 200e6 / 3600
    return Derived(
        numbers=(
            f"Re-processing {fmt_bytes(size)} at a throttled 200 MB/s takes ~{hours:.1f} h: run it "
            f"as ≥ {ceil_div(hours, 1)} partition-aligned slices of ≤ 1 h each, so a failure "
            "costs one slice, not the whole run.",
        )
    )


def cdc_math(figures: Figures) -> Derived:
    rate = _rate(figures)
    if rate is None:
        return Derived()
    per_second, text = rate
    wal_gb_hour = per_second * 2_000 * 3600 / 1e9
    return Derived(
        numbers=(
            f'At "{text}" (~{fmt_rate(per_second)} changes/s, ~2 KB of WAL each) the source '
            f"writes ~{wal_gb_hour:.3g} GB of WAL per hour: a connector down for 6 h retains "
            f"~{wal_gb_hour * 6:.3g} GB on the primary — size max_slot_wal_keep_size accordingly.",
        )
    )


RULES = SpecialistRules(
    specialist="data",
    label="Data",
    rules=(
        Rule(
            id="data.cdc",
            title="Change data capture",
            triggers=(
                (r"\bcdc\b|change[\s-]data[\s-]capture", 3),
                (r"\bdebezium\b", 3),
                (r"\bbinlog\b|\bwal\b|logical\s+replication|replication\s+slots?", 2),
                (r"\boutbox\b", 2),
                (r"\bsync\w*\s+(?:postgres|mysql|database)\w*\s+(?:to|into)", 1),
            ),
            recommendation=(
                "Capture changes from the database log with Debezium into Kafka, snapshot once and "
                "stream thereafter, land them in the warehouse or lakehouse with upserts keyed on "
                "the primary key, and treat the replication slot as production infrastructure "
                "with its own alerts."
            ),
            design=(
                "PostgreSQL: wal_level=logical, the pgoutput plugin, a publication for the "
                "captured "
                "tables only; MySQL: binlog_format=ROW, binlog_row_image=FULL, GTIDs on.",
                "Debezium connector: snapshot.mode=initial (or incremental snapshots via a signal "
                "table for large tables), heartbeat.interval.ms so idle tables still advance the "
                "slot, tombstones for deletes.",
                "Topic per table, keyed by primary key, compacted if consumers need latest state; "
                "Avro/Protobuf with Schema Registry.",
                "Sink: MERGE/upsert by primary key with the source LSN/ts for ordering (ignore "
                "older versions); soft-delete or hard-delete per table policy.",
                "Domain events for other services via the outbox pattern and Debezium's outbox "
                "event router, rather than exposing raw tables as the contract.",
            ),
            numbers=(
                "max_slot_wal_keep_size set (PG 13+) so a dead connector cannot fill the disk; "
                "alert on slot lag > 1 GB or > 5 min.",
                "End-to-end freshness SLO written down (e.g. p95 < 60 s source → warehouse).",
            ),
            anti_patterns=(
                "Dual writes from the application to the database and Kafka.",
                "Query-based polling on updated_at for tables with hard deletes.",
                "Abandoned replication slots retaining WAL until the primary fills up.",
                "Raw table schemas as the cross-team contract.",
            ),
            checklist=(
                "Slot lag and connector status alerted.",
                "Snapshot + streaming tested on a production-sized copy.",
                "Schema change on the source rehearsed end to end.",
                "Row counts reconciled source vs sink daily.",
            ),
            calculate=cdc_math,
        ),
        Rule(
            id="data.warehouse",
            title="Warehouse modelling",
            triggers=(
                (r"\bwarehouse\w*\b|\bdwh\b", 3),
                (r"\bsnowflake\b|\bbigquery\b|\bredshift\b|\bsynapse\b|\bclickhouse\b", 3),
                (
                    r"star\s+schema|dimensional|fact\s+tables?|\bdimensions?\b|\bscd\b|"
                    r"slowly\s+changing",
                    3,
                ),
                (r"\banalytics?\b|\bbi\b|\bdashboards?\b|\breporting\b", 1),
                (r"\bmarts?\b", 2),
            ),
            recommendation=(
                "Model in layers (staging → intermediate → marts) with star schemas at an "
                "explicit grain, history kept as SCD Type 2 where it matters, partitioning and "
                "clustering chosen from the real query filters, and tests on every mart that "
                "people query."
            ),
            design=(
                "Staging: 1:1 with sources, renamed and typed, no business logic; intermediate: "
                "joins and business rules; marts: facts and conformed dimensions per domain.",
                "Facts declare their grain (one row per order line per day, …) and use surrogate "
                "keys to dimensions; dimensions with SCD2 (valid_from, valid_to, is_current).",
                "Partition facts by event date; cluster (Snowflake clustering keys, BigQuery "
                "clustering, Redshift sort keys) by the most common filters (tenant, customer).",
                "Semantic layer or metric definitions in one place (dbt metrics/semantic layer) so "
                "dashboards agree.",
                "Cost guardrails: per-user query limits, required partition filters on large "
                "tables.",
            ),
            numbers=(
                "Mart freshness SLO per table (e.g. < 90 min for hourly loads), checked by source "
                "freshness.",
                "Dashboard queries < 5-10 s on the marts; anything slower gets an aggregate table.",
            ),
            anti_patterns=(
                "One giant denormalised table for everything, rebuilt in full nightly.",
                "Business logic scattered in BI tools.",
                "Fact tables with mixed grain.",
            ),
            checklist=(
                "Every mart has a documented grain, owner and freshness SLO.",
                "Tests: unique and not_null on keys, relationships to dimensions.",
                "Large tables require a partition filter.",
            ),
            calculate=warehouse_math,
        ),
        Rule(
            id="data.elt-orchestration",
            title="ELT with dbt and orchestration",
            triggers=(
                (r"\betl\b|\belt\b", 3),
                (r"\bdbt\b", 3),
                (r"\bairflow\b|\bdagster\b|\bprefect\b|\bluigi\b", 3),
                (r"data\s+pipelines?|\bpipelines?\b", 2),
                (r"\bdags?\b|\bschedul\w*|\bincremental\b", 1),
            ),
            recommendation=(
                "Extract and load raw data first, transform inside the warehouse with dbt "
                "(incremental models with a unique key and merge), and orchestrate with "
                "idempotent tasks keyed by logical date so any run can be retried or backfilled "
                "safely."
            ),
            design=(
                "Extract/load with a managed connector (Fivetran, Airbyte) or CDC; raw schemas are "
                "append-only and never edited by hand.",
                "dbt: sources with freshness checks, staging models as views, marts as "
                "incremental tables (`materialized='incremental', unique_key=..., "
                "incremental_strategy='merge'`, a lookback window for late data).",
                "Orchestrator: one DAG per domain; tasks parameterised by data interval; retries "
                "with backoff; SLAs and alerts; no task depends on wall-clock time.",
                "Environments: dev/CI builds on a sample or zero-copy clone; `dbt build` in CI on "
                "modified models and their children (state:modified+).",
                "Lineage exported (dbt docs, OpenLineage) so impact of a change is visible.",
            ),
            numbers=(
                "Pipeline SLO: data for day D available by a fixed time (e.g. 06:00 UTC) on ≥ 99% "
                "of days.",
                "Incremental lookback window ≥ the longest observed late-arrival delay (e.g. 3 "
                "days).",
            ),
            anti_patterns=(
                "Non-idempotent loads that duplicate rows on retry.",
                "Full refreshes of large tables every run.",
                "Transformations hidden in extraction scripts.",
            ),
            checklist=(
                "Every task idempotent for its data interval.",
                "dbt tests and source freshness in CI and production runs.",
                "Slim CI builds only modified models and children.",
            ),
        ),
        Rule(
            id="data.streaming",
            title="Stream processing with Kafka and Flink",
            triggers=(
                (r"\bflink\b|kafka\s+streams|\bksql\w*|structured\s+streaming|\bbeam\b", 3),
                (r"\bstream(?:ing)?\s+(?:processing|pipelines?|analytics|jobs?)", 3),
                (r"\bwatermarks?\b|\bwindow\w*\b|late[\s-](?:events?|data|arriv\w*)", 3),
                (r"\bkafka\b", 2),
                (r"real[\s-]time|exactly[\s-]once", 1),
            ),
            recommendation=(
                "Process in event time: assign watermarks with bounded out-of-orderness, window "
                "by event time with allowed lateness and a side output for very late events, "
                "keep keyed state with TTL, checkpoint regularly, and use transactional sinks "
                "when the output must be exactly-once."
            ),
            design=(
                "Sources: Kafka with a watermark strategy (forBoundedOutOfOrderness, e.g. 30 s) "
                "and idleness handling so quiet partitions do not stall watermarks.",
                "State: RocksDB backend with incremental checkpoints every 30-60 s; state TTL on "
                "keyed state; savepoints before every deploy.",
                "Exactly-once to Kafka: KafkaSink with EXACTLY_ONCE and transaction.timeout.ms "
                "above checkpoint interval + max restart time (brokers cap it at "
                "transaction.max.timeout.ms, 15 min by default); consumers read_committed.",
                "Late events: allowedLateness for corrections, side output to a late-events topic "
                "and a batch reconciliation for anything later.",
                "Parallelism ≤ source partitions; key by the entity; watch for skew (one hot key "
                "pins one subtask).",
            ),
            numbers=(
                "Checkpoint duration < 50% of the interval; alert on failed checkpoints.",
                "Consumer lag in time < the freshness SLO; backpressure < 10% sustained.",
            ),
            anti_patterns=(
                "Processing-time windows where business time matters.",
                "Unbounded keyed state without TTL.",
                "Streaming where an hourly batch would meet the SLO.",
            ),
            checklist=(
                "Replay test from an old offset produces the same results.",
                "Savepoint → upgrade → restore rehearsed.",
                "Late-event path observable and reconciled.",
            ),
            calculate=streaming_math,
        ),
        Rule(
            id="data.lake-layout",
            title="Table layout and partitioning",
            triggers=(
                (r"\bpartition\w*", 3),
                (r"\biceberg\b|\bdelta\s+lake\b|\bhudi\b|\blakehouse\b|data\s+lake", 3),
                (r"\bparquet\b|\borc\b|small\s+files?|\bcompaction\b", 3),
                (r"\bs3\b|\bgcs\b|object\s+storage|\badls\b", 1),
                (r"\b\d+(?:\.\d+)?\s*(?:tb|pb)\b", 1),
            ),
            recommendation=(
                "Store analytical tables as Iceberg (or Delta) over Parquet, partition by a "
                "low-cardinality time column, cluster or sort by the common filter keys, keep "
                "files in the hundreds of megabytes, and run compaction and snapshot expiry as "
                "scheduled maintenance."
            ),
            design=(
                "Partition spec: days(event_ts) or months(event_ts) for smaller tables; Iceberg "
                "hidden partitioning so queries filter on event_ts, not a derived column.",
                "Sort order / Z-order on (tenant_id, customer_id) for selective lookups.",
                "Writes: target file size 512 MB (Iceberg default), row groups ~128 MB; streaming "
                "writers commit every few minutes, then compaction (rewrite_data_files).",
                "Maintenance: expire_snapshots, remove_orphan_files, rewrite_manifests on a "
                "schedule.",
                "Schema evolution by field id (Iceberg) — renames and drops are safe; partition "
                "evolution instead of table rewrites.",
            ),
            numbers=(
                "Files 128 MB-1 GB; partitions ≥ ~1 GB; < ~10K files per partition.",
                "Queries should prune ≥ 90% of files for typical filters (check the scan metrics).",
            ),
            anti_patterns=(
                "Partitioning by high-cardinality keys (user_id): millions of tiny files.",
                "Hive-style partitions that queries must filter on explicitly.",
                "No compaction behind a streaming writer.",
            ),
            checklist=(
                "Average file size per partition monitored.",
                "Compaction and snapshot expiry scheduled and alerting.",
                "Representative queries checked for partition pruning.",
            ),
            calculate=layout_math,
        ),
        Rule(
            id="data.quality",
            title="Data quality and contracts",
            triggers=(
                (r"data\s+quality|\bdq\b", 3),
                (r"great\s+expectations|\bsoda\b|\bmonte\s+carlo\b|\belementary\b", 3),
                (r"data\s+contracts?", 3),
                (r"\bfreshness\b|\banomal\w*|\bnulls?\b|\bduplicates?\b|\bdedup\w*", 2),
                (r"\bvalidat\w*|\breconcil\w*", 1),
            ),
            recommendation=(
                "Agree data contracts with producers (schema, semantics, owner, SLA), enforce "
                "them at the boundary, and test every important table on freshness, volume, "
                "schema, distribution and integrity, quarantining bad records instead of "
                "dropping or loading them silently."
            ),
            design=(
                "Contract: schema in the registry or a YAML spec, field semantics, PII tags, "
                "freshness and volume expectations, owner and escalation path; changes reviewed "
                "like API changes.",
                "Checks: dbt tests (unique, not_null, relationships, accepted_values) plus "
                "volume and distribution monitors (Elementary, Soda, Great Expectations).",
                "Severity: blocking checks stop publication of a mart; warning checks alert.",
                "Quarantine table for rejected rows with the reason; reprocess after fixes.",
                "Reconciliation against the source of truth (counts, sums of money) daily.",
            ),
            numbers=(
                "Counts within 0.01% of source (exact for financial amounts).",
                "Freshness and volume anomaly alerts routed to the owning team within 15 min.",
            ),
            anti_patterns=(
                "Tests only on staging tables while marts go untested.",
                "Silently dropping malformed records.",
                "Alerts without owners.",
            ),
            checklist=(
                "Contracts for the top producer datasets.",
                "Blocking tests on published marts.",
                "Quarantine and reprocess path exercised.",
            ),
        ),
        Rule(
            id="data.schema-evolution",
            title="Schema evolution",
            triggers=(
                (r"schema\s+(?:evolution|changes?|registry|drift|migration)", 3),
                (r"\bavro\b|\bprotobuf\b", 2),
                (r"backward[\s-]*compat\w*|forward[\s-]*compat\w*|breaking", 2),
                (r"\badd(?:ing)?\s+(?:a\s+)?(?:column|field)s?\b|\brenam\w*", 1),
            ),
            recommendation=(
                "Put every shared schema in a registry with an enforced compatibility mode "
                "(BACKWARD by default, FULL_TRANSITIVE for topics replayed from the beginning), "
                "evolve only by compatible changes, and route breaking changes through a new "
                "topic or table with a migration period."
            ),
            design=(
                "Avro: add fields with defaults; never change a field's type; aliases for renames; "
                "Protobuf: new field numbers only, `reserved` for removed ones.",
                "Compatibility check in CI (registry's test-compatibility endpoint or the Maven/"
                "Gradle plugin) before deploying producers.",
                "Warehouse: columns added nullable; renames as add + backfill + deprecate; views "
                "as the stable interface for consumers.",
                "Breaking change: dual-publish v1 and v2 topics, migrate consumers, retire v1.",
            ),
            numbers=(
                "Zero consumer failures from schema changes (track deserialisation errors per "
                "consumer).",
            ),
            anti_patterns=(
                "Compatibility mode NONE on shared topics.",
                "Reusing a field name with a different meaning or type.",
                "Producers deploying schema changes before consumers can read them.",
            ),
            checklist=(
                "Registry compatibility mode set per subject.",
                "CI compatibility check for every schema change.",
                "Deprecation window and owner for each breaking migration.",
            ),
        ),
        Rule(
            id="data.backfill",
            title="Backfills and reprocessing",
            triggers=(
                (r"\bbackfill\w*", 3),
                (r"\breprocess\w*|\bre-?run\w*|\breplay\w*", 3),
                (r"historical\s+(?:data|load)|\bhistory\b", 1),
                (r"\bmigrat\w*\s+(?:data|tables?)", 2),
            ),
            recommendation=(
                "Backfill idempotently and in slices: write to a new table or snapshot partition "
                "by partition with throttling, reconcile counts and checksums, then swap "
                "atomically, so production readers never see half-written history."
            ),
            design=(
                "Slice by the partition key (day/month) and run slices as independent, "
                "retryable tasks (Airflow backfill, dbt --vars for the interval).",
                "Write to a shadow table (or an Iceberg branch / Delta clone), validate, then "
                "swap (rename, view switch, or fast-forward the branch).",
                "Throttle reads from operational sources (replica, off-peak windows, rate limits).",
                "Record the code version and parameters used for every backfilled slice.",
            ),
            numbers=(
                "Reconciliation per slice: row count and sum checks vs source, tolerance written "
                "down.",
            ),
            anti_patterns=(
                "Overwriting production tables in place.",
                "One giant job that restarts from zero on failure.",
                "Backfilling from the primary database at peak.",
            ),
            checklist=(
                "Backfill runbook with slice size, throttle and validation queries.",
                "Swap step is atomic and reversible.",
            ),
            calculate=backfill_math,
        ),
        Rule(
            id="data.spark",
            title="Spark batch performance",
            triggers=(
                (r"\bspark\b|\bpyspark\b|\bdatabricks\b|\bemr\b|\bdataproc\b", 3),
                (r"\bshuffle\w*|\bskew\w*|broadcast\s+join", 3),
                (r"\bjoins?\b|\bexecutors?\b|\bspill\w*", 1),
            ),
            recommendation=(
                "Let Spark's adaptive query execution handle shuffle partitions and skew, "
                "broadcast "
                "small dimensions, prune early (filters and columns before joins), and size "
                "partitions around 128-200 MB; read the Spark UI's stage metrics before tuning "
                "anything else."
            ),
            design=(
                "spark.sql.adaptive.enabled=true (default since 3.2) with "
                "skewJoin.enabled and coalescePartitions.",
                "Broadcast joins for dimensions under ~100 MB-1 GB "
                "(spark.sql.autoBroadcastJoinThreshold); salt keys for residual skew.",
                "Avoid Python UDFs on hot paths (use built-ins or pandas UDFs); cache only reused "
                "DataFrames, and unpersist.",
                "Output file sizes controlled (repartition by the table's partition columns; "
                "maxRecordsPerFile) to avoid small files.",
            ),
            numbers=(
                "Shuffle partitions of ~128-200 MB each; spill to disk near zero.",
                "Task time skew: max/median < 3× in the heaviest stage.",
            ),
            anti_patterns=(
                "collect() on large DataFrames.",
                "Row-at-a-time Python UDFs.",
                "Fixed spark.sql.shuffle.partitions=200 for every job size.",
            ),
            checklist=(
                "Stage metrics reviewed (shuffle read/write, spill, skew) for the slowest job.",
                "File sizes of outputs checked.",
            ),
        ),
        Rule(
            id="data.governance",
            title="PII, retention and lineage",
            triggers=(
                (r"\bpii\b|personal\s+data|\bgdpr\b|\bccpa\b", 3),
                (r"\blineage\b|\bcatalog\w*\b|\bopenlineage\b|\bdatahub\b|\bunity\s+catalog\b", 3),
                (
                    r"\bretention\b|right\s+to\s+(?:erasure|be\s+forgotten)|\bdeletion\s+requests?",
                    3,
                ),
                (r"\bmask\w*|\btokeni[sz]\w*|\bgovernance\b", 2),
            ),
            recommendation=(
                "Tag PII at ingestion, keep it out of layers that do not need it (tokenise or "
                "hash), enforce masking and access by role, track lineage so every copy is known, "
                "and implement erasure and retention as scheduled, tested jobs."
            ),
            design=(
                "Classification tags on columns in the catalog, propagated by lineage (dbt meta, "
                "DataHub/Unity Catalog).",
                "Dynamic masking or policy tags for PII columns; analysts see tokens by default.",
                "Erasure: delete by subject id across all tables (lineage tells you which), then "
                "compact/rewrite files (Iceberg/Delta keep old files until expiry), or "
                "crypto-shred per-subject keys.",
                "Retention per dataset enforced by partition drops.",
            ),
            numbers=(
                "GDPR requests answered within one month (Art. 12(3)); deleted data gone from "
                "table snapshots after expiry (e.g. ≤ 30 days).",
            ),
            anti_patterns=(
                "PII copied into every layer and every sandbox.",
                "Deletes that leave data in old snapshots forever.",
                "Access granted to people instead of roles.",
            ),
            checklist=(
                "PII columns tagged and masked.",
                "Erasure job tested end to end including snapshots.",
                "Lineage covers all tables with PII (review with /security).",
            ),
        ),
    ),
    general=Rule(
        id="data.general",
        title="Data pipeline review checklist",
        triggers=(),
        recommendation=(
            "No specific data topic was recognised, so this is the review the data specialist "
            "runs on any pipeline. Name the sources, volumes, freshness needs and consumers for "
            "a specific design."
        ),
        design=(
            "Source → transport → processing → storage → serving, each with an owner.",
            "Batch by default; streaming only when a freshness SLO needs it.",
            "Idempotent loads keyed by data interval; safe retries and backfills.",
            "Schemas in a registry with compatibility enforced.",
            "Quality checks on freshness, volume, schema and integrity.",
            "Lineage, PII tagging and retention from day one.",
        ),
        numbers=(
            "Freshness SLO per table; reconciliation within 0.01% of source.",
            "Parquet files 128 MB-1 GB; partitions ≥ ~1 GB.",
        ),
        anti_patterns=(
            "Dual writes instead of CDC or an outbox.",
            "Non-idempotent loads.",
            "Small-file explosions from over-partitioning.",
            "Untested marts.",
        ),
        checklist=(
            "Freshness and volume alerts per critical table.",
            "Backfill procedure documented and rehearsed.",
            "Schema compatibility checks in CI.",
            "Owners for every dataset.",
        ),
    ),
)
