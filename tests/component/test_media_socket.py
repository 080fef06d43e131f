"""The Media Stream socket's fast lane (`ivr.telephony.socket`): frames handled in the
read callback, in order with those that take the queue, control frames untouched."""

from __future__ import annotations

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from ivr.telephony.socket import MediaSocket


def lane_app(seen: list[tuple[str, str]], declined: set[str],
             sockets: list[MediaSocket] | None = None) -> web.Application:
    """A socket whose lane takes every text frame except those in `declined`; the read
    loop records what reaches it. Each frame's route is recorded in arrival order."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = MediaSocket(autoping=True)
        await ws.prepare(request)
        if sockets is not None:
            sockets.append(ws)

        def fast(text: str) -> bool:
            if text in declined:
                return False
            seen.append(("lane", text))
            return True

        ws.fast_lane(fast)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                seen.append(("loop", msg.data))
                if msg.data == "echo":
                    await ws.send_str(f"{len(seen)}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def test_text_frames_take_the_lane_and_the_declined_keep_their_order() -> None:
    seen: list[tuple[str, str]] = []
    sockets: list[MediaSocket] = []
    app = lane_app(seen, {"start", "echo"}, sockets)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/ws")
        await ws.send_str("start")
        await ws.send_str("echo")
        reply = await ws.receive()  # the read loop has taken both: nothing queued now
        assert reply.type == WSMsgType.TEXT and reply.data == "2"
        assert sockets[0].lane_open
        for text in ("a", "b", "echo"):
            await ws.send_str(text)
        reply = await ws.receive()
        assert reply.type == WSMsgType.TEXT and reply.data == "5"
        # Control frames are aiohttp's (a ping is answered in its read loop), and the
        # lane goes on after them.
        # "c" may find the ping still queued (then it queues behind it) or not.
        await ws.ping(b"x")
        for text in ("c", "echo"):
            await ws.send_str(text)
        reply = await ws.receive()
        assert reply.type == WSMsgType.TEXT and reply.data == "7"
        for text in ("d", "echo"):
            await ws.send_str(text)
        reply = await ws.receive()
        assert reply.type == WSMsgType.TEXT and reply.data == "9"
        await ws.close()
    assert [t for _, t in seen] == ["start", "echo", "a", "b", "echo", "c", "echo", "d",
                                    "echo"]
    assert [seen[i][0] for i in (0, 1, 2, 3, 4, 6, 7, 8)] == [
        "loop", "loop", "lane", "lane", "loop", "loop", "lane", "loop"]


async def test_a_frame_arriving_behind_a_queued_one_waits_its_turn() -> None:
    """While the read loop has not yet taken a frame the lane declined, frames behind it
    take the queue too (never jump ahead), even those the lane would take."""
    seen: list[tuple[str, str]] = []
    app = lane_app(seen, {"slow"})
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/ws")
        # One write of three frames: all parsed in one read callback, before the read
        # loop runs, so "x" and "y" find "slow" still queued.
        await ws.send_str("slow")
        await ws.send_str("x")
        await ws.send_str("y")
        await ws.send_str("echo")  # declined by nobody: taken by the lane, no reply
        await ws.close()
    texts = [t for _, t in seen]
    assert texts.index("slow") < texts.index("x") < texts.index("y")


async def test_frames_written_below_send_str_reach_the_peer_whole() -> None:
    """`write_now` frames of each header size (7-bit, 16-bit, 64-bit lengths) arrive as
    the peer's aiohttp parses them, in order with `send_str` frames."""
    sizes = (5, 125, 126, 300, 65535, 65536, 70000)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = MediaSocket()
        await ws.prepare(request)
        for i, n in enumerate(sizes):
            text = str(i) * n
            # A peer that has not read 64 KB yet gets the rest through send_str (which
            # waits for it): write_now steps aside rather than pile data up.
            if i % 3 == 2 or not ws.write_now(text):
                await ws.send_str(text)
                if i % 3 != 2:
                    assert n > 60000, "write_now refused a small frame on an idle socket"
        await ws.close()
        assert not ws.write_now("x")  # closed: never a frame after the close
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/ws", max_msg_size=0)
        got = [msg.data async for msg in ws]
    assert got == [str(i) * n for i, n in enumerate(sizes)]
