"""Remote, OpenAI-compatible providers (LLM, STT, TTS) behind one resilient HTTP client."""

from __future__ import annotations

from ivr.providers.http import (
    ProviderBadResponse,
    ProviderBusy,
    ProviderClient,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
)
from ivr.providers.redact import redact

__all__ = [
    "ProviderBadResponse",
    "ProviderBusy",
    "ProviderClient",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "redact",
]
