"""A loopback fake of the Anthropic API, for tests, demos and benchmarks of the real SDK.

Modules by role: ``faults`` (spec syntax and the fault plan), ``prompts`` (reading requests),
``replies`` (deterministic answers and wire shapes), ``ratelimit``, ``batches``, ``state``
(everything counted, behind one lock), ``server`` (the aiohttp routes), ``fake``
(``FakeAnthropic``'s lifecycle) and ``cli`` (``main``).
"""

from switchboard.devtools.fake_anthropic.cli import main
from switchboard.devtools.fake_anthropic.fake import FakeAnthropic
from switchboard.devtools.fake_anthropic.faults import Fault, FaultSpecError
from switchboard.devtools.fake_anthropic.state import CallRecord, FakeStats

__all__ = ["CallRecord", "FakeAnthropic", "FakeStats", "Fault", "FaultSpecError", "main"]
