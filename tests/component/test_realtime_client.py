"""The Realtime client against the fake Realtime server: the session update in both
dialects (µ-law both ways), audio in and out byte-exact, function calls, barge-in's
cancel and truncate, server VAD and transcripts, usage as billable units, a dropped
socket, connect failures with the key redacted, malformed frames."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from ivr.llm.realtime import (
    AudioDelta,
    AudioDone,
    Closed,
    FunctionCall,
    InputTranscript,
    InputTranscriptDelta,
    OutputTranscript,
    RealtimeConfig,
    RealtimeError,
    RealtimeEvent,
    RealtimeSession,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    usage_units,
)
from ivr.providers.errors import (
    ProviderBadResponse,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
)
from tests.component.realtime_fixtures import fake_realtime, http_session  # noqa: F401 - fixtures
from tests.fake_realtime import DEFAULT_USAGE, FakeRealtime, RealtimeReply

KEY = "sk-test-secret-key"
PARAMETERS = {"type": "object", "properties": {"party": {"type": "integer"}},
              "required": ["party"]}
# Given in the chat-completions form, as the agent's registry describes tools.
CHAT_TOOL = {"type": "function", "function": {
    "name": "book_table", "description": "Book a table.", "parameters": PARAMETERS}}
FLAT_TOOL = {"type": "function", "name": "book_table", "description": "Book a table.",
             "parameters": PARAMETERS}
ULAW = bytes(range(256)) * 4 + b"\xff\x7f\x00"  # every byte value; not a multiple of 160


def config(url: str, **overrides: object) -> RealtimeConfig:
    values: dict[str, object] = {
        "url": url, "api_key": KEY, "model": "gpt-realtime", "voice": "marin",
        "instructions": "You book tables.", "tools": [CHAT_TOOL],
    }
    values.update(overrides)
    return RealtimeConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def session(fake: FakeRealtime, http: aiohttp.ClientSession
                  ) -> AsyncIterator[RealtimeSession]:
    s = await RealtimeSession.connect(http, config(fake.url))
    yield s
    await s.close()


async def until(events: AsyncIterator[RealtimeEvent], last: type) -> list[RealtimeEvent]:
    """Events up to and including the first of type `last` (2 s at most)."""
    seen: list[RealtimeEvent] = []
    async with asyncio.timeout(2):
        async for event in events:
            seen.append(event)
            if isinstance(event, last):
                return seen
    raise AssertionError(f"events ended before a {last.__name__}: {seen}")


async def test_ga_session_update_sets_pcmu_both_ways_instructions_tools_transcription(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    """GA: µ-law (`audio/pcmu`) in and out, server VAD, the step's instructions and tools
    (flattened to the Realtime form), the voice and input transcription; bearer auth and
    the model in the query, no beta header."""
    assert session.beta is False
    assert fake.session_updates == [{
        "type": "realtime", "model": "gpt-realtime", "instructions": "You book tables.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"},
                      "transcription": {"model": "whisper-1"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
        },
        "tools": [FLAT_TOOL], "tool_choice": "auto",
    }]
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert "OpenAI-Beta" not in fake.headers[0]
    assert fake.query[0] == {"model": "gpt-realtime"}


async def test_beta_session_update_uses_g711_ulaw_and_the_beta_header(
    fake: FakeRealtime, http: aiohttp.ClientSession
) -> None:
    """Beta: a flat session with `g711_ulaw` both ways, accepted by a beta server."""
    fake.beta = True
    s = await RealtimeSession.connect(
        http, config(fake.url, model="gpt-4o-realtime-preview", beta=True, tools=[FLAT_TOOL]))
    await s.close()
    assert s.beta is True
    assert fake.headers[0]["OpenAI-Beta"] == "realtime=v1"
    assert fake.session_updates == [{
        "modalities": ["audio", "text"], "instructions": "You book tables.",
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad"}, "tools": [FLAT_TOOL], "tool_choice": "auto",
        "voice": "marin",
    }]


async def test_beta_dialect_is_detected_from_session_created(
    fake: FakeRealtime, http: aiohttp.ClientSession
) -> None:
    """A server that speaks beta without being asked gets the beta update (which it
    accepts: the GA shape would be refused as unknown parameters)."""
    fake.beta = True
    s = await RealtimeSession.connect(http, config(fake.url))
    await s.close()
    assert s.beta is True
    assert fake.session_updates[0]["input_audio_format"] == "g711_ulaw"


async def test_transcription_can_be_left_off(
    fake: FakeRealtime, http: aiohttp.ClientSession
) -> None:
    s = await RealtimeSession.connect(http, config(fake.url, transcription_model=None))
    await s.close()
    assert "transcription" not in fake.session_updates[0]["audio"]["input"]


async def test_appended_ulaw_arrives_byte_exact(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    """Caller frames go to the provider untouched, in order."""
    sent = os.urandom(160 * 50)
    for i in range(0, len(sent), 160):
        session.append_audio(sent[i : i + 160])
    await fake.wait_until(lambda f: len(f.audio) >= len(sent))
    assert bytes(fake.audio) == sent
    assert session.stats["audio_dropped"] == 0


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
async def test_audio_deltas_come_out_byte_exact(
    fake: FakeRealtime, http: aiohttp.ClientSession, beta: bool
) -> None:
    """The provider's µ-law reaches the consumer exactly as sent (GA
    `response.output_audio.delta`, beta `response.audio.delta`), then the transcript, the
    end of the audio and the response with its usage."""
    fake.beta = beta
    fake.replies.append(RealtimeReply(audio=ULAW, transcript="Hello, how can I help?"))
    s = await RealtimeSession.connect(http, config(fake.url, beta=beta))
    await s.respond()
    events = await until(s.events(), ResponseDone)
    await s.close()
    deltas = [e for e in events if isinstance(e, AudioDelta)]
    assert b"".join(d.ulaw for d in deltas) == ULAW
    assert len(deltas) == 7  # 160 bytes each, the last one short
    item = deltas[0].item_id
    assert {d.item_id for d in deltas} == {item}
    tail = events[len(deltas):]
    assert tail == [OutputTranscript(item, "Hello, how can I help?"), AudioDone(item),
                    ResponseDone("completed", DEFAULT_USAGE)]
    assert events[-1].usage == DEFAULT_USAGE  # type: ignore[union-attr]
    assert fake.response_creates == [{"type": "response.create"}]


async def test_respond_with_instructions(fake: FakeRealtime, session: RealtimeSession) -> None:
    await session.respond("Greet the caller.")
    await fake.wait_until(lambda f: len(f.response_creates) == 1)
    assert fake.response_creates[0]["response"] == {"instructions": "Greet the caller."}


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
async def test_function_call_result_then_next_response(
    fake: FakeRealtime, http: aiohttp.ClientSession, beta: bool
) -> None:
    """A function call is reported once (beta names it only in the output item), its
    result goes back as a function_call_output with a new response, which is spoken."""
    fake.beta = beta
    fake.replies.extend([
        RealtimeReply(function_call=("book_table", '{"party": 4, "time": "19:00"}')),
        RealtimeReply(audio=ULAW[:320], transcript="Booked for four."),
    ])
    s = await RealtimeSession.connect(http, config(fake.url, beta=beta))
    events = s.events()
    await s.respond()
    first = await until(events, ResponseDone)
    calls = [e for e in first if isinstance(e, FunctionCall)]
    assert len(calls) == 1
    call = calls[0]
    assert (call.name, call.arguments_json) == ("book_table", '{"party": 4, "time": "19:00"}')
    await s.send_function_result(call.call_id, '{"booking": "BK-1"}')
    second = await until(events, ResponseDone)
    await s.close()
    assert fake.function_outputs == [(call.call_id, '{"booking": "BK-1"}')]
    assert len(fake.response_creates) == 2
    assert b"".join(e.ulaw for e in second if isinstance(e, AudioDelta)) == ULAW[:320]
    assert OutputTranscript(second[0].item_id, "Booked for four.") in second  # type: ignore[union-attr]


async def test_cancel_and_truncate_reach_the_server(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    """Barge-in: the response in progress is cancelled (it ends `cancelled`) and the
    assistant item is truncated to what the caller heard."""
    hold = asyncio.Event()
    fake.replies.append(RealtimeReply(audio=ULAW, transcript="A long reply", hold=hold))
    events = session.events()
    await session.respond()
    first = await until(events, AudioDelta)
    item = first[-1].item_id  # type: ignore[union-attr]
    await session.cancel()
    await session.truncate(item, 120)
    rest = await until(events, ResponseDone)
    assert rest[-1] == ResponseDone("cancelled")
    assert not any(isinstance(e, AudioDelta) for e in rest)
    await fake.wait_until(lambda f: len(f.truncates) == 1)
    assert fake.cancels == 1
    assert fake.truncates == [(item, 0, 120)]


async def test_cancel_with_no_response_is_an_error_event_not_the_end(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    events = session.events()
    await session.cancel()
    seen = await until(events, RealtimeError)
    assert seen[-1] == RealtimeError("response_cancel_not_active",
                                     "Cancellation failed: no active response found")
    await session.respond()
    assert (await until(events, ResponseDone))[-1].status == "completed"  # type: ignore[union-attr]


async def test_server_vad_and_transcripts(fake: FakeRealtime, session: RealtimeSession) -> None:
    """Speech started/stopped on the provider's audio clock, the caller's transcript (a
    delta, then the whole), then the reply server VAD asked for."""
    session.append_audio(b"\xff" * 8000)  # one second
    await fake.wait_until(lambda f: len(f.audio) == 8000)
    fake.replies.append(RealtimeReply(audio=ULAW[:160], transcript="For how many?"))
    events = session.events()
    await fake.caller_spoke("a table for four", ms=800)
    seen = await until(events, ResponseDone)
    item = seen[0].item_id  # type: ignore[union-attr]
    assert seen[:4] == [SpeechStarted(200, item), SpeechStopped(1000, item),
                        InputTranscriptDelta(item, "a table for four"),
                        InputTranscript(item, "a table for four")]
    assert any(isinstance(e, OutputTranscript) and e.text == "For how many?" for e in seen)
    assert fake.response_creates == []  # the server started it


async def test_speech_started_alone(fake: FakeRealtime, session: RealtimeSession) -> None:
    events = session.events()
    await fake.speech_started(1234)
    event = (await until(events, SpeechStarted))[-1]
    assert event.audio_start_ms == 1234  # type: ignore[union-attr]


def test_usage_units_move_cached_tokens_out_of_text_and_audio() -> None:
    """Realtime usage as disjoint billable units: cached tokens counted once, under
    cached_in, by modality when the details say, else from text first."""
    assert usage_units(DEFAULT_USAGE) == {
        "text_in": 36, "cached_in": 64, "audio_in": 20, "text_out": 15, "audio_out": 45}
    no_split = {"input_tokens": 120, "output_tokens": 10,
                "input_token_details": {"text_tokens": 50, "audio_tokens": 70,
                                        "cached_tokens": 80},
                "output_token_details": {"text_tokens": 10, "audio_tokens": 0}}
    assert usage_units(no_split) == {"cached_in": 80, "audio_in": 40, "text_out": 10}
    audio_cached = {"input_tokens": 100, "input_token_details": {
        "text_tokens": 40, "audio_tokens": 60, "cached_tokens": 30,
        "cached_tokens_details": {"text_tokens": 10, "audio_tokens": 20}}}
    assert usage_units(audio_cached) == {"text_in": 30, "cached_in": 30, "audio_in": 40}
    assert usage_units({}) == {}
    assert usage_units({"input_tokens": "x", "output_tokens": -3}) == {}


async def test_usage_from_response_done_prices_as_units(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    fake.replies.append(RealtimeReply(audio=ULAW[:160], usage={
        "input_tokens": 10, "output_tokens": 30,
        "input_token_details": {"text_tokens": 4, "audio_tokens": 6, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 5, "audio_tokens": 25}}))
    await session.respond()
    done = (await until(session.events(), ResponseDone))[-1]
    assert usage_units(done.usage) == {  # type: ignore[union-attr]
        "text_in": 4, "audio_in": 6, "text_out": 5, "audio_out": 25}


async def test_dropped_socket_yields_closed_and_later_sends_are_dropped(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    events = session.events()
    fake.drop()
    closed = (await until(events, Closed))[-1]
    assert closed.reason == "dropped"  # type: ignore[union-attr]
    session.append_audio(b"\xff" * 160)
    await session.cancel()
    assert session.stats["audio_dropped"] == 1
    assert session.stats["dropped_after_close"] == 1


async def test_server_close_frame_yields_server_closed(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    events = session.events()
    await fake.hang_up()
    assert (await until(events, Closed))[-1] == Closed("server_closed", 1000)


async def test_close_ends_events_with_closed(fake: FakeRealtime, session: RealtimeSession
                                             ) -> None:
    """Our own close: a running `events()` ends with `Closed("closed")`; what was queued
    before it (a last cancel) still reaches the provider."""
    events = session.events()
    reader = asyncio.create_task(until(events, Closed))
    await session.respond()
    await session.close()
    assert (await reader)[-1].reason == "closed"  # type: ignore[union-attr]
    assert len(fake.response_creates) == 1


async def test_refused_upgrade_raises_http_error_with_the_key_redacted(
    fake: FakeRealtime, http: aiohttp.ClientSession
) -> None:
    fake.fail_connect = True
    with pytest.raises(ProviderHTTPError) as raised:
        # Some gateways take the key in the query (Azure's `api-key`): never in errors.
        await RealtimeSession.connect(http, config(f"{fake.url}?api-key={KEY}"))
    assert raised.value.status == 401
    assert KEY not in str(raised.value)
    assert "***" in str(raised.value)


async def test_unreachable_raises_unavailable_with_the_key_redacted(
    http: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(ProviderUnavailable) as raised:
            await RealtimeSession.connect(
                http, config(f"ws://127.0.0.1:{port}/v1/realtime?api-key={KEY}"))
    assert KEY not in str(raised.value)
    assert raised.value.reason == "unavailable"


async def test_no_session_in_time_raises_timeout(
    fake: FakeRealtime, http: aiohttp.ClientSession
) -> None:
    fake.silent = True
    with pytest.raises(ProviderTimeout):
        await RealtimeSession.connect(http, config(fake.url, connect_timeout_s=0.2))


async def test_refused_session_raises_bad_response_with_the_key_redacted(
    fake: FakeRealtime, http: aiohttp.ClientSession
) -> None:
    fake.refuse_session = "invalid_value"
    with pytest.raises(ProviderBadResponse) as raised:
        await RealtimeSession.connect(http, config(fake.url))
    assert "invalid_value" in str(raised.value)
    assert KEY not in str(raised.value)


async def test_malformed_frames_are_counted_and_skipped(
    fake: FakeRealtime, session: RealtimeSession
) -> None:
    events = session.events()
    for raw in ('{"type": "response.output_audio.del', "[1, 2]", '{"no": "type"}',
                '{"type": "response.output_audio.delta", "item_id": "i", "delta": "!!"}'):
        await fake.send_raw(raw)
    await fake.send_raw('{"type": "response.unknown_thing", "x": 1}')  # ignored, not malformed
    await fake.send_error("bad_thing", "it went wrong")
    seen = await until(events, RealtimeError)
    assert seen == [RealtimeError("bad_thing", "it went wrong")]
    assert session.malformed == 4
