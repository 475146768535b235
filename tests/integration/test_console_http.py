"""The console over HTTP (Starlette's TestClient against the real app and a real broker):
every page and endpoint answers 401 without credentials, a viewer gets 403 on every action, an
action without the CSRF token is refused and writes nothing, and no password or API key is
ever rendered."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from producers.review.report import write_reports
from switchboard.console.app import create_app
from switchboard.console.auth import Role, User
from switchboard.console.command import build_console
from tests.unit.review_corpus import corpus_documents, offline_review

from .console_kit import EXHAUSTED, PERMANENT, Seed, seed, until
from .harness import create_topics, settings_for_test

pytestmark = pytest.mark.integration

OPERATOR = ("olga", "op-pass-7f3b9c")
VIEWER = ("victor", "view-pass-2d81e0")
API_KEY = "sk-ant-console-test-5b2f"
USERS = {
    OPERATOR[0]: {"password": OPERATOR[1], "role": "operator"},
    VIEWER[0]: {"password": VIEWER[1], "role": "viewer"},
}
GET_PAGES = [
    "/",
    "/overview/body",
    "/api/status",
    "/dlq",
    "/dlq?source=parking-lot",
    "/audit",
    "/follow",
    "/reviews",
    "/static/console.js",
]
ACTIONS = ["/dlq/plan", "/dlq/replay", "/dlq/purge"]


@dataclass
class World:
    client: TestClient
    topics: Any
    seeds: list[Seed]
    review_dir: Path


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    review_dir = tmp_path_factory.mktemp("reviews")
    write_reports(
        offline_review(corpus_documents()), review_dir / "review-corpus", ["html", "json"]
    )
    settings = settings_for_test(
        kafka_bootstrap,
        console_users=json.dumps(USERS),
        anthropic_api_key=API_KEY,
        review_dir=review_dir,
        console_refresh_s=0.5,
    )
    kafka = dict(kafka_config)
    topics = create_topics(settings, kafka)
    seeds = [
        Seed(
            f"ch-{i}",
            ("api", "data")[i % 2],
            ("acme", "globex")[i % 2],
            EXHAUSTED if i % 3 == 0 else PERMANENT,
        )
        for i in range(6)
    ]
    seed(settings, kafka, seeds)
    with TestClient(create_app(build_console(settings, kafka))) as client:
        until(lambda: "6</strong> of 6" in client.get("/dlq", auth=OPERATOR).text)
        yield World(client, topics, seeds, review_dir)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@pytest.mark.parametrize(
    "path", [*GET_PAGES, "/dlq/letter?id=0:0", "/reviews/review-corpus/report.html"]
)
def test_every_page_answers_401_without_credentials(world: World, path: str) -> None:
    for auth in (None, (OPERATOR[0], "wrong"), ("nobody", OPERATOR[1])):
        response = world.client.get(path, auth=auth)
        assert response.status_code == 401, (path, auth)
        assert response.headers["www-authenticate"].startswith("Basic realm=")
    # With credentials the same page answers (a letter id may name no record: 404, not 401).
    assert world.client.get(path, auth=VIEWER).status_code in (200, 404)


@pytest.mark.parametrize("path", ACTIONS)
def test_every_action_answers_401_without_credentials(world: World, path: str) -> None:
    assert world.client.post(path, data={"all": "1"}).status_code == 401


@pytest.mark.parametrize("path", ACTIONS)
def test_a_viewer_gets_403_on_replay_and_purge(world: World, path: str) -> None:
    """With the viewer's own valid CSRF token, every action is still refused: the role."""
    page = world.client.get("/dlq", auth=VIEWER).text
    assert "plan-selected" not in page  # no action buttons for a viewer
    token = world.client.app.state.console.users.csrf_token(User(VIEWER[0], Role.VIEWER))  # type: ignore[attr-defined]
    response = world.client.post(
        path, data={"csrf_token": token, "all": "1", "action": "purge"}, auth=VIEWER
    )
    assert response.status_code == 403
    assert "operator role" in response.text
    assert world.client.app.state.console.cache.audit_events() == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ACTIONS)
def test_an_action_without_the_csrf_token_is_refused_and_writes_nothing(
    world: World, path: str
) -> None:
    token = _csrf(world.client.get("/dlq", auth=OPERATOR).text)
    viewer_token = "0" * len(token)
    for data in ({"all": "1"}, {"all": "1", "csrf_token": viewer_token}):
        response = world.client.post(path, data=data, auth=OPERATOR)
        assert response.status_code == 403, data
        assert "CSRF" in response.text
    assert world.client.app.state.console.cache.audit_events() == []  # type: ignore[attr-defined]
    # The same form with the token goes through (a dry run: plan writes nothing either).
    ok = world.client.post("/dlq/plan", data={"all": "1", "csrf_token": token}, auth=OPERATOR)
    assert ok.status_code == 200 and "would replay" in ok.text


def test_no_password_or_api_key_is_ever_rendered(world: World) -> None:
    letter = world.client.get("/dlq", auth=OPERATOR).text
    first = re.search(r"/dlq/letter\?source=dlq&(?:amp;)?id=(\d+:\d+)", letter)
    assert first
    pages = [
        *GET_PAGES,
        f"/dlq/letter?id={first.group(1)}",
        "/follow?request_id=ch-1",
        "/reviews/review-corpus/report.html",
    ]
    secrets = [OPERATOR[1], VIEWER[1], API_KEY]
    for path in pages:
        for auth in (OPERATOR, VIEWER):
            body = world.client.get(path, auth=auth).text
            assert not [s for s in secrets if s in body], path


def test_the_list_filters_and_counts_and_the_letter_page_decodes(world: World) -> None:
    """Filtering by specialist leaves that specialist's letters, counted by group; a letter's
    page shows its decoded request, attempts and original bytes in hex."""
    page = world.client.get("/dlq?specialist=data&error_class=permanent", auth=VIEWER).text
    wanted = [s for s in world.seeds if s.specialist == "data" and s.failure is PERMANENT]
    assert f"<strong>{len(wanted)}</strong> of 6" in page
    assert {m for m in re.findall(r"/follow\?request_id=(ch-\d+)", page)} == {
        s.request_id for s in wanted
    }
    letter_id = re.search(r'id=(\d+:\d+)">', page)
    assert letter_id
    detail = world.client.get(f"/dlq/letter?id={letter_id.group(1)}", auth=VIEWER).text
    assert "BadRequestError" in detail and "question" in detail
    assert re.search(r"00000000  [0-9a-f]{2} ", detail)  # the hex dump
    missing = world.client.get("/dlq/letter?id=9:999", auth=VIEWER)
    assert missing.status_code == 404
    bad = world.client.get("/dlq?since=yesterdayish", auth=VIEWER)
    assert bad.status_code == 400 and "not a time" in bad.text


def test_the_review_jobs_are_listed_and_their_report_served(world: World) -> None:
    page = world.client.get("/reviews", auth=VIEWER).text
    assert "review-corpus/report.html" in page
    report = world.client.get("/reviews/review-corpus/report.html", auth=VIEWER)
    assert report.status_code == 200 and 'id="verdict"' in report.text
    assert world.client.get("/reviews/..%2Fetc/report.html", auth=VIEWER).status_code == 404


def test_an_operator_purges_one_letter_and_the_audit_says_who_and_how_many(world: World) -> None:
    """Runs last (the module's other tests expect no audit event): acknowledging one letter
    hides it from the list, and the audit page lists the purge by olga of 1; a pointer
    outside the page's topic is refused."""
    page = world.client.get("/dlq?specialist=api", auth=OPERATOR).text
    token = _csrf(page)
    pointer = re.search(r'name="pointer" value="([^"]+)"', page)
    assert pointer
    outside = world.client.post(
        "/dlq/purge",
        data={"csrf_token": token, "pointer": world.topics.requests + "/0/0"},
        auth=OPERATOR,
    )
    assert outside.status_code == 400 and "is not in" in outside.text
    done = world.client.post(
        "/dlq/purge", data={"csrf_token": token, "pointer": pointer.group(1)}, auth=OPERATOR
    )
    assert done.status_code == 200 and "1 acknowledged" in done.text
    assert "<strong>5</strong> of 6" in world.client.get("/dlq", auth=VIEWER).text
    audit = world.client.get("/audit", auth=VIEWER).text
    assert re.search(
        r'class="user">olga<.*class="action">purge<.*class="num count">1<', audit, re.S
    )
