"""HTTP webhook tools declared in YAML (`tools.yaml`, see docs/webhook-tools.md).

`load_webhooks(path)` reads and checks the file; `webhook_tools(specs, ...)` turns the specs
into registry `Tool`s whose handler calls the webhook with aiohttp. Every request is signed
(HMAC-SHA256 over `f"{timestamp}.{body}"`, headers `X-Ivr-Timestamp` and
`X-Ivr-Signature: v1=<hex>`); `verify_signature` is the receiver's side. Hosts must be on
the allow-list (`IVR_WEBHOOK_HOSTS`), checked when the tools are built; the addresses a
host resolves to are checked on every request (`ivr.tools.egress`: no link-local or cloud
metadata address unless listed) and the request goes to a checked address.

Failures a caller can hit (HTTP error, not JSON, a response that breaks its schema, a
timeout, a refused connection) raise `ToolError`, which the registry turns into a failed
`ToolResult`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from yarl import URL

from ivr.errors import ConfigError, InvalidValue
from ivr.tools.base import TOOL_NAME, Tool, ToolContext, ToolError
from ivr.tools.egress import (
    IPAddress,
    Resolver,
    checked_addresses,
    listed_addresses,
    resolve,
)

__all__ = [
    "HOSTS_SETTING",
    "MAX_RESPONSE_BYTES",
    "SECRET_SETTING",
    "SessionFactory",
    "WebhookSpec",
    "load_webhooks",
    "sign",
    "verify_signature",
    "webhook_tools",
]

HOSTS_SETTING = "IVR_WEBHOOK_HOSTS"
SECRET_SETTING = "IVR_WEBHOOK_SECRET"
MAX_RESPONSE_BYTES = 1 << 20  # a tool result goes to a model: a megabyte is plenty
# The registry's own deadline is a little longer than the request's, so a slow webhook ends
# in this module's clear "did not answer" message rather than a bare cancellation.
_DEADLINE_MARGIN_S = 1.0

# Returns the (shared, long-lived) session to use; the tools never close it.
SessionFactory = Callable[[], aiohttp.ClientSession]


class WebhookSpec(BaseModel):
    """One webhook tool; `name` is its key under `webhooks:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=TOOL_NAME.pattern)
    description: str = Field(min_length=1)
    url: str
    method: Literal["GET", "POST"] = "POST"
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    response: dict[str, Any] | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        url = URL(v)
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidValue("must be an absolute http:// or https:// URL")
        if url.fragment or url.user or url.password:
            raise InvalidValue("must not carry a fragment or credentials")
        return v

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type") != "object":
            raise InvalidValue("must be an object schema (type: object)")
        _check_schema(v)
        return v

    @field_validator("response")
    @classmethod
    def _response(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            _check_schema(v)
        return v

    @property
    def host(self) -> str:
        return (URL(self.url).host or "").lower()


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhooks: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _check_schema(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise InvalidValue(f"not a valid JSON Schema: {e.message}") from None


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_webhooks(path: Path, *, missing_ok: bool = False) -> list[WebhookSpec]:
    """The webhook specs in a `tools.yaml`, in file order. Every problem is a ConfigError
    naming the file and the offending key; `missing_ok` makes an absent file mean none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise ConfigError(f"{path}: tools file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the tools file: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        return []
    try:
        doc = _File.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_pydantic_problems(e, ())}") from None
    specs: list[WebhookSpec] = []
    for name, body in doc.webhooks.items():
        if "name" in body:
            raise ConfigError(
                f"{path}: webhooks.{name}.name: remove it, the name is the key ({name!r})"
            )
        try:
            specs.append(WebhookSpec.model_validate({"name": name, **body}))
        except ValidationError as e:
            raise ConfigError(f"{path}: {_pydantic_problems(e, ('webhooks', name))}") from None
    return specs


def _pydantic_problems(error: ValidationError, prefix: tuple[str, ...]) -> str:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = _where((*prefix,) if loc == ("name",) else (*prefix, *loc))
        msg = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{where}: {msg}")
    return "; ".join(problems)


def sign(secret: str, timestamp: int | str, body: str | bytes) -> str:
    """The `X-Ivr-Signature` value: `v1=` + hex HMAC-SHA256 of `f"{timestamp}.{body}"`."""
    payload = body if isinstance(body, bytes) else body.encode("utf-8")
    digest = hmac.new(
        secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + payload, hashlib.sha256
    ).hexdigest()
    return f"v1={digest}"


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: str | bytes,
    header: str,
    *,
    now: float,
    tolerance_s: float = 300,
) -> bool:
    """Whether a request is authentic and fresh (a receiver's check).

    `timestamp` is the `X-Ivr-Timestamp` header, `body` the raw request body (for GET: the
    raw query string), `header` the `X-Ivr-Signature` header, which may list several
    comma-separated `v1=` values. A timestamp further than `tolerance_s` from `now` (unix
    seconds) is refused, so a captured request cannot be replayed later.
    """
    if not secret:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body).encode("ascii")
    ok = False
    for part in header.split(","):
        # Compare every candidate (no early exit) in constant time.
        ok |= hmac.compare_digest(part.strip().encode("utf-8", "replace"), expected)
    return ok


def webhook_tools(
    specs: list[WebhookSpec],
    *,
    allowed_hosts: frozenset[str],
    secret: str,
    session_factory: SessionFactory,
    clock: Callable[[], float] = time.time,
    resolver: Resolver = resolve,
) -> list[Tool]:
    """Registry tools for `specs`. Refuses (ConfigError) a host not on `allowed_hosts`
    (entries are host names, IP addresses or `host:port`) and an empty secret when there
    are webhooks. `resolver` turns a host name into addresses (tests pass a fake one)."""
    if not specs:
        return []
    if not secret:
        raise ConfigError(f"{SECRET_SETTING} is empty: webhook requests must be signed")
    allowed = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
    listed = listed_addresses(allowed)
    tools = []
    for spec in specs:
        url = URL(spec.url)
        host = spec.host
        if host not in allowed and f"{host}:{url.port}" not in allowed:
            raise ConfigError(
                f"webhook {spec.name!r}: host {host!r} is not allowed; add it to "
                f"{HOSTS_SETTING} (allowed: {', '.join(sorted(allowed)) or 'none'})"
            )
        tools.append(
            Tool(
                name=spec.name,
                description=spec.description,
                parameters=spec.parameters,
                handler=_Handler(spec, secret, session_factory, clock, listed, resolver),
                timeout_s=spec.timeout_s + _DEADLINE_MARGIN_S,
            )
        )
    return tools


class _Handler:
    def __init__(
        self,
        spec: WebhookSpec,
        secret: str,
        session_factory: SessionFactory,
        clock: Callable[[], float],
        listed: frozenset[IPAddress],
        resolver: Resolver,
    ) -> None:
        self.spec = spec
        self.secret = secret
        self.session_factory = session_factory
        self.clock = clock
        self.listed = listed
        self.resolver = resolver
        self.url = URL(spec.url)
        self.validator = (
            Draft202012Validator(spec.response) if spec.response is not None else None
        )

    async def __call__(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        spec = self.spec
        timestamp = int(self.clock())
        headers = {
            "Accept": "application/json",
            "User-Agent": "ivr-webhooks/1",
            "X-Ivr-Timestamp": str(timestamp),
            "X-Ivr-Tool": spec.name,
        }
        if ctx.call_sid:
            headers["X-Ivr-Call-Sid"] = ctx.call_sid
        if spec.method == "POST":
            body = json.dumps(args, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            url = self.url
            data: bytes | None = body.encode("utf-8")
            headers["Content-Type"] = "application/json"
        else:
            # The signed "body" of a GET is its raw query string, sent exactly as signed.
            body = _query(self.url.raw_query_string, args)
            url = self.url.with_query(None).with_fragment(None)
            url = URL(f"{url}?{body}" if body else str(url), encoded=True)
            data = None
        headers["X-Ivr-Signature"] = sign(self.secret, timestamp, body)
        what = f"{spec.name}: webhook"
        try:
            # One deadline for resolving, connecting and reading the whole body.
            async with asyncio.timeout(spec.timeout_s):
                addresses = await checked_addresses(
                    self.url.host or "", self.url.port or 0, listed=self.listed,
                    resolver=self.resolver, what=what,
                )
                status, raw = await self._send(url, data, headers, addresses)
        except TimeoutError:
            raise ToolError(f"{what} did not answer within {spec.timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            raise ToolError(f"{what} request failed: {e or type(e).__name__}") from None
        if raw is None:
            raise ToolError(f"{what} response is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            value: Any = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = _NOT_JSON
        if not 200 <= status < 300:
            detail = ""
            if isinstance(value, dict) and isinstance(value.get("error"), str):
                detail = f": {value['error'][:200]}"
            raise ToolError(f"{what} answered HTTP {status}{detail}", {"status": status})
        if value is _NOT_JSON:
            raise ToolError(f"{what} answered HTTP {status} with a body that is not JSON")
        if self.validator is not None:
            errors = sorted(
                self.validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]
            )
            if errors:
                first = errors[0]
                where = ".".join(str(p) for p in first.absolute_path)
                at = f" at {where!r}" if where else ""
                raise ToolError(
                    f"{what} response does not match its schema{at}: {first.message}"
                )
        return value if isinstance(value, dict) else {"result": value}

    async def _send(
        self, url: URL, data: bytes | None, headers: dict[str, str], addresses: list[str],
    ) -> tuple[int, bytes | None]:
        """The status and whole body (None past the cap) from the first address that
        accepts the connection. The URL names the address, so nothing resolves the host
        again after the check; `Host` and, over TLS, SNI and the certificate check keep
        the host name."""
        headers = {**headers, "Host": self.url.host_port_subcomponent or ""}
        server_hostname = self.url.host if self.url.scheme == "https" else None
        failure: aiohttp.ClientConnectorError | None = None
        for address in addresses:
            try:
                async with self.session_factory().request(
                    self.spec.method, url.with_host(address), data=data, headers=headers,
                    allow_redirects=False, server_hostname=server_hostname,
                    timeout=aiohttp.ClientTimeout(total=self.spec.timeout_s),
                ) as resp:
                    return resp.status, await _read_capped(resp)
            except aiohttp.ClientConnectorError as e:
                failure = e  # refused or unreachable: the host's next address
        assert failure is not None, "checked_addresses returns at least one address"
        raise failure


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes | None:
    """The whole body as it arrives, chunk after chunk; None once it passes the cap."""
    if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
        return None
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            return None
    return bytes(body)


_NOT_JSON = object()


def _query(existing: str, args: dict[str, Any]) -> str:
    """`existing` (already encoded) plus the arguments: strings as they are, others as JSON."""
    parts = [existing] if existing else []
    for key, value in args.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{quote(str(key), safe='')}={quote(text, safe='')}")
    return "&".join(parts)
