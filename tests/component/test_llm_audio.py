"""Speech-to-speech through chat completions, against the fake OpenAI server: the request
asks for text and audio, the caller's audio goes as a wav `input_audio` part, spoken
replies stream as whole PCM16 samples before the reply is finished, tools run in the same
loop, earlier replies are named by audio id (then by transcript), audio tokens are billed."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from pathlib import Path
from typing import Any

import pytest

from ivr.errors import InvalidValue
from ivr.llm import (
    Agent,
    AgentEvent,
    AgentStep,
    AudioDelta,
    AudioDone,
    AudioOut,
    AudioTranscriptDelta,
    ChatClient,
    ChatDelta,
    Done,
    ModelAudio,
    ModelListens,
    ModelSaid,
    ModelSays,
    ToolRan,
    UsageEvent,
)
from ivr.tools import ToolContext, ToolRegistry
from tests.component.test_llm import CALLER
from tests.component.test_tools import NOW, THURSDAY
from tests.fake_openai import (
    ChatReply,
    FakeOpenAI,
    Fault,
    ToolCall,
    tone_pcm,
)

VOICE = AudioOut("alloy")
REPLY_PCM = tone_pcm(0.5)  # 24 kHz, 24,000 bytes
CALLER_PCM = tone_pcm(0.25, rate=16000, freq=300.0)


@pytest.fixture
def llm_model() -> str:
    return "gpt-4o-audio-preview"


class Laps:
    """A stopwatch that notes each lap's first token and end once, in order (as the
    session's `SpanTimer` keeps only the first of each)."""

    def __init__(self) -> None:
        self.marks: list[str] = []

    def __call__(self, stage: str) -> Laps:
        self.stage = stage
        return self

    def _mark(self, what: str) -> None:
        if f"{self.stage}:{what}" not in self.marks:
            self.marks.append(f"{self.stage}:{what}")

    def first(self) -> None:
        self._mark("first")

    def done(self, provider: str) -> None:
        self._mark("done")


def make_agent(
    chat: ChatClient, registry: ToolRegistry, *, clock: float = 0.0, laps: Laps | None = None,
) -> Agent:
    step = AgentStep(system_prompt="You book cleanings. Slots: name.",
                     tools=("bookings.check_availability", "bookings.book"), audio=VOICE)
    return Agent(chat, registry,
                 lambda: ToolContext(call_sid="CA" + "4" * 32, caller=CALLER,
                                     db_path=Path(str(registry.db_path)), now=NOW),
                 step, slots={"name": ""}, stopwatch=laps, clock=lambda: clock)


def spoken(reply_pcm: bytes = REPLY_PCM, **kw: Any) -> ChatReply:
    return ChatReply(audio=reply_pcm, **kw)


async def collect(agent: Agent, text: str | None = None, **kw: Any) -> list[AgentEvent]:
    return [e async for e in agent.turn(text, **kw)]


async def deltas(chat: ChatClient) -> list[ChatDelta]:
    messages = [{"role": "user", "content": "hi"}]
    return [d async for d in chat.stream(messages, audio=VOICE)]


def pcm_of(events: list[Any]) -> bytes:
    return b"".join(e.pcm for e in events if isinstance(e, ModelAudio | AudioDelta))


# ------------------------------------------------------------------------------ client


@pytest.mark.parametrize("chunk", [4801, 333, 1])
async def test_audio_deltas_are_whole_samples_that_reassemble_byte_exact(
    fake: FakeOpenAI, chat: ChatClient, chunk: int
) -> None:
    fake.chat_replies.append(spoken(audio_chunk=chunk, audio_transcript="Hello there.",
                                    audio_id="audio_abc", audio_expires_at=1_900_000_000))
    out = await deltas(chat)
    audio = [d for d in out if isinstance(d, AudioDelta)]
    assert len(audio) > 1
    assert all(len(d.pcm) % 2 == 0 and d.rate == 24000 for d in audio)
    assert pcm_of(audio) == REPLY_PCM
    assert "".join(d.text for d in out if isinstance(d, AudioTranscriptDelta)) == "Hello there."
    assert out[-1] == AudioDone("audio_abc", "Hello there.", 1_900_000_000, skipped=0)


async def test_request_asks_for_text_and_audio_in_pcm16(
    fake: FakeOpenAI, chat: ChatClient
) -> None:
    fake.chat_replies.append(spoken())
    await deltas(chat)
    body = fake.bodies["chat"][0]
    assert body["modalities"] == ["text", "audio"]
    assert body["audio"] == {"voice": "alloy", "format": "pcm16"}
    assert body["stream"] is True


async def test_text_requests_do_not_ask_for_audio(fake: FakeOpenAI, chat: ChatClient) -> None:
    fake.chat_replies.append(spoken(content="Hi."))  # audio is served only when asked for
    out = [d async for d in chat.stream([{"role": "user", "content": "hi"}])]
    assert not any(isinstance(d, AudioDelta | AudioDone) for d in out)
    assert "modalities" not in fake.bodies["chat"][0] and "audio" not in fake.bodies["chat"][0]


async def test_malformed_base64_piece_is_skipped_and_counted(
    fake: FakeOpenAI, chat: ChatClient
) -> None:
    fake.chat_replies.append(spoken(audio_chunk=4800, audio_bad_chunks=(1,)))
    out = await deltas(chat)
    assert pcm_of(out) == REPLY_PCM[:4800] + REPLY_PCM[9600:]
    done = [d for d in out if isinstance(d, AudioDone)]
    assert [d.skipped for d in done] == [1]


def test_only_pcm16_output_can_be_asked_for() -> None:
    with pytest.raises(InvalidValue, match="pcm16"):
        AudioOut("alloy", "mp3")


# ------------------------------------------------------------------------------- agent


async def test_caller_audio_goes_as_wav_and_the_local_transcript_stays_home(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.chat_replies.append(spoken(audio_transcript="Sure."))
    await collect(make_agent(chat, registry), "a local guess", user_audio=CALLER_PCM)
    body = fake.bodies["chat"][0]
    user = body["messages"][-1]
    assert user["role"] == "user"
    [part] = user["content"]
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    with wave.open(io.BytesIO(base64.b64decode(part["input_audio"]["data"]))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.readframes(w.getnframes()) == CALLER_PCM
    assert "a local guess" not in json.dumps(body)


async def test_first_audio_is_yielded_before_the_reply_is_finished(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    hold = asyncio.Event()
    fake.chat_replies.append(spoken(audio_chunk=4800, audio_hold=hold, audio_hold_after=1,
                                    audio_transcript="One moment please."))
    laps = Laps()
    turn = make_agent(chat, registry, laps=laps).turn("hi")
    # A bound, not a delay: an agent that waited for the whole reply would hang here.
    first = await asyncio.wait_for(anext(turn), 10)
    assert first == ModelAudio(REPLY_PCM[:4800], 24000)
    assert fake.chat_stream_done == []  # the server is holding the rest of the reply
    assert laps.marks == ["llm:first"]  # first token timed; the round not yet over
    hold.set()
    rest = [e async for e in turn]
    assert pcm_of([first, *rest]) == REPLY_PCM
    assert ModelSaid("One moment please.") in rest
    assert not any(isinstance(e, ModelSays) for e in rest)
    assert laps.marks == ["llm:first", "llm:done"]
    assert rest[-1] == ModelListens()


async def test_tool_round_in_audio_mode_then_the_spoken_answer(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    day = THURSDAY.isoformat()
    fake.chat_replies.extend([
        spoken(tone_pcm(0.2), audio_id="audio_1", audio_transcript="Let me check.",
               tool_calls=[ToolCall("bookings__check_availability",
                                    json.dumps({"day": day, "service": "cleaning"}))]),
        spoken(tone_pcm(0.3), audio_id="audio_2", audio_transcript="Thursday at 9 is free."),
    ])
    agent = make_agent(chat, registry)
    events = await collect(agent, user_audio=CALLER_PCM)

    kinds = [type(e).__name__ for e in events if not isinstance(e, ModelAudio | UsageEvent)]
    assert kinds == ["ModelSaid", "ToolRan", "ModelSaid", "ModelListens"]
    said = [e.transcript for e in events if isinstance(e, ModelSaid)]
    assert said == ["Let me check.", "Thursday at 9 is free."]
    [ran] = [e for e in events if isinstance(e, ToolRan)]
    assert ran.name == "bookings.check_availability" and ran.ok
    assert "09:00" in ran.value["available"]
    assert pcm_of(events) == tone_pcm(0.2) + tone_pcm(0.3)

    # The spoken round with its tool call, by audio id, and the tool's result by call id.
    second = fake.bodies["chat"][1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    assert second[2]["audio"] == {"id": "audio_1"} and "content" not in second[2]
    assert second[3]["tool_call_id"] == second[2]["tool_calls"][0]["id"]


async def test_a_refused_tool_call_in_audio_mode_is_not_run(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.chat_replies.extend([
        spoken(tool_calls=[ToolCall("bookings__cancel", '{"ref": "BK-SEED3"}')]),
        spoken(audio_transcript="Sorry, I cannot cancel."),
    ])
    events = await collect(make_agent(chat, registry), "cancel it")
    [ran] = [e for e in events if isinstance(e, ToolRan)]
    assert not ran.ok and ran.error is not None and "not available" in ran.error
    assert events[-1] == ModelListens()


async def test_next_turn_names_the_earlier_reply_by_its_audio_id(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.chat_replies.extend([
        spoken(audio_id="audio_A", audio_transcript="Hello, how can I help?",
               audio_expires_at=10_000),
        spoken(audio_id="audio_B", audio_transcript="Sure."),
    ])
    agent = make_agent(chat, registry, clock=5_000.0)
    await collect(agent)
    await collect(agent, user_audio=CALLER_PCM)
    history = fake.bodies["chat"][1]["messages"]
    assert history[1] == {"role": "assistant", "audio": {"id": "audio_A"}}


async def test_an_expired_audio_id_is_replaced_by_its_transcript(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.chat_replies.extend([
        spoken(audio_id="audio_A", audio_transcript="Hello, how can I help?",
               audio_expires_at=10_000),
        spoken(audio_id="audio_B", audio_transcript="Sure."),
    ])
    agent = make_agent(chat, registry, clock=10_000.0 - 30)  # inside the safety margin
    await collect(agent)
    await collect(agent, user_audio=CALLER_PCM)
    history = fake.bodies["chat"][1]["messages"]
    assert history[1] == {"role": "assistant", "content": "Hello, how can I help?"}


async def test_usage_units_bill_audio_tokens_apart(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.chat_replies.append(spoken(prompt_tokens=130, audio_tokens_in=100, cached_tokens=10,
                                    completion_tokens=80, audio_tokens_out=60))
    events = await collect(make_agent(chat, registry), user_audio=CALLER_PCM)
    [usage] = [e for e in events if isinstance(e, UsageEvent)]
    assert (usage.prompt, usage.completion, usage.cached) == (130, 80, 10)
    assert usage.units == {"text_in": 20, "cached_in": 10, "audio_in": 100,
                           "text_out": 20, "audio_out": 60}


async def test_text_only_reply_in_audio_mode_is_spoken_as_sentences(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.chat_replies.append(ChatReply(content="Hello there. Bye now."))
    agent = make_agent(chat, registry)
    events = await collect(agent, "hi")
    assert [e for e in events if isinstance(e, ModelSays | ModelSaid)] == [
        ModelSays("Hello there."), ModelSays("Bye now."), ModelSaid("Hello there. Bye now.")]
    assert agent.messages[-1] == {"role": "assistant", "content": "Hello there. Bye now."}


async def test_text_beside_audio_is_not_spoken_twice(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.chat_replies.append(spoken(content="Written words.", audio_transcript="Spoken words."))
    events = await collect(make_agent(chat, registry), "hi")
    assert not any(isinstance(e, ModelSays) for e in events)
    assert ModelSaid("Spoken words.") in events


async def test_reply_cut_off_mid_audio_keeps_its_transcript_so_far(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    hold = asyncio.Event()
    fake.chat_replies.append(spoken(audio_chunk=4800, audio_hold=hold, audio_hold_after=2,
                                    audio_transcript="One two three four five"))
    agent = make_agent(chat, registry)
    turn = agent.turn("hi")
    assert isinstance(await asyncio.wait_for(anext(turn), 10), ModelAudio)
    await turn.aclose()  # the caller barged in
    last = agent.messages[-1]
    assert last["role"] == "assistant" and "audio" not in last
    assert "One two three four five".startswith(last["content"]) and last["content"]


async def test_provider_failure_in_audio_mode_ends_the_turn_with_an_error(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry
) -> None:
    fake.fail("chat", Fault("status", status=500), Fault("status", status=500))
    events = await collect(make_agent(chat, registry), user_audio=CALLER_PCM)
    assert len(events) == 1 and isinstance(events[0], Done) and events[0].reason == "error"
