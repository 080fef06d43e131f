"""The provider errors, one branch of the project's tree (`ivr.errors`)::

    IvrError
    └── ProviderError            a remote provider request failed (`reason` for metrics)
        ├── ProviderUnavailable  breaker open, or the provider unreachable
        ├── ProviderTimeout      connect or read took too long
        ├── ProviderHTTPError    a non-2xx status (`status`)
        ├── ProviderBadResponse  a 2xx we cannot use
        └── ProviderBusy         our own limits: no slot within the queue time

A leaf, so the client (`http`) and its limiter (`limiter`) share it without a cycle.
"""

from __future__ import annotations

from ivr.errors import IvrError

__all__ = [
    "ProviderBadResponse",
    "ProviderBusy",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderTimeout",
    "ProviderUnavailable",
]


class ProviderError(IvrError):
    """A remote provider request failed; `reason` is a stable code for metrics."""

    reason = "error"

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(provider, message)
        self.provider = provider
        self.message = message

    def __str__(self) -> str:
        return f"{self.provider}: {self.reason}: {self.message}"


class ProviderUnavailable(ProviderError):
    """The breaker is open, or the provider could not be reached at all."""

    reason = "unavailable"


class ProviderTimeout(ProviderError):
    """Connecting or reading took longer than the configured timeout."""

    reason = "timeout"


class ProviderHTTPError(ProviderError):
    """A non-2xx status: a non-retryable 4xx, or a retryable one after the last retry."""

    reason = "http_status"

    def __init__(self, provider: str, status: int, message: str) -> None:
        super().__init__(provider, message)
        self.status = status

    def __str__(self) -> str:
        return f"{self.provider}: HTTP {self.status}: {self.message}"


class ProviderBadResponse(ProviderError):
    """A 2xx response we cannot use: malformed JSON, wrong content type."""

    reason = "bad_response"


class ProviderBusy(ProviderError):
    """Refused before sending: no slot under the provider's limits within the queue time.

    Not a provider failure (the breaker is not told): the provider is healthy, this
    process is at its limits, and the embedded engine serves the request instead.
    """

    reason = "busy"
