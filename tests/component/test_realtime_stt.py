"""The Realtime transcription recognizer against the fake Realtime server: the session it
opens (both dialects, the grammar in the prompt), audio resampled to 24 kHz as it is fed,
partials from the deltas, the completed transcript with its billed units, and each way
it can fail raising a `ProviderError` (so the fallback serves the utterance)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import numpy as np
import pytest

from ivr.grammar import Grammar
from ivr.provider_config import ProviderConfig
from ivr.providers.errors import (
    ProviderBadResponse,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
)
from ivr.providers.http import ProviderClient
from ivr.speech.base import PartialResults, Recognition, Recognizer
from ivr.speech.fallback import FallbackRecognizer
from ivr.speech.realtime_stt import RealtimeRecognizer, RealtimeUtterance
from tests.component.realtime_fixtures import fake_realtime, http_session  # noqa: F401 - fixtures
from tests.fake_realtime import (
    TRANSCRIPTION_USAGE,
    FakeRealtime,
    TranscriptReply,
)

KEY = "sk-test-secret-key"
FRAME = 640  # 20 ms of 16 kHz PCM16, what the call session feeds


def recognizer(fake: FakeRealtime, http: aiohttp.ClientSession, **kw: object
               ) -> RealtimeRecognizer:
    config = ProviderConfig(role="stt", base_url="http://127.0.0.1:1/v1", api_key=KEY,
                            model="gpt-4o-transcribe", breaker_threshold=2)
    return RealtimeRecognizer(ProviderClient(config, http), http, fake.url, **kw)  # type: ignore[arg-type]


def tone(seconds: float, hz: float = 1000.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).tobytes()


def feed(utt: RealtimeUtterance, pcm: bytes) -> None:
    for i in range(0, len(pcm), FRAME):
        utt.feed(pcm[i : i + FRAME])


async def until(check: Callable[[], bool]) -> None:
    """Until `check()` holds: `partial()` is a read that never blocks, with nothing to
    await, and the recognizer's reader runs on the loop, so yield to it; 2 s at most, so a
    state that never comes fails the test instead of hanging it."""
    async with asyncio.timeout(2.0):
        while True:
            if check():
                return
            await asyncio.sleep(0.005)


async def test_finish_returns_the_completed_transcript(fake: FakeRealtime,
                                                       http: aiohttp.ClientSession) -> None:
    """The transcript of the committed buffer is the result, named after the engine."""
    fake.transcripts.append(TranscriptReply(" Billing, please. "))
    utt = await recognizer(fake, http).start(None)
    feed(utt, tone(0.6))
    result = await utt.finish()
    await utt.cancel()
    assert result.text == "Billing, please."
    assert result.engine == "realtime:gpt-4o-transcribe"
    assert result.audio_seconds == pytest.approx(0.6)
    assert [e["type"] for e in fake.received][-1] == "input_audio_buffer.commit"


async def test_session_is_a_transcription_session_with_the_grammar_in_the_prompt(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """GA: `?intent=transcription` (no model in the URL), `session.update` of type
    transcription, 24 kHz PCM in, no turn detection, the expected phrases as the prompt."""
    utt = await recognizer(fake, http).start(Grammar(["billing", "technical support"]))
    feed(utt, tone(0.3))
    await utt.finish()
    await utt.cancel()
    assert fake.query[0] == {"intent": "transcription"}
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert fake.session_updates == [{"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "gpt-4o-transcribe",
                          "prompt": "billing, technical support.", "language": "en"},
        "turn_detection": None,
    }}}]


async def test_beta_server_gets_a_transcription_session_update(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """A beta server (`transcription_session.created`) is answered in its dialect."""
    fake.beta = True
    fake.transcripts.append(TranscriptReply("yes"))
    utt = await recognizer(fake, http).start(Grammar(["yes", "no"]))
    feed(utt, tone(0.3))
    assert (await utt.finish()).text == "yes"
    await utt.cancel()
    update = next(e for e in fake.received if e["type"].endswith(".update"))
    assert update == {"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16",
        "input_audio_transcription": {"model": "gpt-4o-transcribe", "prompt": "yes, no.",
                                      "language": "en"},
        "turn_detection": None,
    }}


async def test_audio_arrives_at_24_khz_with_the_length_fed(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """0.5 s fed at 16 kHz arrives as 0.5 s at 24 kHz (12,000 samples), the tone still
    at 1 kHz: resampled, not reinterpreted."""
    utt = await recognizer(fake, http).start(None)
    feed(utt, tone(0.5, hz=1000.0))
    await utt.finish()
    await utt.cancel()
    audio = np.frombuffer(fake.committed[0], dtype=np.int16)
    assert len(audio) == 12000
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 24000 / len(audio)
    assert peak_hz == pytest.approx(1000.0, abs=5.0)


async def test_audio_fed_before_the_session_opens_is_sent_once_it_does(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """`feed` never waits: what came while connecting is buffered, then sent, in order,
    before the commit (finish called before the socket opened)."""
    fake.transcripts.append(TranscriptReply("hours"))
    utt = await recognizer(fake, http).start(None)
    pcm = tone(0.4)
    feed(utt, pcm)  # no await since start(): the connect has not even begun
    assert not fake.session_updates
    assert (await utt.finish()).text == "hours"
    await utt.cancel()
    assert len(fake.committed[0]) == len(pcm) * 3 // 2


async def test_partials_grow_with_the_deltas(fake: FakeRealtime,
                                             http: aiohttp.ClientSession) -> None:
    """Each delta extends `partial()`: streamed while the caller speaks, and after the
    commit until the completed transcript replaces them."""
    hold = asyncio.Event()
    fake.transcripts.append(TranscriptReply("I need billing", deltas=[" billing"], hold=hold))
    utt = await recognizer(fake, http).start(None)
    assert isinstance(utt, PartialResults)
    assert utt.partial() is None
    feed(utt, tone(0.3))
    await fake.wait_until(lambda f: len(f.session_updates) == 1)
    await fake.transcript_delta("I")
    await until(lambda: utt.partial() == "I")
    await fake.transcript_delta(" need")
    await until(lambda: utt.partial() == "I need")
    finishing = asyncio.create_task(utt.finish())
    await until(lambda: utt.partial() == "I need billing")
    assert not finishing.done()
    hold.set()
    assert (await finishing).text == "I need billing"
    await utt.cancel()


async def test_usage_is_the_tokens_the_provider_reports(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """A completed event with token usage bills those tokens (audio and text in, text
    out); without usage, the seconds sent."""
    fake.transcripts.append(TranscriptReply("one", usage=TRANSCRIPTION_USAGE))
    fake.transcripts.append(TranscriptReply("two"))
    rec = recognizer(fake, http)
    results: list[Recognition] = []
    for _ in range(2):
        utt = await rec.start(None)
        feed(utt, tone(0.5))
        results.append(await utt.finish())
        await utt.cancel()
    assert results[0].usage == {"audio_in": 18.0, "text_in": 7.0, "text_out": 6.0}
    assert results[1].usage == {"audio_s": pytest.approx(0.5)}


async def test_a_blip_under_100_ms_is_no_answer_and_no_commit(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """The API refuses to commit under 100 ms; such an utterance ends empty, unsent."""
    utt = await recognizer(fake, http).start(None)
    feed(utt, tone(0.06))
    result = await utt.finish()
    assert result.text == "" and result.engine == "realtime:gpt-4o-transcribe"
    assert not any(e["type"] == "input_audio_buffer.commit" for e in fake.received)


async def test_refused_connection_raises_provider_error(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """A refused upgrade (401) surfaces from `finish`, not `start`, as an HTTP error with
    the key nowhere in it."""
    fake.fail_connect = True
    utt = await recognizer(fake, http).start(None)
    feed(utt, tone(0.3))
    with pytest.raises(ProviderHTTPError) as info:
        await utt.finish()
    assert info.value.status == 401 and KEY not in str(info.value)


async def test_unreachable_endpoint_raises_and_opens_the_breaker(
        http: aiohttp.ClientSession) -> None:
    """Nothing listening: `ProviderUnavailable`; after `breaker_threshold` of those the
    breaker refuses at once, without a connect."""
    config = ProviderConfig(role="stt", base_url="http://127.0.0.1:1/v1", api_key=KEY,
                            model="gpt-4o-transcribe", breaker_threshold=2)
    client = ProviderClient(config, http)
    rec = RealtimeRecognizer(client, http, "ws://127.0.0.1:1/v1/realtime")
    for _ in range(3):
        utt = await rec.start(None)
        feed(utt, tone(0.2))
        with pytest.raises(ProviderUnavailable):
            await utt.finish()
    assert client.breaker.state == "open"
    assert client.stats["requests"] == 2 and client.stats["rejected"] == 1


async def test_socket_dropped_before_the_transcript_raises(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """The socket ends after the commit, with no transcript: `ProviderUnavailable`."""
    hold = asyncio.Event()
    fake.transcripts.append(TranscriptReply("never", hold=hold))
    utt = await recognizer(fake, http).start(None)
    feed(utt, tone(0.3))
    finishing = asyncio.create_task(utt.finish())
    await fake.wait_until(lambda f: len(f.committed) == 1)
    fake.drop()
    with pytest.raises(ProviderUnavailable, match="before the transcript"):
        await finishing
    hold.set()


async def test_failed_transcription_and_error_events_raise(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """`...transcription.failed`, or an `error` event, ends the wait with a
    `ProviderBadResponse`."""
    fake.transcripts.append(TranscriptReply(fail="audio_unintelligible"))
    rec = recognizer(fake, http)
    utt = await rec.start(None)
    feed(utt, tone(0.3))
    with pytest.raises(ProviderBadResponse, match="audio_unintelligible"):
        await utt.finish()
    utt = await rec.start(None)
    feed(utt, tone(0.3))
    await fake.wait_until(lambda f: len(f.session_updates) == 2)
    await fake.send_error("rate_limit_exceeded", "Too many requests")
    with pytest.raises(ProviderBadResponse, match="rate_limit_exceeded"):
        await utt.finish()


async def test_no_transcript_in_time_raises_timeout_and_closes(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """A transcript that does not come within `result_timeout_s`: `ProviderTimeout`, and
    the session is closed."""
    hold = asyncio.Event()
    fake.transcripts.append(TranscriptReply("late", hold=hold))
    utt = await recognizer(fake, http, result_timeout_s=0.05).start(None)
    feed(utt, tone(0.3))
    with pytest.raises(ProviderTimeout):
        await utt.finish()
    await fake.wait_until(lambda f: not f.connected)
    hold.set()


async def test_cancel_closes_the_session(fake: FakeRealtime,
                                         http: aiohttp.ClientSession) -> None:
    """A cancelled utterance closes its socket, never commits, and cannot be finished."""
    utt = await recognizer(fake, http).start(None)
    feed(utt, tone(0.3))
    await fake.wait_until(lambda f: len(f.session_updates) == 1)
    await utt.cancel()
    await fake.wait_until(lambda f: not f.connected)
    assert not fake.committed
    with pytest.raises(Exception, match="already finished or cancelled"):
        await utt.finish()


async def test_fallback_serves_the_utterance_when_the_connect_is_refused(
        fake: FakeRealtime, http: aiohttp.ClientSession) -> None:
    """Behind `FallbackRecognizer`, a refused session means the embedded engine answers,
    from the same audio."""

    class Embedded:
        name = "embedded"
        heard = b""

        async def start(self, grammar: Grammar | None) -> Embedded:
            return self

        def feed(self, pcm16_16k: bytes) -> None:
            Embedded.heard += pcm16_16k

        async def finish(self) -> Recognition:
            return Recognition("billing", engine=self.name)

        async def cancel(self) -> None:
            pass

    fake.fail_connect = True
    embedded: Recognizer = Embedded()
    pair = FallbackRecognizer(recognizer(fake, http), embedded)
    utt = await pair.start(None)
    pcm = tone(0.3)
    utt.feed(pcm)
    result = await utt.finish()
    await utt.cancel()
    assert result.text == "billing" and result.extra["fallback_from"].startswith("realtime:")
    assert Embedded.heard == pcm
    assert pair.stats["fallbacks"] == 1
