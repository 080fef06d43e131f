"""/dashboard in headless Chromium: every chart renders the seeded data, a call's detail
opens; with a token, the sign-in form (driven over the DevTools protocol) and its cookie.

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
from tests.component.test_api import _seeded
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
    for chart in ("calls", "latency", "outcomes", "funnel"):
        svg = re.search(rf'<svg[^>]*data-chart="{chart}"[^>]*>(.*?)</svg>', dom, re.S)
        assert svg is not None, chart
        assert "<rect" in svg.group(1), f"chart {chart} drew nothing"
    assert "3 calls · containment 66.7%" in dom
    assert dom.count('class="call"') == 3
    assert 'data-ready="1"' in detail
    assert 'id="detail" style="display: block;"' in detail
    assert "Say sales." in detail and "100 ms" in detail
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 1000


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
