"""Hostile input on the live /media handler: nothing escapes, nothing disturbs another call."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.errors import ProtocolError
from ivr.logging import mask_number
from ivr.server.services import SERVICES
from ivr.sim.dial import call_urls, dial, voice_form
from ivr.sim.run import run_call
from ivr.sim.script import PressKeys
from ivr.telephony import inbound
from tests.media_peer import (
    JITTER_S,
    LEAD_S,
    closed_with,
    max_prompt_gap,
    max_silence_heard,
    media,
    start_stream,
)

SID = "MZ" + "a" * 32
CALL = "CA" + "b" * 32
ACCOUNT = "AC" + "c" * 32

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _valid_frames() -> list[dict[str, Any]]:
    payload = base64.b64encode(b"\xff" * 160).decode()
    return [
        {"event": "media", "sequenceNumber": "3", "streamSid": SID,
         "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": payload}},
        {"event": "dtmf", "sequenceNumber": "4", "streamSid": SID,
         "dtmf": {"track": "inbound_track", "digit": "5"}},
        {"event": "mark", "sequenceNumber": "5", "streamSid": SID, "mark": {"name": "prompt-1"}},
        {"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": {
            "streamSid": SID, "callSid": CALL, "accountSid": ACCOUNT, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}},
    ]


@st.composite
def mutated_frame(draw: st.DrawFn) -> str:
    """A valid frame with one field dropped, retyped or corrupted."""
    frame = json.loads(json.dumps(draw(st.sampled_from(_valid_frames()))))
    section = frame.get(frame["event"], {})
    target = draw(st.sampled_from(["top", "section"])) if section else "top"
    obj = frame if target == "top" else section
    key = draw(st.sampled_from(sorted(obj)))
    how = draw(st.sampled_from(["drop", "retype", "corrupt"]))
    if how == "drop":
        del obj[key]
    elif how == "retype":
        obj[key] = draw(json_values)
    else:
        obj[key] = draw(st.sampled_from(["", "!!!", "-1", "x" * 300, "\u0000", "9" * 40, "=="]))
    return json.dumps(frame)


# Everything here is skipped and the call goes on; a message over the size limit closes
# its connection instead (test_an_oversized_message_closes_only_its_own_connection).
hostile = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    mutated_frame(),
    st.just("{" * 5000),
    st.just(json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "x" * 16000}})),
    st.just(inbound.stop_message(9, "MZ" + "0" * 32, ACCOUNT, CALL)),  # another call's stop
)


def _examples(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    out: list[Any] = []

    @settings(max_examples=n, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out


async def test_hostile_frames_never_escape_and_a_healthy_call_completes(
    server: TestServer,
) -> None:
    """Hundreds of malformed frames (before and after start, binary too) are counted and
    skipped; the hostile connection stays usable, and a concurrent call completes."""
    frames: list[str] = _examples(hostile, 300)
    url = f"ws://127.0.0.1:{server.port}/media"
    before = [f for f in frames[:60] if '"start"' not in f]
    after = [f for f in frames if f not in before]

    async def attack() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            dialled = await dial(http, call_urls(url).base,
                                 voice_form(CALL, ACCOUNT, "+15550100009", "+15550100002"),
                                 flow="demo")
            return await frames_after_start(http, dialled.parameters)

    async def frames_after_start(http: aiohttp.ClientSession,
                                 parameters: dict[str, str]) -> dict[str, Any]:
        async with http.ws_connect(url) as ws:
            # Before start: everything here is out of order or malformed (a mutated start
            # can still be a valid one, so those wait until the call has started).
            await ws.send_str(inbound.inbound_media_message(2, SID, 1, 0, b"\xff" * 160))
            for text in before:
                await ws.send_str(text)
            await ws.send_bytes(b"\x00\x01binary")
            await ws.send_str(inbound.connected_message())
            await ws.send_str(inbound.start_message(1, SID, ACCOUNT, CALL, parameters))
            # A media frame after every other hostile one: at most 150 frames (3 s of
            # audio) at once, which is within what a line may burst (no flood).
            assert len(after) <= 300
            for i, text in enumerate(after):
                await ws.send_str(text)
                if i % 2 == 0:
                    await ws.send_str(inbound.inbound_media_message(
                        i // 2 + 2, SID, i // 2 + 1, 10 * i, b"\xff" * 160))
                await asyncio.sleep(0)
            # The call goes on: it still answers protocol-valid frames, it did not close.
            assert not ws.closed
            await ws.send_str(inbound.stop_message(len(after) + 2, SID, ACCOUNT, CALL))
            async with http.get(f"http://127.0.0.1:{server.port}/healthz") as resp:
                return dict(await resp.json())

    health, healthy = await asyncio.gather(
        attack(), run_call(url, [PressKeys("2")], flow="demo", transcribe=False, call_timeout=60),
    )
    counters = health["counters"]
    assert counters.get("handler_failures", 0) == 0
    assert counters.get("protocol_error.binary_frame") == 1
    assert counters.get("protocol_error.media_before_start", 0) >= 1
    assert counters.get("protocol_error.oversized", 0) == 0
    assert sum(v for k, v in counters.items() if k.startswith("protocol_error.")) >= 50
    # The healthy call was not disturbed.
    assert healthy.closed_by == "server"
    assert healthy.server is not None
    first = healthy.server["turns"][0]
    assert (first["input_kind"], first["understood"]) == ("dtmf", "support")
    assert healthy.server["outcome"] == "completed"


# --------------------------------------------------------------------------- the start

CALLER = "+15550100007"
# Every field of a start as /voice's parameters fill it, and an unsigned extra parameter.
_START_PATHS: list[tuple[str, ...]] = [
    ("event",), ("sequenceNumber",), ("streamSid",), ("start",),
    *[("start", key) for key in ("accountSid", "streamSid", "callSid", "tracks",
                                 "mediaFormat", "customParameters")],
    *[("start", "mediaFormat", key) for key in ("encoding", "sampleRate", "channels")],
    *[("start", "customParameters", key) for key in ("flow", "from", "to", "token", "caller")],
]
_CORRUPT = ["", "!!!", "-1", "x" * 300, "\u0000", "9" * 40, "==", "+15550100001",
            "main_menu", "CA" + "f" * 32, "v1.forged"]
Mutation = tuple[tuple[str, ...], str, Any]
# Drawn examples are mostly protocol errors; these make sure each verdict is reached.
_KNOWN: list[Mutation] = [
    (("start", "customParameters", "caller"), "corrupt", "+15550100001"),  # accepted
    (("start", "accountSid"), "edit", (0.5, "f")),  # accepted
    (("start", "customParameters", "from"), "corrupt", "+15550100001"),  # tampered
    (("start", "customParameters", "flow"), "corrupt", "main_menu"),
    (("start", "customParameters", "token"), "drop", None),  # missing
    (("start", "customParameters", "token"), "edit", (0.99, "A")),
    (("start", "callSid"), "corrupt", "CA" + "f" * 32),  # another call
    (("start", "mediaFormat"), "retype", 5),  # a protocol error
]


@st.composite
def start_mutation(draw: st.DrawFn) -> Mutation:
    """One change to one field of a genuine start: drop, retype, corrupt, or a single
    character replaced (position and character drawn)."""
    path = draw(st.sampled_from(_START_PATHS))
    how = draw(st.sampled_from(["drop", "retype", "corrupt", "edit"]))
    if how == "retype":
        return path, how, draw(json_values)
    if how == "corrupt":
        return path, how, draw(st.sampled_from(_CORRUPT))
    return path, how, (draw(st.floats(0, 1, exclude_max=True)), draw(st.characters(codec="ascii")))


def mutate(frame: dict[str, Any], mutation: Mutation) -> str:
    path, how, value = mutation
    parent = frame
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if how == "drop":
        parent.pop(key, None)
    elif how == "edit" and isinstance(parent.get(key), str) and parent[key]:
        text: str = parent[key]
        i = int(value[0] * len(text))
        parent[key] = text[:i] + value[1] + text[i + 1:]
    elif how == "edit":
        parent[key] = value[1]
    else:
        parent[key] = value
    return json.dumps(frame)


def expected_verdict(text: str, call_sid: str, issued: dict[str, str]) -> str:
    """What the server must make of a start: a protocol error, the call /voice vouched
    for (exactly its CallSid and its parameters), or a refused start."""
    try:
        start = inbound.parse_inbound(text)
    except ProtocolError:
        return "protocol_error"
    assert isinstance(start, inbound.Start)
    signed = {k: start.custom_parameters.get(k, "") for k in ("flow", "from", "to", "token")}
    if start.call_sid == call_sid and signed == {k: issued.get(k, "") for k in signed}:
        return "accepted"
    return "rejected"


async def test_mutated_starts_start_only_the_call_voice_vouched_for(server: TestServer) -> None:
    """Genuine starts (parameters from /voice) with one field changed, any field, the
    token and the identity among them, each on its own connection: a start is refused
    (closed before any prompt, no call row, counted) unless it is exactly what /voice
    vouched for, and a call that starts has the caller and flow /voice signed."""
    services = server.app[SERVICES]
    assert services.store is not None
    mutations = _KNOWN + _examples(start_mutation(), 60)
    urls = call_urls(f"http://127.0.0.1:{server.port}")
    verdicts: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for n, mutation in enumerate(mutations):
            call_sid, stream_sid = f"CA{n:032d}", f"MZ{n:032d}"
            dialled = await dial(http, urls.base,
                                 voice_form(call_sid, ACCOUNT, CALLER, "+15550100002"),
                                 flow="demo")
            frame = json.loads(inbound.start_message(1, stream_sid, ACCOUNT, call_sid,
                                                     dialled.parameters))
            text = mutate(frame, mutation)
            verdict = verdicts[call_sid] = expected_verdict(text, call_sid, dialled.parameters)
            async with http.ws_connect(urls.media) as ws:
                await ws.send_str(inbound.connected_message())
                await ws.send_str(text)
                if verdict == "protocol_error":
                    continue  # nothing to wait for: the socket stays open, we hang up
                msg = await ws.receive(timeout=15)
                if verdict == "rejected":
                    assert msg.type == aiohttp.WSMsgType.CLOSE, (mutation, msg)
                    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
                else:
                    assert msg.type == aiohttp.WSMsgType.TEXT, (mutation, msg)
                    assert json.loads(msg.data)["event"] == "media"
    for _ in range(500):  # the last dropped calls finish their records
        if not services.calls:
            break
        await asyncio.sleep(0.02)
    assert not services.calls
    rows = {row["call_sid"]: row for row in await services.store.list_calls(limit=1000)}
    accepted = {sid for sid, v in verdicts.items() if v == "accepted"}
    assert set(rows) == accepted
    assert all(r["flow"] == "demo" and r["from_masked"] == mask_number(CALLER)
               for r in rows.values())
    counters = services.counters
    assert counters.get("handler_failures", 0) == 0
    assert counters["calls_started"] == len(accepted)
    assert sum(v for k, v in counters.items() if k.startswith("start_rejected.")) == sum(
        v == "rejected" for v in verdicts.values())
    # The examples reach all three verdicts, or the property says little.
    assert set(verdicts.values()) == {"protocol_error", "accepted", "rejected"}


async def test_an_oversized_message_closes_only_its_own_connection(server: TestServer) -> None:
    """A 64 KiB message, mid-call, closes its connection with 1009 and is counted; a call
    in progress at the time completes with its audio paced as ever."""
    services = server.app[SERVICES]
    base = f"http://127.0.0.1:{server.port}"

    async def attack() -> tuple[int | None, float]:
        async with aiohttp.ClientSession() as http, http.ws_connect(base + "/media") as ws:
            stream = await start_stream(http, base, ws)
            for seq in range(2, 12):
                await ws.send_str(media(stream, seq, (seq - 2) * 20))
            async with asyncio.timeout(10):
                assert (await ws.receive()).type == aiohttp.WSMsgType.TEXT  # its greeting
            await ws.send_str(json.dumps({"event": "media", "streamSid": stream.stream_sid,
                                          "media": {"payload": "x" * 64 * 1024}}))
            async with asyncio.timeout(10):
                return await closed_with(ws), time.monotonic()

    (code, t_closed), healthy = await asyncio.gather(
        attack(),
        run_call(base.replace("http", "ws") + "/media", [PressKeys("2")], flow="demo",
                 transcribe=False, call_timeout=60),
    )
    assert code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert services.counters["protocol_error.oversized"] == 1
    assert services.counters.get("handler_failures", 0) == 0
    assert 0 < healthy.t_start < t_closed < healthy.t_end  # it was mid-call
    assert healthy.server is not None
    assert healthy.server["outcome"] == "completed"
    assert healthy.server["turns"][0]["understood"] == "support"
    # The healthy caller hears no silence: its frames may arrive late by less than the
    # lead buffered at the far end (the attacker shares the server and these 2 cores),
    # never by more.
    assert max_silence_heard(healthy) <= JITTER_S
    assert max_prompt_gap(healthy) <= LEAD_S
