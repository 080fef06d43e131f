"""Headless Chromium driven over the DevTools protocol: just enough to fill in a form,
click, wait for a page, and see every request the page made.

    async with Browser.launch() as page:
        await page.load("http://127.0.0.1:8080/dashboard")
        await page.type_into("#token", "secret")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Page:
    ws: aiohttp.ClientWebSocketResponse
    requests: list[dict[str, Any]] = field(default_factory=list)  # Network.requestWillBeSent
    responses: list[dict[str, Any]] = field(default_factory=list)  # Network.responseReceived
    _next: int = 0
    _calls: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _waits: dict[str, list[asyncio.Future[dict[str, Any]]]] = field(default_factory=dict)

    async def read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                call = self._calls.pop(data["id"])
                if "error" in data:
                    call.set_exception(AssertionError(f"DevTools: {data['error']}"))
                else:
                    call.set_result(data.get("result", {}))
                continue
            method, params = data.get("method", ""), data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"])
            elif method == "Network.responseReceived":
                self.responses.append(params["response"])
            for waiter in self._waits.pop(method, []):
                if not waiter.done():
                    waiter.set_result(params)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        call: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[self._next] = call
        await self.ws.send_json({"id": self._next, "method": method, "params": params})
        return await call

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next `method` event: take it before causing the event."""
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waits.setdefault(method, []).append(waiter)
        return waiter

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` in the page; a Promise is awaited."""
        result = await self.send("Runtime.evaluate", expression=expression,
                                 awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def load(self, url: str) -> None:
        loaded = self.expect("Page.loadEventFired")
        await self.send("Page.navigate", url=url)
        await loaded

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the field and type as a user would (key events, not a `value =`)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def click_and_load(self, selector: str) -> None:
        loaded = self.expect("Page.loadEventFired")
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        await loaded

    async def wait_for(self, condition: str) -> Any:
        """Resolve once the JavaScript `condition` is truthy, re-checked on every DOM change."""
        return await self.evaluate(f"""new Promise(resolve => {{
            const check = () => {{
                const v = ({condition}); if (v) {{ resolve(v); return true; }}
            }};
            if (!check()) new MutationObserver((_, o) => {{ if (check()) o.disconnect(); }})
                .observe(document, {{subtree: true, childList: true, attributes: true}});
        }})""")


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Page]:
    """A headless Chromium with one page, its network events recorded."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1", "--window-size=1200,1400", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        drain: asyncio.Task[None] | None = None
        try:
            endpoint = await asyncio.wait_for(_devtools_endpoint(proc), 60)
            # Chromium goes on logging: a full pipe would stall it.
            drain = asyncio.create_task(_drain(proc))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://{endpoint}/json/list") as resp:
                    targets = await resp.json()
                target = next(t for t in targets if t["type"] == "page")
                async with http.ws_connect(target["webSocketDebuggerUrl"],
                                           max_msg_size=0) as ws:
                    page = Page(ws)
                    reader = asyncio.create_task(page.read())
                    try:
                        await page.send("Network.enable")
                        await page.send("Page.enable")
                        yield page
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
            if drain is not None:
                await drain


async def _devtools_endpoint(proc: asyncio.subprocess.Process) -> str:
    """host:port from Chromium's `DevTools listening on ws://HOST:PORT/...` line."""
    assert proc.stderr is not None
    while line := (await proc.stderr.readline()).decode():
        if line.startswith("DevTools listening on ws://"):
            return line.removeprefix("DevTools listening on ws://").split("/", 1)[0]
    raise AssertionError("chromium exited before DevTools listened")


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.read(65536):
        pass
