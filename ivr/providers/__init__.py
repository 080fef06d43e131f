"""Remote, OpenAI-compatible providers (LLM, STT, TTS) behind one resilient HTTP client."""

from __future__ import annotations

from ivr.providers.config import ProviderConfig, ProviderRole, provider_from_env, redact
from ivr.providers.http import (
    ProviderBadResponse,
    ProviderClient,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
)

__all__ = [
    "ProviderBadResponse",
    "ProviderClient",
    "ProviderConfig",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderRole",
    "ProviderTimeout",
    "ProviderUnavailable",
    "provider_from_env",
    "redact",
]
