"""Token-bound rate limits: the Claude backend (the real SDK) against the fake provider with a
tokens-per-minute limit that binds. The backend follows the limit's headers and each answer's
usage, so it waits for tokens instead of taking 429s, and keeps the limit busy."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr

from consumers.specialists.backends import claude_backend
from switchboard.core.settings import Settings
from switchboard.devtools.fake_anthropic import FakeAnthropic
from switchboard.devtools.fake_anthropic.prompts import PromptSplit

pytestmark = pytest.mark.integration

KEY = "sk-token-limits"
TPM = 60_000  # 1,000 tokens a second; a question counts about 15 (the persona is cached)
CALLERS = 16
SECONDS = 8.0
#: The first calls go before any header has told the limit, and the estimate of a question's
#: tokens starts at four characters a token with the (cached, free) persona counted.
WARMUP_S = 3.0


def _spend_the_burst(fake: FakeAnthropic) -> None:
    """The bucket starts full (a minute's worth): spend it, as steady traffic would have."""
    one = PromptSplit(cache_key=None, cached_tokens=0, uncached_tokens=1, cache_ttl_s=0.0)
    while fake.state.admit(KEY, one).admitted:
        pass


def test_a_binding_tokens_per_minute_limit_is_kept_busy_without_429s() -> None:
    import anthropic

    with FakeAnthropic(latency_ms=50, tpm=TPM) as fake:
        _spend_the_burst(fake)
        settings = Settings(
            anthropic_api_key=SecretStr(KEY),
            anthropic_base_url=fake.base_url,
            anthropic_max_retries=0,
        )
        backend = claude_backend(settings, connections=CALLERS)
        answered: list[int] = []
        limited: list[float] = []

        async def caller(n: int, until: float) -> None:
            i = 0
            while time.monotonic() < until:
                prompt = f"caller {n} question {i}: how should I size the connection pool?"
                try:
                    answer = await backend.answer("backend", prompt, {})
                except anthropic.RateLimitError as exc:  # the pipeline's retry tiers, in short
                    limited.append(time.monotonic())
                    await asyncio.sleep(float(exc.response.headers.get("retry-after-ms", 0)) / 1000)
                    continue
                assert answer.usage is not None
                answered.append(answer.usage["input_tokens"])
                i += 1

        async def run() -> float:
            began = time.monotonic()
            await asyncio.gather(*(caller(n, began + SECONDS) for n in range(CALLERS)))
            await backend.aclose()
            return began

        began_mono = asyncio.run(run())
        began = time.time() - (time.monotonic() - began_mono)
        calls = fake.stats().calls
    assert answered, "no call was answered"
    window_start, window_end = began + WARMUP_S, began + SECONDS
    tokens = sum(c.tokens for c in calls if c.status == 200 and window_start <= c.at < window_end)
    per_minute = tokens / (window_end - window_start) * 60
    late_429 = [c for c in calls if c.status == 429 and c.at >= window_start]
    assert per_minute >= 0.90 * TPM, f"{per_minute:.0f} tokens/min of {TPM}"
    assert not late_429, f"{len(late_429)} calls took a 429 once the limit was known"
    # Before the first header nothing is known: at most the first wave is refused.
    assert len(limited) <= CALLERS
