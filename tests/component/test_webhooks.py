"""Webhook tools: tools.yaml loading, the host allow-list, signing and verifying, and round
trips through a real ToolRegistry against a loopback aiohttp server."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ivr.errors import ConfigError
from ivr.tools import ToolContext, ToolError, ToolRegistry
from ivr.tools.egress import Resolver, checked_addresses, listed_addresses, sensitive
from ivr.tools.webhooks import (
    MAX_RESPONSE_BYTES,
    WebhookSpec,
    load_webhooks,
    sign,
    verify_signature,
    webhook_tools,
)

SECRET = "s3cret-for-tests"
ALLOWED = frozenset({"127.0.0.1"})

Seen = list[dict[str, Any]]


@pytest.fixture
async def hook_server() -> AsyncIterator[tuple[TestServer, Seen]]:
    """A receiver on 127.0.0.1 that verifies every request as a real one would."""
    seen: Seen = []

    async def verified(request: web.Request) -> tuple[bool, str]:
        body = (request.rel_url.raw_query_string if request.method == "GET"
                else await request.text())
        ok = verify_signature(
            SECRET, request.headers.get("X-Ivr-Timestamp", ""), body,
            request.headers.get("X-Ivr-Signature", ""), now=time.time(),
        )
        seen.append({"method": request.method, "body": body, "ok": ok,
                     "call_sid": request.headers.get("X-Ivr-Call-Sid"),
                     "query": dict(request.query)})
        return ok, body

    async def customer(request: web.Request) -> web.Response:
        ok, body = await verified(request)
        if not ok:
            return web.json_response({"error": "bad signature"}, status=401)
        phone = json.loads(body)["phone"] if request.method == "POST" else request.query["phone"]
        return web.json_response({"name": "Alice", "phone": phone})

    async def fail(request: web.Request) -> web.Response:
        await verified(request)
        return web.json_response({"error": "database down"}, status=500)

    async def not_json(request: web.Request) -> web.Response:
        await verified(request)
        return web.Response(text="<html>oops</html>", content_type="text/html")

    async def wrong_shape(request: web.Request) -> web.Response:
        await verified(request)
        return web.json_response({"nom": "Alice"})

    async def slow(request: web.Request) -> web.Response:
        await verified(request)
        await asyncio.sleep(5)
        return web.json_response({"name": "late"})

    async def listing(request: web.Request) -> web.Response:
        await verified(request)
        return web.json_response([1, 2])

    app = web.Application()
    app.router.add_post("/list", listing)
    app.router.add_route("*", "/customer", customer)
    app.router.add_post("/fail", fail)
    app.router.add_post("/not-json", not_json)
    app.router.add_post("/wrong-shape", wrong_shape)
    app.router.add_post("/slow", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, seen
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(call_sid="CA123", caller="+15550100001", db_path=tmp_path / "unused.db",
                       now=datetime(2030, 1, 7, 10, 0, tzinfo=UTC))


def write_tools(tmp_path: Path, base: str, **extra: dict[str, Any]) -> Path:
    hooks: dict[str, Any] = {
        "crm.lookup_customer": {
            "description": "Find a customer by phone number.",
            "url": f"{base}/customer", "method": "POST", "timeout_s": 3,
            "parameters": {"type": "object", "properties": {"phone": {"type": "string"}},
                           "required": ["phone"], "additionalProperties": False},
            "response": {"type": "object", "required": ["name"]},
        },
    }
    hooks.update(extra)
    path = tmp_path / "tools.yaml"
    path.write_text(json.dumps({"webhooks": hooks}))  # JSON is YAML
    return path


def hook(path: str, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "description": "test", "url": path, "timeout_s": 3,
        "parameters": {"type": "object", "properties": {"phone": {"type": "string"}}},
        "response": {"type": "object", "required": ["name"]},
    }
    spec.update(over)
    return spec


Build = Callable[..., Awaitable[ToolRegistry]]


@pytest.fixture
def build(
    tmp_path: Path, hook_server: tuple[TestServer, Seen], session: aiohttp.ClientSession
) -> Build:
    server, _ = hook_server
    base = str(server.make_url("")).rstrip("/")

    async def make(**extra: dict[str, Any]) -> ToolRegistry:
        specs = load_webhooks(write_tools(tmp_path, base, **{
            k: hook(f"{base}{v['url']}", **{x: y for x, y in v.items() if x != "url"})
            for k, v in extra.items()
        }))
        registry = ToolRegistry()
        for tool in webhook_tools(specs, allowed_hosts=ALLOWED, secret=SECRET,
                                  session_factory=lambda: session):
            registry.register(tool)
        return registry

    return make


async def test_round_trip_post(
    build: Build, hook_server: tuple[TestServer, Seen], tmp_path: Path
) -> None:
    registry = await build()
    result = await registry.call("crm.lookup_customer", {"phone": "+15550100001"}, ctx(tmp_path))
    assert result.ok, result.error
    assert result.value == {"name": "Alice", "phone": "+15550100001"}
    (req,) = hook_server[1]
    assert req["ok"] and req["call_sid"] == "CA123"
    # The function-calling name and JSON-text arguments work too.
    result = await registry.call("crm__lookup_customer", '{"phone": "1"}', ctx(tmp_path))
    assert result.ok and result.value["phone"] == "1"


async def test_round_trip_get_signs_the_query(
    build: Build, hook_server: tuple[TestServer, Seen], tmp_path: Path
) -> None:
    registry = await build(**{"crm.by_get": {"url": "/customer?src=ivr", "method": "get"}})
    result = await registry.call("crm.by_get", {"phone": "+1 555 & co"}, ctx(tmp_path))
    assert result.ok, result.error
    assert result.value["phone"] == "+1 555 & co"
    (req,) = hook_server[1]
    assert req["ok"] and req["method"] == "GET"
    assert req["query"] == {"src": "ivr", "phone": "+1 555 & co"}


async def test_invalid_args_refused_before_any_request(
    build: Build, hook_server: tuple[TestServer, Seen], tmp_path: Path
) -> None:
    registry = await build()
    for args in ({}, {"phone": 5}, {"phone": "1", "extra": True}):
        result = await registry.call("crm.lookup_customer", args, ctx(tmp_path))
        assert not result.ok and result.error and "invalid arguments" in result.error
    assert hook_server[1] == []


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/fail", "answered HTTP 500: database down"),
        ("/not-json", "not JSON"),
        ("/wrong-shape", "does not match its schema: 'name' is a required property"),
        ("/slow", "did not answer within 0.3s"),
    ],
)
async def test_failures_become_failed_results(
    build: Build, hook_server: tuple[TestServer, Seen], tmp_path: Path, path: str, words: str
) -> None:
    registry = await build(**{"crm.broken": {"url": path, "timeout_s": 0.3}})
    started = time.monotonic()
    result = await registry.call("crm.broken", {"phone": "1"}, ctx(tmp_path))
    assert not result.ok
    assert result.error is not None and words in result.error
    assert result.error.startswith("crm.broken: webhook")
    assert time.monotonic() - started < 2
    assert hook_server[1][0]["ok"]  # the request itself was signed correctly


async def test_unreachable_host_is_a_failed_result(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # A closed loopback port: connection refused.
    spec = WebhookSpec(name="crm.down", description="x", url="http://127.0.0.1:9/x")
    (tool,) = webhook_tools([spec], allowed_hosts=ALLOWED, secret=SECRET,
                            session_factory=lambda: session)
    registry = ToolRegistry()
    registry.register(tool)
    result = await registry.call("crm.down", {}, ctx(tmp_path))
    assert not result.ok and result.error and "request failed" in result.error


async def test_non_object_json_is_wrapped(
    build: Build, hook_server: tuple[TestServer, Seen], tmp_path: Path
) -> None:
    registry = await build(**{"crm.list": {"url": "/list", "response": {"type": "array"}}})
    context = ctx(tmp_path)
    context.call_sid = None
    result = await registry.call("crm.list", {}, context)
    assert result.ok and result.value == {"result": [1, 2]}
    assert hook_server[1][0]["call_sid"] is None


def test_host_not_allow_listed_refused_at_load(tmp_path: Path) -> None:
    specs = load_webhooks(write_tools(tmp_path, "https://crm.example.com"))
    with pytest.raises(ConfigError) as err:
        webhook_tools(specs, allowed_hosts=ALLOWED, secret=SECRET,
                      session_factory=aiohttp.ClientSession)
    assert "crm.example.com" in str(err.value) and "IVR_WEBHOOK_HOSTS" in str(err.value)
    # Allowed case-insensitively, or as host:port.
    assert webhook_tools(specs, allowed_hosts=frozenset({"CRM.example.com"}), secret=SECRET,
                         session_factory=aiohttp.ClientSession)
    assert webhook_tools(specs, allowed_hosts=frozenset({"crm.example.com:443"}),
                         secret=SECRET, session_factory=aiohttp.ClientSession)


def test_empty_secret_refused(tmp_path: Path) -> None:
    specs = load_webhooks(write_tools(tmp_path, "http://127.0.0.1"))
    with pytest.raises(ConfigError, match="IVR_WEBHOOK_SECRET"):
        webhook_tools(specs, allowed_hosts=ALLOWED, secret="",
                      session_factory=aiohttp.ClientSession)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("webhooks:\n  crm.x: {description: d, url: 'http://h/', bogus: 1}\n",
         "webhooks.crm.x.bogus: unknown key"),
        ("webhooks:\n  crm.x: {description: d, url: 'ftp://h/'}\n",
         "webhooks.crm.x.url: must be an absolute http"),
        ("webhooks:\n  crm.x: {description: d, url: 'http://h/', method: PUT}\n",
         "webhooks.crm.x.method"),
        ("webhooks:\n  Bad-Name: {description: d, url: 'http://h/'}\n", "webhooks.Bad-Name"),
        ("webhooks:\n  crm.x: {description: d, url: 'http://h/', parameters: {type: array}}\n",
         "must be an object schema"),
        ("webhooks:\n  crm.x: {description: d, url: 'http://h/', response: {type: 5}}\n",
         "not a valid JSON Schema"),
        ("webhooks:\n  crm.x: {description: d, url: 'http://h/', timeout_s: 0}\n",
         "webhooks.crm.x.timeout_s"),
        ("hooks: {}\n", "hooks: unknown key"),
        ("webhooks: [\n", "not valid YAML"),
    ],
)
def test_load_errors_name_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_webhooks(path)
    assert str(err.value).startswith(f"{path}: ")
    assert words in str(err.value)


def test_load_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_webhooks(tmp_path / "nope.yaml")
    assert load_webhooks(tmp_path / "nope.yaml", missing_ok=True) == []
    (tmp_path / "empty.yaml").write_text("")
    assert load_webhooks(tmp_path / "empty.yaml") == []


def test_load_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text("webhooks:\n  a.b:\n    description: d\n    url: https://h.example/x\n")
    (spec,) = load_webhooks(path)
    assert spec.name == "a.b" and spec.method == "POST" and spec.timeout_s == 5
    assert spec.parameters == {"type": "object"} and spec.response is None
    assert spec.host == "h.example"


def test_verify_signature() -> None:
    now = 1_900_000_000
    body = '{"phone":"+15550100001"}'
    header = sign(SECRET, now, body)
    assert header.startswith("v1=") and len(header) == 3 + 64
    assert verify_signature(SECRET, str(now), body, header, now=now)
    assert verify_signature(SECRET, now, body.encode(), f"v1=dead, {header}", now=now + 299)
    # Bad signatures: another secret, a changed body, a changed timestamp, garbage.
    assert not verify_signature("other", now, body, header, now=now)
    assert not verify_signature(SECRET, now, body + " ", header, now=now)
    assert not verify_signature(SECRET, now + 1, body, header, now=now)
    assert not verify_signature(SECRET, now, body, "v1=" + "0" * 64, now=now)
    assert not verify_signature(SECRET, "soon", body, header, now=now)
    assert not verify_signature("", now, body, sign("", now, body), now=now)
    # Replays outside the window, either side.
    assert not verify_signature(SECRET, now, body, header, now=now + 301)
    assert not verify_signature(SECRET, now, body, header, now=now - 301)
    assert verify_signature(SECRET, now, body, header, now=now + 500, tolerance_s=600)


async def test_server_registers_webhook_tools_from_its_tools_file(tmp_path: Path) -> None:
    """IVR_TOOLS_FILE's webhooks join the server's registry and call out signed."""
    from aiohttp.test_utils import TestServer as AppServer

    from ivr.server.app import create_app
    from ivr.server.services import SERVICES
    from tests.conftest import make_settings

    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        ok = verify_signature("s3cret", request.headers["X-Ivr-Timestamp"], body,
                              request.headers["X-Ivr-Signature"], now=time.time())
        seen.append("signed" if ok else "unsigned")
        return web.json_response({"name": "Pat"})

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    hook_srv = TestServer(receiver, host="127.0.0.1")
    await hook_srv.start_server()
    base = f"http://127.0.0.1:{hook_srv.port}"
    try:
        tools_file = tmp_path / "tools.yaml"
        tools_file.write_text(
            "webhooks:\n  crm.customer:\n    description: Find a customer.\n"
            f"    url: {base}/hook\n    parameters: {{type: object}}\n")
        app = create_app(make_settings(tmp_path, recognizer_workers=1, tools_file=tools_file,
                                       webhook_hosts="127.0.0.1", webhook_secret="s3cret"))
        server = AppServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            registry = app[SERVICES].tools
            assert registry is not None and "crm.customer" in registry.names()
            result = await registry.call("crm.customer", {}, ctx(tmp_path))
        finally:
            await server.close()
    finally:
        await hook_srv.close()
    assert result.ok and result.value == {"name": "Pat"}
    assert seen == ["signed"]


# ---------------------------------------------------------------- the whole body, the address

BODY = json.dumps({"name": "Alice", "notes": "x" * 2000}).encode()


@pytest.fixture
async def chunked_server() -> AsyncIterator[tuple[TestServer, list[str]]]:
    """A receiver that writes its JSON in pieces with pauses between them, as a slow
    upstream or a proxy flushing its buffer does; records the Host header it was sent."""
    hosts: list[str] = []

    async def in_pieces(request: web.Request, pieces: list[bytes]) -> web.StreamResponse:
        hosts.append(request.headers.get("Host", ""))
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(0.05)  # the pause between the writes is the scenario
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def two_chunks(request: web.Request) -> web.StreamResponse:
        half = len(BODY) // 2
        return await in_pieces(request, [BODY[:half], BODY[half:]])

    async def too_big(request: web.Request) -> web.StreamResponse:
        piece = b" " * (256 * 1024)  # JSON whitespace: only the size is wrong
        return await in_pieces(request, [b'{"name": "A"}', *[piece] * 5])

    async def too_big_declared(request: web.Request) -> web.Response:
        hosts.append(request.headers.get("Host", ""))
        return web.Response(body=b" " * (MAX_RESPONSE_BYTES + 1),
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/two-chunks", two_chunks)
    app.router.add_post("/too-big", too_big)
    app.router.add_post("/too-big-declared", too_big_declared)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, hosts
    await server.close()


def one_tool(
    url: str, session: aiohttp.ClientSession, *, hosts: set[str],
    resolver: Resolver | None = None,
) -> ToolRegistry:
    spec = WebhookSpec(name="crm.hook", description="x", url=url, timeout_s=3)
    extra: dict[str, Any] = {} if resolver is None else {"resolver": resolver}
    registry = ToolRegistry()
    for tool in webhook_tools([spec], allowed_hosts=frozenset(hosts), secret=SECRET,
                              session_factory=lambda: session, **extra):
        registry.register(tool)
    return registry


def fake_dns(answers: dict[str, list[str]]) -> tuple[Resolver, list[str]]:
    """A resolver answering from `answers`, and the names it was asked for."""
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise OSError(f"unknown host {host}")
        return answers[host]

    return resolver, asked


async def test_body_written_in_two_chunks_is_read_whole(
    chunked_server: tuple[TestServer, list[str]], session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """JSON that arrives in two writes 50 ms apart: the tool gets all of it."""
    server, _ = chunked_server
    registry = one_tool(f"http://127.0.0.1:{server.port}/two-chunks", session,
                        hosts={"127.0.0.1"})
    result = await registry.call("crm.hook", {}, ctx(tmp_path))
    assert result.ok, result.error
    assert result.value == json.loads(BODY)


@pytest.mark.parametrize("path", ["/too-big", "/too-big-declared"])
async def test_body_over_the_cap_is_refused_streamed_or_declared(
    chunked_server: tuple[TestServer, list[str]], session: aiohttp.ClientSession,
    tmp_path: Path, path: str,
) -> None:
    server, _ = chunked_server
    registry = one_tool(f"http://127.0.0.1:{server.port}{path}", session, hosts={"127.0.0.1"})
    result = await registry.call("crm.hook", {}, ctx(tmp_path))
    assert not result.ok and result.error is not None
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in result.error


def test_metadata_address_in_the_url_is_refused_unless_listed(tmp_path: Path) -> None:
    """A webhook pointed at 169.254.169.254 is refused unless the address is listed."""
    spec = WebhookSpec(name="crm.meta", description="x", url="http://169.254.169.254/latest")
    with pytest.raises(ConfigError, match=r"169\.254\.169\.254"):
        webhook_tools([spec], allowed_hosts=ALLOWED, secret=SECRET,
                      session_factory=aiohttp.ClientSession)
    assert webhook_tools([spec], allowed_hosts=frozenset({"127.0.0.1", "169.254.169.254"}),
                         secret=SECRET, session_factory=aiohttp.ClientSession)


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.10.1", "fe80::1",
                                     "fd00:ec2::254", "::ffff:169.254.169.254"])
async def test_listed_name_resolving_to_a_metadata_address_is_refused(
    hook_server: tuple[TestServer, Seen], session: aiohttp.ClientSession, tmp_path: Path,
    address: str,
) -> None:
    """A name on the allow-list whose DNS answer is link-local or a metadata service: the
    request is refused before any connection, whatever the name."""
    server, seen = hook_server
    resolver, asked = fake_dns({"hooks.test": [address]})
    registry = one_tool(f"http://hooks.test:{server.port}/customer", session,
                        hosts={"hooks.test"}, resolver=resolver)
    result = await registry.call("crm.hook", {"phone": "1"}, ctx(tmp_path))
    assert asked == ["hooks.test"]
    assert not result.ok and result.error is not None
    assert "link-local or cloud metadata" in result.error and address in result.error
    assert f"IVR_WEBHOOK_HOSTS lists {address}" in result.error
    assert seen == []


async def test_request_goes_to_the_checked_address_with_the_host_name_kept(
    chunked_server: tuple[TestServer, list[str]], session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The name is resolved once, by our resolver (the system one does not know it), and
    the receiver still sees its own name in `Host`."""
    server, hosts_seen = chunked_server
    resolver, asked = fake_dns({"hooks.test": ["127.0.0.1"]})
    registry = one_tool(f"http://hooks.test:{server.port}/two-chunks", session,
                        hosts={"hooks.test"}, resolver=resolver)
    result = await registry.call("crm.hook", {}, ctx(tmp_path))
    assert result.ok, result.error
    assert asked == ["hooks.test"]
    assert hosts_seen == [f"hooks.test:{server.port}"]


async def test_a_changed_dns_answer_is_checked_again_on_every_request(
    chunked_server: tuple[TestServer, list[str]], session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Rebinding: first a good address, then the metadata service; the second is refused."""
    server, hosts_seen = chunked_server
    answers = {"hooks.test": ["127.0.0.1"]}
    resolver, _ = fake_dns(answers)
    registry = one_tool(f"http://hooks.test:{server.port}/two-chunks", session,
                        hosts={"hooks.test"}, resolver=resolver)
    assert (await registry.call("crm.hook", {}, ctx(tmp_path))).ok
    answers["hooks.test"] = ["169.254.169.254"]
    second = await registry.call("crm.hook", {}, ctx(tmp_path))
    assert not second.ok and second.error and "169.254.169.254" in second.error
    assert len(hosts_seen) == 1


async def test_next_address_is_tried_when_the_first_refuses(
    chunked_server: tuple[TestServer, list[str]], session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The receiver listens on 127.0.0.1 only; the name's first address (::1) refuses."""
    server, hosts_seen = chunked_server
    resolver, _ = fake_dns({"hooks.test": ["::1", "127.0.0.1"]})
    registry = one_tool(f"http://hooks.test:{server.port}/two-chunks", session,
                        hosts={"hooks.test"}, resolver=resolver)
    result = await registry.call("crm.hook", {}, ctx(tmp_path))
    assert result.ok, result.error
    assert hosts_seen == [f"hooks.test:{server.port}"]


async def test_unresolvable_name_is_a_failed_result(
    session: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    resolver, _ = fake_dns({})
    registry = one_tool("http://nowhere.test/x", session, hosts={"nowhere.test"},
                        resolver=resolver)
    result = await registry.call("crm.hook", {}, ctx(tmp_path))
    assert not result.ok and result.error and "cannot resolve 'nowhere.test'" in result.error


@pytest.mark.parametrize(
    ("address", "is_sensitive"),
    [
        ("169.254.169.254", True), ("169.254.0.1", True), ("fe80::1", True),
        ("fd00:ec2::254", True), ("100.100.100.200", True), ("192.0.0.192", True),
        ("::ffff:169.254.169.254", True), ("2002:a9fe:a9fe::1", True),
        ("64:ff9b::a9fe:a9fe", True),
        ("127.0.0.1", False), ("::1", False), ("10.0.0.5", False), ("93.184.216.34", False),
        ("2606:4700::1111", False),
    ],
)
def test_sensitive_addresses(address: str, is_sensitive: bool) -> None:
    """Link-local and metadata addresses, also inside IPv6 (mapped, 6to4, NAT64)."""
    assert sensitive(ipaddress.ip_address(address)) is is_sensitive


async def test_a_listed_address_or_metadata_name_is_allowed() -> None:
    """Listed explicitly: the address itself on the allow-list, or a metadata host name in
    the URL (on the allow-list by that name)."""
    resolver, _ = fake_dns({"hooks.test": ["169.254.169.254"],
                            "metadata.google.internal": ["169.254.169.254"]})
    listed = listed_addresses(frozenset({"hooks.test", "169.254.169.254:80", "[fe80::1]:8080"}))
    assert listed == {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fe80::1")}
    assert await checked_addresses("hooks.test", 80, listed=listed, resolver=resolver,
                                   what="w") == ["169.254.169.254"]
    assert await checked_addresses("metadata.google.internal", 80, listed=frozenset(),
                                   resolver=resolver, what="w") == ["169.254.169.254"]
    with pytest.raises(ToolError, match="link-local or cloud metadata"):
        await checked_addresses("hooks.test", 80, listed=frozenset(), resolver=resolver,
                                what="w")


async def test_https_to_the_checked_address_verifies_the_certificate_by_name(
    tmp_path: Path,
) -> None:
    """Over TLS the connection goes to the resolved address while SNI and the certificate
    check use the URL's name: a certificate for hooks.test is accepted, the request needs
    no system DNS, and a certificate for another name is refused."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")

    def certificate(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        return cert, key

    async def customer(request: web.Request) -> web.Response:
        return web.json_response({"name": "Alice", "host": request.headers["Host"]})

    app = web.Application()
    app.router.add_post("/customer", customer)
    results = {}
    for served_name in ("hooks.test", "other.test"):
        cert, key = certificate(served_name)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(ssl=server_ctx)
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ctx)
            ) as https:
                resolver, _ = fake_dns({"hooks.test": ["127.0.0.1"]})
                registry = one_tool(f"https://hooks.test:{server.port}/customer", https,
                                    hosts={"hooks.test"}, resolver=resolver)
                results[served_name] = await registry.call("crm.hook", {}, ctx(tmp_path))
        finally:
            await server.close()
    good, wrong = results["hooks.test"], results["other.test"]
    assert good.ok, good.error
    assert good.value["host"].startswith("hooks.test:")
    assert not wrong.ok and wrong.error is not None and "request failed" in wrong.error
