"""The alert rules and the dashboard against the code: promtool checks and unit-tests every
alert, each alert has its runbook in docs/operations.md, and every metric the dashboard and
the rules use is one that ``switchboard.core.metrics`` exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from switchboard.core import metrics

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "infra" / "prometheus" / "rules"
RULES = RULES_DIR / "switchboard.yml"
RULE_TESTS = RULES_DIR / "switchboard.test.yml"
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "switchboard.json"
OPERATIONS = REPO / "docs" / "operations.md"

#: Series Prometheus makes itself, not the code.
PROMETHEUS_OWN = {"up"}
#: PromQL words that look like metric names.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install -y --no-install-recommends prometheus")
    return promtool


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, which may look like names
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        if match.start() > 0 and (
            expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."
        ):
            continue  # a number's exponent or unit
        names.add(word)
    return names


def _rules() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_metric_names_are_parsed_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(a_seconds_bucket{stage="route",'
        'x=~"b_total"}[5m]))) > 0.1 and on (group) deriv(c_records[10m]) * 1e3 > bool 2'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "c_records"}


def test_every_metric_the_dashboard_and_the_rules_use_is_exported() -> None:
    exported = metrics.exported_names() | PROMETHEUS_OWN
    used = {(f"rule {r['alert']}", n) for r in _rules() for n in metric_names(str(r["expr"]))}
    used |= {(f"panel {t}", n) for t, e in _dashboard_exprs() for n in metric_names(e)}
    assert len({n for _, n in used}) >= 15  # the parser found them: this test can fail
    missing = sorted((where, name) for where, name in used if name not in exported)
    assert missing == []


def test_a_misspelt_metric_would_be_caught() -> None:
    exported = metrics.exported_names()
    assert "switchboard_records_total" in exported
    assert "switchboard_e2e_duration_seconds_bucket" in exported
    assert "switchboard_record_total" not in exported


def test_the_dashboard_has_the_panels_operators_read() -> None:
    used = {n for _, e in _dashboard_exprs() for n in metric_names(e)}
    for name in (
        "switchboard_records_total",
        "switchboard_responses_total",
        "switchboard_e2e_duration_seconds_bucket",
        "switchboard_stage_duration_seconds_bucket",
        "switchboard_consumer_lag_records",
        "switchboard_in_flight",
        "switchboard_paused_partitions",
        "switchboard_retries_total",
        "switchboard_dead_letters_total",
        "switchboard_breaker_state",
        "switchboard_model_calls_total",
        "switchboard_model_tokens_total",
        "switchboard_model_cost_usd_total",
        "switchboard_model_errors_total",
    ):
        assert name in used, name


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass_and_cover_every_alert_firing_and_quiet() -> None:
    out = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {str(r["alert"]) for r in _rules()}
    assert firing == alerts and quiet == alerts


def test_each_alert_says_what_and_links_its_runbook_section() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in _rules():
        notes = rule["annotations"]
        assert isinstance(notes, dict)
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = str(notes["runbook"]).partition("#")
        assert page == "docs/operations.md" and anchor in headings, rule["alert"]


def test_prometheus_loads_the_rules_but_not_their_unit_tests(tmp_path: Path) -> None:
    """prometheus.yml's rule glob (as mounted in compose) matches switchboard.yml only."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    config = (REPO / "infra" / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/rules", str(rules)))
    out = subprocess.run(
        [_promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout and "switchboard.yml" in out.stdout
    assert "switchboard.test.yml" not in out.stdout
