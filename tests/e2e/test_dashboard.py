"""/dashboard in headless Chromium: every chart renders the seeded data (cost by provider
with its axes, legend, range picker and unpriced banner), a call's detail opens with a bar
per provider span; with a token, the sign-in form (driven over the DevTools protocol) and
its cookie.

Screenshots go to `artifacts/` (test artifacts). Needs Debian's `chromium` (`.ci/run`
installs it when missing).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from ivr.server.app import create_app
from tests.component.test_api import SEED_COSTS, SEED_UNPRICED, _seeded
from tests.conftest import ROOT, make_settings
from tests.e2e import devtools

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "artifacts"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


async def _chromium(url: str, *extra: str) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
            "--window-size=1200,1400", *extra, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return out.decode("utf-8", errors="replace")


async def test_dashboard_renders_every_chart_and_opens_a_call(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, recognizer_workers=1)
    await _seeded(tmp_path, settings.db)  # the server's database (IVR_DB may be PostgreSQL)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}/dashboard"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        dom = await _chromium(base, "--dump-dom")
        detail = await _chromium(f"{base}#call=CA{0:032d}", "--dump-dom")
        await _chromium(base, f"--screenshot={ARTIFACTS / 'dashboard.png'}")
        await _chromium(f"{base}#call=CA{0:032d}",
                        f"--screenshot={ARTIFACTS / 'dashboard-call.png'}")
    finally:
        await server.close()
    assert 'data-ready="1"' in dom, dom[-500:]
    for chart in ("calls", "latency", "outcomes", "funnel", "cost"):
        svg = re.search(rf'<svg[^>]*data-chart="{chart}"[^>]*>(.*?)</svg>', dom, re.S)
        assert svg is not None, chart
        assert "<rect" in svg.group(1), f"chart {chart} drew nothing"
    _assert_cost_chart(dom)
    assert "3 calls · containment 66.7%" in dom
    assert dom.count('class="call"') == 3
    assert 'data-ready="1"' in detail
    assert 'id="detail" style="display: block;"' in detail
    assert "Say sales." in detail and "100 ms" in detail
    _assert_provider_waterfall(detail)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 1000


def _chart(dom: str, name: str) -> str:
    svg = re.search(rf'<svg[^>]*data-chart="{name}"[^>]*>(.*?)</svg>', dom, re.S)
    assert svg is not None, name
    return svg.group(1)


def _assert_cost_chart(dom: str) -> None:
    """Stacked bars per provider in the three seeded hours, axes labelled, a legend naming
    every provider, the range picker, and the banner naming the unpriced engine."""
    cost = _chart(dom, "cost")
    # Three calls in three hours, each with a cost from each of the four providers.
    assert cost.count('class="cost-bar"') == 3 * len(SEED_COSTS)
    assert ">USD<" in cost and "time (UTC, hourly buckets)" in cost
    assert re.search(r'class="y-tick">\$0\.0000<', cost)
    assert len(re.findall(r'class="x-tick">\d\d', cost)) >= 3
    legend = re.findall(r'<text[^>]*class="legend">([^<]*)</text>', cost)
    assert legend == sorted(SEED_COSTS)
    assert re.search(r'<select id="range"[^>]*>.*value="24h".*value="7d".*value="30d"', dom, re.S)
    banner = re.search(r'<div class="warn" id="unpriced"([^>]*)>([^<]*)</div>', dom)
    assert banner is not None and "hidden" not in banner.group(1)
    assert banner.group(2).startswith(f"unpriced: {SEED_UNPRICED} — ")
    assert "counted at $0" in banner.group(2) and "IVR_PRICING" in banner.group(2)


def _spans(detail: str) -> dict[tuple[str, str], list[str]]:
    """The call view's provider bars: (stage, provider) -> the texts of each bar's row."""
    rows: dict[tuple[str, str], list[str]] = {}
    for m in re.finditer(r'<g class="span" data-stage="(\w+)" data-provider="([^"]+)">(.*?)</g>',
                         _chart(detail, "waterfall"), re.S):
        texts = re.findall(r"<text[^>]*>([^<]*)</text>", m.group(3))
        assert re.search(r'<rect[^>]*class="span-\w+"', m.group(3)), m.group(0)
        rows.setdefault((m.group(1), m.group(2)), []).append(" | ".join(texts))
    return rows


def _assert_provider_waterfall(detail: str) -> None:
    """The seeded remote-engine turn: a bar per provider span with its duration, the LLM's
    first token and the synthesis' first byte marked (a darker segment) and stated."""
    assert _spans(detail) == {
        ("stt", "openai:whisper-1"): ["stt openai:whisper-1 | 350 ms"],
        ("llm", "gpt-4o-mini"): ["llm gpt-4o-mini | 340 ms · first token 260 ms",
                                 "llm gpt-4o-mini | 195 ms · first token 135 ms"],
        ("tool", "bookings.check_availability"): ["tool bookings.check_availability | 60 ms"],
        ("tts", "openai:tts-1"): ["tts openai:tts-1 | 630 ms · first byte 240 ms"],
    }
    waterfall = _chart(detail, "waterfall")
    assert waterfall.count('class="span-llm first"') == 2
    assert waterfall.count('class="span-tts first"') == 1
    assert "turn 2 · agent" in waterfall and "voice-to-voice 1250 ms" in waterfall


async def test_the_range_picker_refetches_the_cost_chart(tmp_path: Path) -> None:
    """Picking "last 30 days" asks /api/costs for daily buckets and redraws: the three
    seeded calls' hours become one or two days."""
    settings = make_settings(tmp_path, recognizer_workers=1)
    await _seeded(tmp_path, settings.db)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with devtools.launch() as page:
            await page.load(base + "/dashboard")
            assert await page.wait_for("document.body.dataset.ready") == "1"
            hourly = await page.evaluate(
                "document.querySelectorAll('svg[data-chart=cost] rect.cost-bar').length")
            await page.evaluate("const r = document.getElementById('range');"
                                "r.value = '30d'; r.dispatchEvent(new Event('change'))")
            await page.wait_for("document.querySelector('svg[data-chart=cost]')"
                                ".textContent.includes('daily buckets')")
            daily = await page.evaluate(
                "document.querySelectorAll('svg[data-chart=cost] rect.cost-bar').length")
            banner = await page.evaluate("document.getElementById('unpriced').textContent")
            urls = [r["url"].removeprefix(base) for r in page.requests]
    finally:
        await server.close()
    assert hourly == 3 * len(SEED_COSTS)
    # The calls are two hours apart: on one UTC day, or across midnight on two.
    assert daily in (len(SEED_COSTS), 2 * len(SEED_COSTS))
    assert "/api/costs?since=24h&bucket=hour" in urls
    assert "/api/costs?since=30d&bucket=day" in urls
    assert banner.startswith(f"unpriced: {SEED_UNPRICED}")


async def test_the_dashboard_signs_in_with_a_token_that_never_enters_a_url(
    tmp_path: Path,
) -> None:
    """With IVR_API_TOKEN: the page offers a form; typing the token and clicking sign-in
    leaves an HttpOnly cookie, the page's /api calls succeed with it, a call's detail
    opens, and no request URL the browser made ever carried the token."""
    token = "dash-" + secrets.token_hex(12)
    settings = make_settings(tmp_path, recognizer_workers=1, api_token=token)
    await _seeded(tmp_path, settings.db)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        async with devtools.launch() as page:
            await page.load(base + "/dashboard")
            assert await page.evaluate("!!document.querySelector('form#sign-in')")
            await page.type_into("#token", token)
            await page.click_and_load("#sign-in button[type=submit]")
            ready = await page.wait_for("document.body.dataset.ready")
            assert ready == "1", await page.evaluate("document.body.innerText")
            assert await page.evaluate("document.querySelectorAll('tr.call').length") == 3
            sid = await page.evaluate("document.querySelector('tr.call').dataset.sid")
            await page.evaluate("document.querySelector('tr.call').click()")
            await page.wait_for("document.querySelectorAll('#transcript tr.turn').length")
            cookies = (await page.send("Network.getCookies", urls=[base]))["cookies"]
            visible_to_scripts = await page.evaluate("document.cookie")
            shot = await page.send("Page.captureScreenshot", format="png")
            (ARTIFACTS / "dashboard-signed-in.png").write_bytes(base64.b64decode(shot["data"]))
            requests, responses = list(page.requests), list(page.responses)
    finally:
        await server.close()
    session = next(c for c in cookies if c["name"] == "ivr_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert "ivr_session" not in visible_to_scripts
    assert token not in session["value"]
    urls = [r["url"] for r in requests]
    assert not [u for u in urls if token in u], urls
    sign_in = [r for r in requests if r["method"] == "POST"]
    assert [r["url"] for r in sign_in] == [base + "/dashboard"]
    status = {r["url"].removeprefix(base): r["status"] for r in responses}
    assert status["/api/stats"] == 200 and status["/api/calls?limit=200"] == 200
    assert status[f"/api/calls/{sid}"] == 200
