"""`ivr serve` on a public address: refuses without TWILIO_AUTH_TOKEN, starts with --insecure.

Each test runs `python -m ivr serve` in its own process, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from ivr.sim.run import free_port
from tests.conftest import ROOT


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any IVR_* / TWILIO_* setting, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IVR_", "TWILIO_"))}
    env.update(PYTHONPATH=str(ROOT), IVR_DB=str(tmp_path / "ivr.db"),
               IVR_FLOWS=str(ROOT / "flows"), IVR_RECOGNIZER_WORKERS="1", **extra)
    return env


async def _refused(tmp_path: Path, **extra: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "serve", "--host", "0.0.0.0", "--port", str(free_port()),
        env=_env(tmp_path, **extra), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err.decode()
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


async def test_a_public_bind_without_the_auth_token_exits_2(tmp_path: Path) -> None:
    message = await _refused(tmp_path)
    assert message.startswith("ivr: refusing to serve on 0.0.0.0 without TWILIO_AUTH_TOKEN")


async def test_a_public_bind_with_the_token_needs_the_public_url(tmp_path: Path) -> None:
    message = await _refused(tmp_path, TWILIO_AUTH_TOKEN="t" * 32)
    assert "IVR_PUBLIC_URL" in message and "IVR_TRUST_PROXY=1" in message


async def test_insecure_starts_with_a_warning(tmp_path: Path) -> None:
    """--insecure starts on 0.0.0.0 and says so; /healthz answers on loopback."""
    port = free_port("0.0.0.0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "serve", "--host", "0.0.0.0", "--port", str(port),
        "--insecure", env=_env(tmp_path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async def until_running() -> None:
            assert proc.stderr is not None
            while line := (await proc.stderr.readline()).decode():
                seen.append(line)
                if "Running on" in line:
                    return
            raise AssertionError("the server exited:\n" + "".join(seen))

        await asyncio.wait_for(until_running(), 120)
        async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/healthz"
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["ok"] is True
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert any('"insecure"' in line and '"warning"' in line for line in seen), seen
