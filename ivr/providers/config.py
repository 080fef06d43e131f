"""Settings of one remote provider, read from `IVR_{ROLE}_*` environment variables.

A role without a base URL has no remote provider: the embedded engines (pocketsphinx,
espeak-ng) stay the default, so a plain install needs no network and no keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ivr.errors import ConfigError

__all__ = ["ProviderConfig", "ProviderRole", "provider_from_env", "redact"]

ProviderRole = Literal["llm", "stt", "tts"]

_DEFAULT_MODELS: dict[ProviderRole, str] = {
    "llm": "gpt-4o-mini",
    "stt": "whisper-1",
    "tts": "tts-1",
}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    role: ProviderRole
    base_url: str
    # repr=False: a config printed in a log line or a traceback must not leak the key.
    api_key: str = field(default="", repr=False)
    model: str = ""
    voice: str | None = None
    timeout_connect_s: float = 3.0
    timeout_read_s: float = 15.0
    max_concurrency: int = 8
    max_retries: int = 3
    # After this many consecutive failures the breaker opens for `breaker_cooldown_s`.
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    # Upper bound on a server's Retry-After: a provider asking for minutes must not hold
    # a caller on the line that long; we fail (and fall back) instead.
    retry_after_cap_s: float = 10.0
    backoff_base_s: float = 0.25
    backoff_max_s: float = 4.0

    @property
    def name(self) -> str:
        """A log- and metric-safe identity: role and host, never the key."""
        host = re.sub(r"^[a-z]+://", "", self.base_url).split("/", 1)[0]
        return f"{self.role}:{host}"


def _number(env: Mapping[str, str], key: str, default: float, *, integer: bool) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError as e:
        kind = "whole number" if integer else "number"
        raise ConfigError(f"{key} must be a {kind}, got {raw!r}") from e
    if value <= 0:
        raise ConfigError(f"{key} must be positive, got {raw!r}")
    return value


def provider_from_env(role: ProviderRole, env: Mapping[str, str]) -> ProviderConfig | None:
    """The provider for `role` from `env`, or None when `IVR_{ROLE}_BASE_URL` is unset."""
    prefix = f"IVR_{role.upper()}_"
    base_url = env.get(prefix + "BASE_URL", "").strip().rstrip("/")
    if not base_url:
        return None
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{prefix}BASE_URL must be an http(s) URL, got {base_url!r}")
    read_timeout = _number(env, prefix + "TIMEOUT_S", 15.0, integer=False)
    concurrency = int(_number(env, prefix + "CONCURRENCY", 8, integer=True))
    return ProviderConfig(
        role=role,
        base_url=base_url,
        api_key=env.get(prefix + "API_KEY", "").strip(),
        model=env.get(prefix + "MODEL", "").strip() or _DEFAULT_MODELS[role],
        voice=(env.get("IVR_TTS_VOICE", "").strip() or "alloy") if role == "tts" else None,
        timeout_read_s=read_timeout,
        max_concurrency=concurrency,
    )


# Bearer tokens and OpenAI-style keys (sk-..., sk-proj-...) wherever they appear in text.
_SECRET = re.compile(r"(?i)(bearer\s+)[^\s'\",]+|\bsk-[A-Za-z0-9_\-]{8,}")


def redact(text: str, *secrets: str) -> str:
    """`text` with the given secrets and anything that looks like an API key masked.

    Applied to every provider error message and response excerpt before it is logged or
    raised, because provider error bodies sometimes echo the request's headers.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET.sub(lambda m: (m.group(1) or "") + "***", text)
