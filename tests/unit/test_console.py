"""The console's pure parts: accounts from settings (masked, validated), basic auth, CSRF
tokens, the throughput rates and sparklines of the overview, and review job folders."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from switchboard.console.auth import Role, User, Users
from switchboard.console.cache import ThroughputSample, sparkline, throughput
from switchboard.console.reviews import job_html, list_jobs
from switchboard.core.settings import Settings

USERS = {"alice": {"password": "s3cret-a", "role": "operator"}, "bob": {"password": "pw-b"}}


def _basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_console_users_are_parsed_masked_and_bad_ones_get_one_line() -> None:
    settings = Settings(console_users=json.dumps(USERS))
    assert settings.console_accounts() == {
        "alice": ("s3cret-a", "operator"),
        "bob": ("pw-b", "viewer"),
    }
    masked = json.dumps(settings.masked())
    assert "s3cret-a" not in masked and "pw-b" not in masked
    assert settings.masked()["console_users"] == "***"
    for bad, says in (
        ("{not json", "not JSON"),
        ("[1]", "must be an object"),
        ('{"a": {"password": "zz-pw-9", "role": "root"}}', "role 'root'"),
        ('{"a": {"role": "viewer"}}', "non-empty password"),
    ):
        with pytest.raises(ValidationError) as caught:
            Settings(console_users=bad)
        assert says in str(caught.value)
        assert "zz-pw-9" not in str(caught.value)  # the message never quotes a password


def test_basic_auth_accepts_only_the_right_password() -> None:
    users = Users({"alice": ("s3cret-a", "operator"), "bob": ("pw-b", "viewer")})
    assert users.authenticate(_basic("alice", "s3cret-a")) == User("alice", Role.OPERATOR)
    assert users.authenticate(_basic("bob", "pw-b")) == User("bob", Role.VIEWER)
    for header in (
        None,
        "",
        _basic("alice", "wrong"),
        _basic("carol", "s3cret-a"),
        "Basic !!!",
        "Bearer x",
        "Basic " + base64.b64encode(b"alice").decode(),
    ):
        assert users.authenticate(header) is None, header
    assert not Users({})


def test_csrf_tokens_differ_per_user_and_per_process() -> None:
    one, two = (
        Users({"a": ("p", "operator"), "b": ("q", "operator")}),
        Users({"a": ("p", "operator")}),
    )
    a, b = User("a", Role.OPERATOR), User("b", Role.OPERATOR)
    assert one.csrf_ok(a, one.csrf_token(a))
    assert not one.csrf_ok(a, one.csrf_token(b))
    assert not one.csrf_ok(a, two.csrf_token(a))
    assert not one.csrf_ok(a, None) and not one.csrf_ok(a, "")


def test_throughput_is_the_growth_per_second_and_a_restart_counts_zero() -> None:
    history = [
        ThroughputSample(0, {"router": 0}),
        ThroughputSample(2000, {"router": 10, "worker.api": 4}),
        ThroughputSample(4000, {"router": 3, "worker.api": 8}),  # the router restarted
    ]
    assert throughput(history) == {"router": [5.0, 0.0], "worker.api": [2.0, 2.0]}
    svg = sparkline([0.0, 5.0, 0.0])
    assert svg.startswith("<svg") and svg.count(",") == 3 and "polyline" in svg
    assert "polyline" not in sparkline([1.0])


def test_review_jobs_are_found_and_report_paths_stay_inside_the_folder(tmp_path: Path) -> None:
    job = tmp_path / "review-nightly"
    job.mkdir()
    (job / "report.json").write_text(
        json.dumps(
            {
                "job": "nightly",
                "created_at": "2026-01-01T00:00:00Z",
                "verdict": "fail",
                "documents": [{"findings": [{}, {}]}],
                "failed": [],
                "summary": {"high": 2},
                "usage": {"cost_micro_usd": 1500},
            }
        )
    )
    (job / "report.html").write_text("<html></html>")
    (tmp_path / "review-broken").mkdir()
    (tmp_path / "review-broken" / "report.json").write_text("{")
    jobs = {j.name: j for j in list_jobs(tmp_path)}
    assert (jobs["review-nightly"].findings, jobs["review-nightly"].verdict) == (2, "fail")
    assert jobs["review-broken"].verdict == "unreadable"
    assert job_html(tmp_path, "review-nightly") == job / "report.html"
    for name in ("..", "review-nightly/../..", "other", "review-broken"):
        assert job_html(tmp_path, name) is None
