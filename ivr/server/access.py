"""Who is asking, and through which URL: the HTTP side of the trust boundary.

- `public_base`: the URL a client used to reach us. `IVR_PUBLIC_URL` when set; the
  proxy's `X-Forwarded-Proto`/`-Host` only with `IVR_TRUST_PROXY=1`, since any client
  can send them; otherwise the request's own scheme and Host.
- `local_client`: a request made on this machine: the socket's peer is loopback (the
  peer itself, never a forwarded header) *and* the Host header is a loopback name. The
  Host check defeats DNS rebinding: a browser here sent to evil.example, which resolves
  to 127.0.0.1, still says `Host: evil.example`.
- `operator`: who may read the operators' routes (`/api/*`, `/dashboard`, `/metrics`,
  the detail of `/healthz`). With `IVR_API_TOKEN`: its bearer, or the dashboard's
  session cookie; without it: a local client only.
- `startup_refusal`: why `ivr serve` must not start on a public address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ivr.config import Settings
from ivr.server.services import SERVICES

SESSION_COOKIE = "ivr_session"
# A dashboard session lasts a working day; then the operator signs in again.
SESSION_TTL_S = 12 * 3600
_MAX_COOKIE = 200

# A request that carries any of these came through a proxy: it is not local, whatever
# its peer address (a proxy on this machine forwards the internet from 127.0.0.1).
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
                  "X-Real-IP")

# Sent with every operator response: never cached, never framed, no referrer.
_OPERATOR_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# The dashboard's pages are self-contained: inline script and style, data from /api.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")


def loopback_address(text: str) -> bool:
    """An IP literal on the loopback network (127.0.0.0/8, ::1, ::ffff:127.x)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def loopback_bind(host: str) -> bool:
    """`ivr serve --host HOST` listens on this machine only."""
    return host == "localhost" or loopback_address(host)


def loopback_name(host_header: str) -> bool:
    """A Host header naming this machine: localhost, 127.0.0.1, [::1], with any port."""
    host = host_header.strip().lower()
    if host.startswith("["):
        name, closed, rest = host[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return False
        port = rest[1:]
    else:
        name, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return False
    return name == "localhost" or loopback_address(name)


def local_client(request: web.Request) -> bool:
    """Made on this machine, to a loopback name, not through a proxy."""
    if any(h in request.headers for h in _PROXY_HEADERS):
        return False
    return loopback_address(request.remote or "") and loopback_name(
        request.headers.get("Host", ""))


def _last(value: str) -> str:
    # Several values (a list, or repeated headers): the nearest proxy's is the last.
    return value.split(",")[-1].strip()


def public_base(settings: Settings, request: web.Request) -> str:
    """scheme://host[/prefix] as the client sees us."""
    if settings.public_base:
        return settings.public_base
    scheme, host = request.scheme, request.host
    if settings.trust_proxy:
        forwarded_proto = _last(",".join(request.headers.getall("X-Forwarded-Proto", [])))
        forwarded_host = _last(",".join(request.headers.getall("X-Forwarded-Host", [])))
        if forwarded_proto in ("http", "https"):
            scheme = forwarded_proto
        if forwarded_host:
            host = forwarded_host
    return f"{scheme}://{host}"


@dataclass(frozen=True, slots=True)
class SessionSigner:
    """Dashboard session cookies: `expiry.nonce.mac`, HMAC-SHA256 under a key derived
    from `IVR_API_TOKEN`. Every process holding the token accepts every other's
    cookies, nothing is stored, and changing the token signs everyone out."""

    key: bytes

    @classmethod
    def for_token(cls, api_token: str) -> SessionSigner:
        return cls(hmac.new(api_token.encode(), b"ivr dashboard session v1",
                            hashlib.sha256).digest())

    def issue(self, now: float, ttl_s: float = SESSION_TTL_S) -> str:
        body = f"{int(now + ttl_s)}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, value: str, now: float) -> bool:
        if len(value) > _MAX_COOKIE:
            return False
        body, _, mac = value.rpartition(".")
        expiry = body.partition(".")[0]
        if not (expiry.isascii() and expiry.isdigit()):
            return False
        return hmac.compare_digest(mac.encode(), self._mac(body).encode()) and now < int(expiry)

    def _mac(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()


def matches(given: str, secret: str) -> bool:
    """`given` is the (non-empty) secret, compared in constant time."""
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


def bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def operator(request: web.Request, *, also: str = "") -> bool:
    """May this request read the operators' routes? `also`: one more accepted bearer."""
    settings = request.app[SERVICES].settings
    given = bearer(request)
    if also and matches(given, also):
        return True
    token = settings.api_token
    if not token:
        return local_client(request)
    if matches(given, token):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and SessionSigner.for_token(token).valid(cookie, time.time())


def refused(settings: Settings, what: str) -> web.HTTPUnauthorized:
    if settings.api_token:
        return web.HTTPUnauthorized(text=f"{what}: bearer token required\n",
                                    headers={"WWW-Authenticate": "Bearer"})
    return web.HTTPUnauthorized(
        text=f"{what} answers only a client on this machine (loopback address and Host); "
             "set IVR_API_TOKEN to reach it from elsewhere\n")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/api/*` and `/metrics` by the route that matched (a new API route is guarded
    without a word); `/dashboard` checks for itself, since it answers with a form."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    settings = request.app[SERVICES].settings
    if route.startswith("/api/") and not operator(request):
        raise refused(settings, "/api")
    if route == "/metrics" and not operator(request, also=settings.metrics_token):
        raise refused(settings, "/metrics")
    response = await handler(request)
    if route.startswith(("/api/", "/dashboard")) and not response.prepared:
        response.headers.update(_OPERATOR_HEADERS)
    return response


def startup_refusal(settings: Settings) -> str | None:
    """Why `ivr serve` must not start with these settings, in one line, or None."""
    if (settings.shared_store and not loopback_bind(settings.host)
            and not (settings.stream_secret or settings.twilio_auth_token)):
        # A random per-process secret: a /media landing on another machine than its
        # /voice could never verify the call's stream token.
        return (f"refusing to serve on {settings.host} with IVR_DB a database URL but "
                "neither IVR_STREAM_SECRET nor TWILIO_AUTH_TOKEN: processes on other "
                "machines share that database, and Twilio's /voice and /media of one call may "
                "reach different ones, which must sign and check its stream token with one "
                "key (set IVR_STREAM_SECRET to the same 32+ characters everywhere, e.g. "
                "python -c 'import secrets; print(secrets.token_hex(32))')")
    if settings.insecure or loopback_bind(settings.host):
        return None
    if not settings.twilio_auth_token:
        return (f"refusing to serve on {settings.host} without TWILIO_AUTH_TOKEN: anyone who "
                "reaches it could start calls (set TWILIO_AUTH_TOKEN, bind 127.0.0.1, or pass "
                "--insecure / IVR_INSECURE=1 on a test bench)")
    if not settings.public_url and not settings.trust_proxy:
        return (f"refusing to serve on {settings.host} with neither IVR_PUBLIC_URL nor "
                "IVR_TRUST_PROXY=1: Twilio's signatures would be checked against the wrong URL "
                "(set IVR_PUBLIC_URL=https://your.host, or IVR_TRUST_PROXY=1 behind a proxy "
                "that sets X-Forwarded-Proto/-Host)")
    return None
