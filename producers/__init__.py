"""The client library upstream services use to submit requests and await their answers."""

from producers.client import (
    AsyncSwitchboardClient,
    Response,
    ResultTimeout,
    SwitchboardClient,
    build_request,
)

__all__ = [
    "AsyncSwitchboardClient",
    "Response",
    "ResultTimeout",
    "SwitchboardClient",
    "build_request",
]
