"""One remote provider's settings, read per role from `IVR_{STT,TTS,LLM}_*`.

Split from `config` (which re-exports it): the provider settings grew with the rate
limits, and `providers.http` needs only this, not the whole server's `Settings`.
A role without a base URL has no remote provider, so the embedded engines stay the
default and a plain install needs no network and no keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ivr.errors import ConfigError

__all__ = ["ROLE_KEYS", "ProviderConfig", "ProviderRole", "provider_from_env"]

ProviderRole = Literal["llm", "stt", "tts"]

_DEFAULT_MODELS: dict[ProviderRole, str] = {
    "llm": "gpt-4o-mini",
    "stt": "whisper-1",
    "tts": "tts-1",
}

# An `IVR_CONFIG` file's keys in a role's section -> the `IVR_{ROLE}_*` suffix they set.
ROLE_KEYS = {"base_url": "BASE_URL", "api_key": "API_KEY", "model": "MODEL",
             "timeout_s": "TIMEOUT_S", "concurrency": "CONCURRENCY", "rpm": "RPM",
             "tpm": "TPM", "queue_ms": "QUEUE_MS"}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One remote OpenAI-compatible provider for a role, from `IVR_{ROLE}_*`."""

    role: ProviderRole
    base_url: str
    # repr=False: a config printed in a log line or a traceback must not leak the key.
    api_key: str = field(default="", repr=False)
    model: str = ""
    voice: str | None = None
    timeout_connect_s: float = 3.0
    timeout_read_s: float = 15.0
    # The ceiling of the adaptive concurrency limit (`providers.limiter`): it starts
    # here, halves on a 429 and climbs back one at a time, never above.
    max_concurrency: int = 8
    # Requests (retries included) and estimated tokens any 60 s window may hold; 0: none.
    rpm: int = 0
    tpm: int = 0
    # A request that cannot start within this long is refused at once (`ProviderBusy`),
    # so the caller is served by the embedded engine instead of waiting in a queue.
    queue_ms: int = 1000
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


def _number(
    env: Mapping[str, str], key: str, default: float, *, integer: bool, zero: bool = False
) -> float:
    """`env[key]` as a positive number (or 0 where `zero` allows it: "no limit")."""
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError as e:
        kind = "whole number" if integer else "number"
        raise ConfigError(f"{key} must be a {kind}, got {raw!r}") from e
    if value < 0 or (value == 0 and not zero):
        allowed = "0 (no limit) or a positive number" if zero else "positive"
        raise ConfigError(f"{key} must be {allowed}, got {raw!r}")
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
        rpm=int(_number(env, prefix + "RPM", 0, integer=True, zero=True)),
        tpm=int(_number(env, prefix + "TPM", 0, integer=True, zero=True)),
        queue_ms=int(_number(env, prefix + "QUEUE_MS", 1000, integer=True)),
    )
