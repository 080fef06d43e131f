"""One resilient HTTP client per remote provider: timeouts, retries, breaker, limits.

Remote engines sit on the live path of a phone call, where a stuck request is dead air.
So every request has connect and read timeouts; transient failures (429, 5xx, resets,
timeouts) are retried a few times with capped exponential backoff and full jitter (so a
fleet of calls does not retry in lock-step); a circuit breaker stops sending to a provider
that keeps failing, which lets callers fall back to the embedded engines at once instead
of waiting out timeouts call after call; and an adaptive limiter (`limiter`) bounds how
many requests one process has in flight and starts per minute, backing off when the
provider answers 429, so a burst of calls does not meet a rate limit at full strength.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as jsonlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import aiohttp
import structlog

from ivr.errors import IvrError
from ivr.provider_config import ProviderConfig
from ivr.providers.errors import (
    ProviderBadResponse,
    ProviderBusy,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
)
from ivr.providers.limiter import AdaptiveLimiter, Slot
from ivr.providers.redact import redact

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "ProviderBadResponse",
    "ProviderBusy",
    "ProviderClient",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderTimeout",
    "ProviderUnavailable",
]

log = structlog.get_logger("ivr.providers")

_RETRY_STATUS = frozenset({429}) | frozenset(range(500, 600))
# How much of an error body goes into the exception (after redaction).
_BODY_EXCERPT = 200

Body = bytes | str | aiohttp.FormData | Callable[[], Any] | None


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """closed -> open after `threshold` consecutive failures -> half-open after `cooldown`.

    Half-open lets exactly one probe request through; its success closes the breaker,
    its failure re-opens it for another cool-down.
    """

    def __init__(
        self,
        name: str,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float],
        stats: Counter[str],
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._stats = stats
        self.state: BreakerState = "closed"
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False

    def _set(self, state: BreakerState) -> None:
        if state != self.state:
            log.warning(
                "provider_breaker", provider=self.name, state=state, previous=self.state,
                failures=self.failures,
            )
            self._stats[f"breaker_{'opened' if state == 'open' else state}"] += 1
            self.state = state

    def acquire(self) -> bool:
        """Whether a request may go out now; True means it is the half-open probe."""
        if self.state == "open":
            if self._clock() - self._opened_at < self.cooldown:
                raise ProviderUnavailable(self.name, "circuit breaker open")
            self._set("half_open")
        if self.state == "half_open":
            if self._probing:
                raise ProviderUnavailable(self.name, "circuit breaker half-open, probe in flight")
            self._probing = True
            return True
        return False

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled, or a 4xx): let another one try."""
        self._probing = False

    def success(self) -> None:
        self._probing = False
        self.failures = 0
        self._set("closed")

    def failure(self) -> None:
        self._probing = False
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self._opened_at = self._clock()
            self._set("open")


def _retry_after(value: str | None, cap: float, now: Callable[[], float]) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now()
    return min(max(seconds, 0.0), cap)


class _Retryable(IvrError):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, error: ProviderError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class ProviderClient:
    """Requests to one provider through a shared `aiohttp.ClientSession`.

    `clock` (monotonic, for the breaker and the limiter), `wall` (epoch seconds, for
    Retry-After dates), `sleep` and `rng` are injectable so tests run without real
    waiting. `on_wait(provider, seconds)` hears how long each attempt waited to start.
    """

    def __init__(
        self,
        config: ProviderConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._session = session
        self._wall = wall
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_wait = on_wait
        self.limiter = AdaptiveLimiter(
            self.name, config.max_concurrency, rpm=config.rpm, tpm=config.tpm,
            queue_s=config.queue_ms / 1000, clock=clock, sleep=sleep,
        )
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.timeout_connect_s,
            sock_connect=config.timeout_connect_s,
            sock_read=config.timeout_read_s,
        )
        self.stats: Counter[str] = Counter()
        self.breaker = CircuitBreaker(
            self.name, config.breaker_threshold, config.breaker_cooldown_s, clock, self.stats
        )

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight

    def url(self, path: str) -> str:
        return f"{self.config.base_url}/{path.lstrip('/')}"

    def _headers(self) -> dict[str, str]:
        if not self.config.api_key:
            return {}
        return {"Authorization": f"Bearer {self.config.api_key}"}

    def _backoff(self, attempt: int) -> float:
        # Full jitter: uniform over [0, capped exponential]; see the module docstring.
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2**attempt)
        return self._rng.uniform(0.0, ceiling)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Body = None,
        stream: bool = False,
        tokens: int = 0,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A 2xx response, retried and guarded; use as `async with client.request(...)`.

        `data` may be a zero-argument callable returning the body: an `aiohttp.FormData`
        can be sent only once, so a multipart body must be rebuilt for each retry.
        Without `stream` the body is read inside the retry loop (a read that times out is
        retried too) and is then available from `resp.read()` / `resp.json()`; with
        `stream` the response is handed over after its headers, and a concurrency slot is
        held until the block exits. `tokens` is the request's estimated size for the
        provider's TPM limit (`limiter.estimate_tokens`); 0 when it has none. Raises a
        `ProviderError` subclass on failure: `ProviderBusy` when no attempt could start
        within the queue time (not a provider failure: the breaker is not told).
        """
        try:
            probe = self.breaker.acquire()
        except ProviderUnavailable as e:
            # Counted but logged at debug: during an outage every call hits this, and the
            # breaker's own transition has already been logged once as a warning.
            self.stats["rejected"] += 1
            log.debug("provider_rejected", provider=self.name, path=path, error=str(e))
            raise
        self.stats["requests"] += 1
        attempt = 0
        # A half-open probe gets a single attempt: it exists to test the provider, and
        # retrying it would just delay the verdict for the calls waiting on it.
        retries = 0 if probe else self.config.max_retries
        verdict = False
        try:
            while True:
                try:
                    resp, slot = await self._attempt(method, path, json, data, stream, tokens)
                except ProviderBusy as e:
                    self.stats["busy"] += 1
                    log.info("provider_busy", provider=self.name, path=path, attempt=attempt,
                             error=str(e))
                    raise
                except _Retryable as r:
                    if attempt >= retries:
                        self._fail(r.error, method, path, attempt)
                        self.breaker.failure()
                        verdict = True
                        raise r.error from r.__cause__
                    delay = r.retry_after if r.retry_after is not None else self._backoff(attempt)
                    attempt += 1
                    self.stats["retries"] += 1
                    log.info(
                        "provider_retry", provider=self.name, method=method, path=path,
                        attempt=attempt, delay_s=round(delay, 3), error=str(r.error),
                    )
                    await self._sleep(delay)
                    continue
                except ProviderError as e:
                    # A non-retryable 4xx: the provider answered, so it is up and the
                    # breaker is not told; the request itself is wrong.
                    self._fail(e, method, path, attempt)
                    raise
                break
            self.breaker.success()
            verdict = True
            try:
                yield resp
            finally:
                resp.release()
                if stream:
                    self.limiter.release(slot)
        finally:
            if probe and not verdict:
                self.breaker.release_probe()

    def _fail(self, error: ProviderError, method: str, path: str, attempt: int) -> None:
        self.stats["failures"] += 1
        self.stats[f"failed_{error.reason}"] += 1
        log.warning(
            "provider_failed", provider=self.name, method=method, path=path,
            attempts=attempt + 1, reason=error.reason, error=str(error),
        )

    async def _attempt(
        self, method: str, path: str, json: Any, data: Body, stream: bool, tokens: int
    ) -> tuple[aiohttp.ClientResponse, Slot]:
        body = data() if callable(data) else data
        slot = await self.limiter.acquire(tokens)
        keep = False
        try:
            if self._on_wait is not None:
                self._on_wait(self.name, slot.waited)
            try:
                resp = await self._session.request(
                    method, self.url(path), json=json, data=body,
                    headers=self._headers(), timeout=self._timeout,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError) as e:
                self.stats["timeouts"] += 1
                raise _Retryable(ProviderTimeout(self.name, f"{method} {path}: {e!r}")) from e
            except aiohttp.ClientError as e:
                self.stats["connection_errors"] += 1
                msg = redact(f"{method} {path}: {e!r}", self.config.api_key)
                raise _Retryable(ProviderUnavailable(self.name, msg)) from e
            try:
                if resp.status == 429:
                    self.limiter.throttled(slot)
                if resp.status >= 300:
                    await self._status_error(resp, method, path)
                self.limiter.succeeded(slot)
                if not stream:
                    try:
                        await resp.read()
                    except (TimeoutError, aiohttp.ServerTimeoutError) as e:
                        self.stats["timeouts"] += 1
                        raise _Retryable(
                            ProviderTimeout(self.name, f"{method} {path}: reading body")
                        ) from e
                    except aiohttp.ClientError as e:
                        self.stats["connection_errors"] += 1
                        raise _Retryable(
                            ProviderUnavailable(self.name, f"{method} {path}: {e!r}")
                        ) from e
                keep = stream
                return resp, slot
            except BaseException:
                resp.release()
                raise
        finally:
            if not keep:
                self.limiter.release(slot)

    async def _status_error(self, resp: aiohttp.ClientResponse, method: str, path: str) -> None:
        try:
            text = (await resp.text(errors="replace"))[:_BODY_EXCERPT]
        except (TimeoutError, aiohttp.ClientError):
            text = ""
        msg = redact(f"{method} {path}: {text}", self.config.api_key)
        self.stats[f"http_{resp.status}"] += 1
        error = ProviderHTTPError(self.name, resp.status, msg)
        if resp.status in _RETRY_STATUS:
            wait = _retry_after(
                resp.headers.get("Retry-After"), self.config.retry_after_cap_s, self._wall
            )
            raise _Retryable(error, wait)
        raise error

    async def request_json(
        self, method: str, path: str, *, json: Any = None, data: Body = None, tokens: int = 0
    ) -> dict[str, Any]:
        """A JSON object response; anything else is `ProviderBadResponse`."""
        async with self.request(method, path, json=json, data=data, tokens=tokens) as resp:
            ctype = resp.content_type
            raw = await resp.read()
        if ctype != "application/json":
            raise self._bad(method, path, f"content type {ctype!r}, expected JSON")
        try:
            value = jsonlib.loads(raw)
        except ValueError as e:
            raise self._bad(method, path, f"malformed JSON: {e}") from e
        if not isinstance(value, dict):
            raise self._bad(method, path, f"expected a JSON object, got {type(value).__name__}")
        return value

    def _bad(self, method: str, path: str, message: str) -> ProviderBadResponse:
        # Called after the request's context has closed (and the breaker recorded success),
        # so the failure is recorded here: a provider returning garbage is not healthy.
        error = ProviderBadResponse(self.name, f"{method} {path}: {message}")
        self._fail(error, method, path, 0)
        self.breaker.failure()
        return error
