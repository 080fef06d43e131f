"""The HTTP trust boundary's pure parts: loopback names, session cookies, start-up refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ivr.config import Settings
from ivr.errors import ConfigError
from ivr.server.access import (
    SESSION_TTL_S,
    SessionSigner,
    local_client,
    loopback_bind,
    loopback_name,
    public_base,
    startup_refusal,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:80",
                                  "[::1]", "[::1]:8080", "LOCALHOST:1", "127.0.0.2:9"])
def test_loopback_names(host: str) -> None:
    assert loopback_name(host)


@pytest.mark.parametrize("host", ["", "evil.example", "evil.example:8080", "localhost.evil.example",
                                  "127.0.0.1.nip.io", "localhost:x", "[::1]x", "[::1",
                                  "10.0.0.1:8080", "0.0.0.0", "[::]:80", "localhost.", "::1"])
def test_other_hosts_are_not_loopback_names(host: str) -> None:
    assert not loopback_name(host)


def test_loopback_binds() -> None:
    assert loopback_bind("127.0.0.1") and loopback_bind("::1") and loopback_bind("localhost")
    assert not loopback_bind("0.0.0.0") and not loopback_bind("") and not loopback_bind("::")


def _request(peer: str, headers: dict[str, str]) -> web.Request:
    class Transport:
        def get_extra_info(self, name: str, default: object = None) -> object:
            return (peer, 40000) if name == "peername" else default

    return make_mocked_request("GET", "/api/calls", headers=headers,
                               transport=Transport())  # type: ignore[arg-type]


def test_a_local_client_needs_a_loopback_peer_and_a_loopback_host() -> None:
    assert local_client(_request("127.0.0.1", {"Host": "127.0.0.1:8080"}))
    assert local_client(_request("::ffff:127.0.0.1", {"Host": "localhost"}))
    assert not local_client(_request("127.0.0.1", {"Host": "evil.example"}))
    assert not local_client(_request("127.0.0.1", {}))
    assert not local_client(_request("203.0.113.9", {"Host": "127.0.0.1:8080"}))


def test_a_proxied_request_is_not_local_even_from_loopback() -> None:
    """A proxy on this machine connects from 127.0.0.1 on behalf of the internet."""
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host"):
        assert not local_client(_request("127.0.0.1", {"Host": "127.0.0.1", header: "x"}))


def test_forwarded_headers_are_believed_only_with_trust_proxy() -> None:
    headers = {"Host": "127.0.0.1:8080", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "ivr.example.com"}
    request = _request("127.0.0.1", headers)
    assert public_base(Settings(), request) == "http://127.0.0.1:8080"
    assert public_base(Settings(trust_proxy=True), request) == "https://ivr.example.com"
    pinned = Settings(trust_proxy=True, public_url="https://pinned.example")
    assert public_base(pinned, request) == "https://pinned.example"


def test_with_several_forwarded_values_the_nearest_proxy_wins() -> None:
    request = _request("127.0.0.1", {"Host": "h", "X-Forwarded-Proto": "gopher, https",
                                     "X-Forwarded-Host": "forged.example, ivr.example.com"})
    assert public_base(Settings(trust_proxy=True), request) == "https://ivr.example.com"


def test_a_session_cookie_is_valid_until_it_expires() -> None:
    signer = SessionSigner.for_token("t0ken")
    cookie = signer.issue(NOW)
    assert signer.valid(cookie, NOW + SESSION_TTL_S - 1)
    assert not signer.valid(cookie, NOW + SESSION_TTL_S)
    # Another process with the same token accepts it; a changed token does not.
    assert SessionSigner.for_token("t0ken").valid(cookie, NOW)
    assert not SessionSigner.for_token("other").valid(cookie, NOW)


def test_a_tampered_session_cookie_is_refused() -> None:
    signer = SessionSigner.for_token("t0ken")
    expiry, nonce, mac = signer.issue(NOW).split(".")
    other = "1" if mac[-1] == "0" else "0"  # the last hex digit, changed
    for forged in (f"{int(expiry) + 3600}.{nonce}.{mac}", f"{expiry}.{nonce}x.{mac}",
                   f"{expiry}.{nonce}.{mac[:-1]}{other}", "", "x.y.z", f"²{expiry}.{nonce}.{mac}",
                   f"{expiry}.{nonce}.{mac}" + "0" * 300):
        assert not signer.valid(forged, NOW), forged


def _settings(**values: object) -> Settings:
    return Settings.from_env({}, db=Path("x.db"), **values)


def test_serve_on_a_public_address_refuses_without_the_auth_token() -> None:
    refusal = startup_refusal(_settings(host="0.0.0.0"))
    assert refusal is not None and "TWILIO_AUTH_TOKEN" in refusal and "\n" not in refusal


def test_serve_with_the_token_refuses_without_a_way_to_know_its_public_url() -> None:
    refusal = startup_refusal(_settings(host="0.0.0.0", twilio_auth_token="t"))
    assert refusal is not None and "IVR_PUBLIC_URL" in refusal and "IVR_TRUST_PROXY" in refusal
    assert startup_refusal(_settings(host="0.0.0.0", twilio_auth_token="t",
                                     public_url="https://ivr.example.com")) is None
    assert startup_refusal(_settings(host="0.0.0.0", twilio_auth_token="t",
                                     trust_proxy=True)) is None


def test_serve_on_loopback_or_insecure_starts() -> None:
    assert startup_refusal(_settings(host="127.0.0.1")) is None
    assert startup_refusal(Settings.from_env({"IVR_HOST": "0.0.0.0", "IVR_INSECURE": "1"})) is None


def test_boolean_settings_from_the_environment() -> None:
    assert Settings.from_env({"IVR_TRUST_PROXY": "true"}).trust_proxy is True
    assert Settings.from_env({"IVR_INSECURE": "0"}).insecure is False
    with pytest.raises(ConfigError, match="IVR_INSECURE='maybe' must be 1 or 0"):
        Settings.from_env({"IVR_INSECURE": "maybe"})


def test_a_database_url_on_a_public_address_needs_a_shared_stream_secret() -> None:
    """Other machines share a database server: /voice and /media of one call may reach
    different ones, so a random per-process stream secret cannot do."""
    env = {"IVR_DB": "postgresql://ivr@db.internal/ivr", "IVR_HOST": "0.0.0.0",
           "IVR_INSECURE": "1"}
    refusal = startup_refusal(Settings.from_env(env))
    assert refusal is not None and "IVR_STREAM_SECRET" in refusal and "\n" not in refusal
    for shared in ({"IVR_STREAM_SECRET": "s" * 32}, {"TWILIO_AUTH_TOKEN": "t"}):
        assert startup_refusal(Settings.from_env(env | shared)) is None
    # One machine: a SQLite file, or a loopback bind, keeps /voice and /media together.
    assert startup_refusal(Settings.from_env(env | {"IVR_DB": "ivr.db"})) is None
    assert startup_refusal(Settings.from_env(env | {"IVR_HOST": "127.0.0.1"})) is None
