"""The floor for `ivr bench load --baseline`: a minimal Twilio Media Streams server.

What the naive version of a media server does and no less: every inbound frame parsed
(`json.loads`, base64, µ-law -> PCM16, webrtcvad), a prompt paced out by a task per call
that sleeps 20 ms between frames (each frame `json.dumps`-ed and base64-encoded as it
goes), a mark after it, then a listening pause before the prompt again, like a reprompt;
a key pressed during the pause starts the next prompt at once (the naive DTMF reply the
load benchmark times). No flows, no recognizer, no records. The ratio of `ivr serve`'s
CPU per call-second to this server's under the same load is what the load benchmark
prints, so the figure means the same on any machine.

Run: `python -m ivr.bench.baseline --port P` (127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time

import webrtcvad
from aiohttp import WSMsgType, web

from ivr.audio.codec import ulaw_to_pcm16

# 3 s prompts with 1.3 s of listening between them: ~35 frames/s per call out, what the
# shipped demo flow sends under `ivr bench load` (printed for both), so like is compared.
PROMPT_S = 3.0  # seconds of audio per prompt
PAUSE_S = 1.3  # listening between prompts (a no-input reprompt)
_PROMPT = bytes((0x7F + (i % 16) * 4) % 256 for i in range(int(PROMPT_S * 8000)))


async def _voice(request: web.Request) -> web.Response:
    url = f"ws://{request.host}/media"
    return web.Response(text=f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                             f'<Stream url="{url}"/></Connect></Response>',
                        content_type="text/xml")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "counters": {}})


async def _speak(ws: web.WebSocketResponse, sid: str, marks: asyncio.Queue[str],
                 pressed: asyncio.Event) -> None:
    n = 0
    while not ws.closed:
        n += 1
        next_at = time.monotonic()
        for i in range(0, len(_PROMPT), 160):
            payload = base64.b64encode(_PROMPT[i:i + 160]).decode()
            await ws.send_str(json.dumps(
                {"event": "media", "streamSid": sid, "media": {"payload": payload}}))
            next_at += 0.020
            await asyncio.sleep(max(0.0, next_at - 0.040 - time.monotonic()))
        name = f"prompt-{n}"
        await ws.send_str(json.dumps({"event": "mark", "streamSid": sid,
                                      "mark": {"name": name}}))
        while await marks.get() != name:
            pass
        pressed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pressed.wait(), PAUSE_S)


async def _media(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    vad = webrtcvad.Vad(2)
    marks: asyncio.Queue[str] = asyncio.Queue()
    pressed = asyncio.Event()
    speaker: asyncio.Task[None] | None = None
    voiced = 0
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            event = data.get("event")
            if event == "media":
                pcm = ulaw_to_pcm16(base64.b64decode(data["media"]["payload"]))
                voiced += vad.is_speech(pcm, 8000)
            elif event == "mark":
                marks.put_nowait(data["mark"]["name"])
            elif event == "dtmf":
                pressed.set()
            elif event == "start" and speaker is None:
                speaker = asyncio.create_task(_speak(ws, data["streamSid"], marks, pressed))
    finally:
        if speaker is not None:
            speaker.cancel()
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_post("/voice", _voice)
    app.router.add_get("/media", _media)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
