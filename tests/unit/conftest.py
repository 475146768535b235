"""Fixtures shared by unit test modules."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from switchboard.devtools.fake_anthropic import FakeAnthropic


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    """The real SDK over loopback HTTP against the module's own ``fake`` server fixture (each
    module sets its knobs), retrying nothing itself so each test sees every fault."""
    with anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0) as sdk:
        yield sdk
