"""Voice-to-voice of the three `llm` modes against the test servers' fixed delays.

    .venv/bin/python -m tests.bench_llm_modes [--calls N] [--concurrency C]   # repo root

A benchmark, not a test: it prints figures and the command that reproduces them, and
asserts nothing about them. It lives under `tests/` (not `ivr bench`) because it runs the
concierge flow against the local test servers (`tests.fake_openai`, `tests.fake_realtime`),
which are not shipped with the package.

Each call is the concierge flow's first caller turn: the greeting, the model's opening
line, the simulated caller saying "book a cleaning" once that has gone quiet, the model's
answer, the caller hanging up. Every call gets a fresh `ivr` server (in this process, the
embedded recognizer in one worker process) and fresh test servers, so no call's state
leaks into another's; `--concurrency` calls of one mode run at once, the modes one after
another. The test servers answer after fixed delays (`DELAYS`), the same model delay in
every mode:

- pipeline: the embedded recognizer (pocketsphinx) → the text model (streamed; its first
  token `MODEL_FIRST_MS` after the request) → espeak-ng, sentence by sentence.
- pipeline-remote: the same with the remote recognizer (`/audio/transcriptions`, its
  answer `STT_MS` after the request) and synthesizer (`/audio/speech`, first byte
  `TTS_FIRST_BYTE_MS` after the request) of the fake provider.
- audio: the caller's utterance to the model as `input_audio`, its PCM16 reply (first
  audio delta `MODEL_FIRST_MS` after the request) played as it streams.
- realtime: the caller's µ-law to the Realtime test server; the provider decides the end
  of the turn (server VAD): this script plays it, sending speech stopped and the turn's
  transcription once `VAD_SILENCE_MS` of silence follow the caller's last voiced frame in
  the appended audio (OpenAI's `server_vad` default `silence_duration_ms`); its reply's
  first audio delta goes out `MODEL_FIRST_MS` after that.

What is measured, per call:

- first audio after end of speech (the same point in every mode): from the moment the
  simulated caller sent its last loud frame to the first frame of the reply it received
  (`ivr.bench.latency.voice_to_voice`), on this process's monotonic clock.
- voice-to-voice in the server's turn record (`timings.response_ms`): from the end-of-turn
  decision to the reply's first frame sent. In pipeline and audio modes the decision is
  our endpointer's (600 ms of silence: an `llm` step has no grammar to end it sooner); in
  realtime mode it is the arrival of the provider's speech stopped, so the provider's VAD
  silence is outside this figure and inside the first one.
- where the time goes (p50): end of speech → end-of-turn decision (the first figure minus
  the second: the end-of-turn silence plus the loopback line), decision → recognized
  (pipeline and audio: the turn's `recognized`; realtime: none, the provider transcribes
  alongside), decision → model's first token or audio (pipeline and audio: the turn's
  `llm` span; realtime: the test server's first audio delta, on this process's clock,
  after it sent speech stopped), then → the reply's first frame (synthesis of the first
  sentence, or decoding and resampling the model's audio; realtime: passed through).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp.test_utils import TestServer

from ivr.bench.latency import percentile, voice_to_voice
from ivr.config import ProviderConfig, Settings
from ivr.logging import configure
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import PutDown, Say
from ivr.sim.transcript import CallTranscript
from ivr.tools.seed import seed
from tests.conftest import fresh_database, make_settings
from tests.fake_openai import ChatReply, FakeOpenAI, Fault, start_fake_openai, tone_pcm
from tests.fake_realtime import FakeRealtime, RealtimeReply, start_fake_realtime

MODEL_FIRST_MS: Final = 300  # every mode: request (or speech stopped) → first token/audio
STT_MS: Final = 200  # pipeline-remote: utterance sent → transcription answered
TTS_FIRST_BYTE_MS: Final = 150  # pipeline-remote: sentence sent → first audio byte
VAD_SILENCE_MS: Final = 500  # realtime: caller's last voiced frame → speech stopped
SAID: Final = "book a cleaning"
CALLER: Final = "+15550100088"
MODES: Final = ("pipeline", "pipeline-remote", "audio", "realtime")
ENGINES: Final = {
    "pipeline": "pocketsphinx → text model → espeak-ng",
    "pipeline-remote": f"remote STT ({STT_MS} ms) → text model → remote TTS "
                       f"({TTS_FIRST_BYTE_MS} ms to first byte)",
    "audio": "GPT-4o audio in and out (/chat/completions)",
    "realtime": "Realtime WebSocket, µ-law both ways, the provider's VAD",
}
STAGES: Final = ("end of speech -> decision", "decision -> recognized",
                 "decision -> model first token", "first token -> first reply frame")
# µ-law the Realtime test server "speaks": every code, whole 20 ms frames, 0.8 s.
MODEL_ULAW: Final = bytes(range(256)) * 25


@dataclass
class Sample:
    """One call's figures (ms); what a call could not measure is left out."""

    first_audio: float | None = None  # caller: last loud frame → first reply frame
    response: float | None = None  # server: end-of-turn decision → reply's first frame
    stages: dict[str, float] = field(default_factory=dict)
    error: str = ""


# ------------------------------------------------------------------ one call


def _replies(mode: str) -> list[ChatReply]:
    """The model's opening line and its answer to the caller, as the mode asks for."""
    first = MODEL_FIRST_MS / 1000
    if mode == "audio":
        return [ChatReply(audio=tone_pcm(0.8), audio_transcript=text, first_delay_s=first,
                          audio_tokens_out=40)
                for text in ("Hello, how can I help?", "Sure. Which day would you like?")]
    return [ChatReply(content=text, first_delay_s=first)
            for text in ("Hello. How can I help?", "Sure. Which day would you like?")]


def _settings(mode: str, tmp: Path, fake: FakeOpenAI, rt: FakeRealtime) -> Settings:
    audio = mode in ("audio", "realtime")
    llm = ProviderConfig(role="llm", base_url=fake.base_url, api_key="sk-test",
                         model="gpt-4o-audio-preview" if audio else "gpt-4o-mini",
                         timeout_read_s=5.0, max_retries=0)
    extra: dict[str, object] = {}
    if mode == "pipeline-remote":
        fake.transcript = SAID
        fake.speech_pcm = tone_pcm(0.8)
        fake.outage["transcriptions"] = Fault("slow_first_byte", delay=STT_MS / 1000)
        fake.outage["speech"] = Fault("slow_first_byte", delay=TTS_FIRST_BYTE_MS / 1000)
        extra["stt"] = ProviderConfig(role="stt", base_url=fake.base_url, api_key="sk-test",
                                      model="whisper-1", max_retries=0)
        extra["tts"] = ProviderConfig(role="tts", base_url=fake.base_url, api_key="sk-test",
                                      model="tts-1", voice="alloy", max_retries=0)
    if mode == "realtime":
        extra.update(realtime_url=rt.url, realtime_model="gpt-realtime")
    return make_settings(tmp, recognizer_workers=1, llm=llm, db=fresh_database(tmp),
                         llm_mode="pipeline" if mode == "pipeline-remote" else mode,
                         llm_voice="alloy", **extra)


def _voiced(frame: bytes | bytearray) -> bool:
    """A µ-law frame with sound in it (silence is 0xFF/0x7F and their neighbours)."""
    return sum(1 for b in frame if (b & 0x7F) < 0x70) > len(frame) // 4


async def _until(rt: FakeRealtime, check: Callable[[FakeRealtime], bool]) -> None:
    """`rt.wait_until` past its 2 s cap: re-checked on every event the fake receives."""
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(TimeoutError):
                await rt.wait_until(check)
                return


async def _server_vad(rt: FakeRealtime, silence_ms: int) -> float:
    """The provider's VAD for the caller's one turn: once the caller has spoken after the
    model's opening line and `silence_ms` of unvoiced audio has followed, speech stopped
    and the transcript (and so the next reply). Returns when speech stopped was sent."""
    voice_end = 0  # byte offset just past the last voiced frame seen

    def spoke(f: FakeRealtime) -> bool:
        nonlocal voice_end
        whole = len(f.audio) - len(f.audio) % 160
        for i in range(max(voice_end, whole - 8000), whole, 160):
            if _voiced(f.audio[i:i + 160]):
                voice_end = i + 160
        return bool(f.responses_done) and voice_end > 0

    await _until(rt, spoke)
    await _until(rt, lambda f: spoke(f) and len(f.audio) - voice_end >= silence_ms * 8)
    stopped = time.monotonic()
    await rt.caller_spoke(SAID)
    return stopped


def _sample(mode: str, t: CallTranscript, rt: FakeRealtime, stopped: float | None) -> Sample:
    record = t.server or {}
    turn = next((tr for tr in record.get("turns", []) if tr.get("input_kind") == "speech"),
                None)
    heard = [ms for text, ms in voice_to_voice(t) if text == SAID]
    if turn is None or not heard:
        return Sample(error=f"{mode}: no answered turn; {'; '.join(t.errors)}")
    timings: dict[str, float] = turn.get("timings") or {}
    sample = Sample(first_audio=heard[0], response=timings.get("response_ms"))
    if sample.response is not None:
        sample.stages[STAGES[0]] = heard[0] - sample.response
    endpoint, frame = timings.get("endpoint"), timings.get("reply_first_frame")
    if mode == "realtime":
        if stopped is not None and len(rt.first_audio_at) >= 2 and sample.response:
            token = (rt.first_audio_at[1] - stopped) * 1000
            sample.stages[STAGES[2]] = token
            sample.stages[STAGES[3]] = sample.response - token
        return sample
    if endpoint is None or frame is None:
        return sample
    if "recognized" in timings:
        sample.stages[STAGES[1]] = timings["recognized"] - endpoint
    llm = next((s for s in turn.get("spans", []) if s.get("stage") == "llm"
                and "first" in s and s["start"] >= endpoint), None)
    if llm is not None:
        sample.stages[STAGES[2]] = llm["first"] - endpoint
        sample.stages[STAGES[3]] = frame - llm["first"]
    return sample


async def one_call(mode: str, vad_silence_ms: int) -> Sample:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        async with start_fake_openai() as fake, start_fake_realtime() as rt:
            fake.chat_replies.extend(_replies(mode))
            rt.replies.extend(RealtimeReply(audio=MODEL_ULAW, transcript=text,
                                            first_delay_s=MODEL_FIRST_MS / 1000)
                              for text in ("Hello, how can I help?", "Sure. Which day?"))
            settings = _settings(mode, tmp, fake, rt)
            await seed(settings.db)
            server = TestServer(create_app(settings), host="127.0.0.1")
            await server.start_server()
            vad = (asyncio.create_task(_server_vad(rt, vad_silence_ms))
                   if mode == "realtime" else None)
            try:
                t = await run_call(f"http://127.0.0.1:{server.port}", [Say(SAID), PutDown()],
                                   flow="concierge", from_number=CALLER, transcribe=False,
                                   hangup_timeout=20)
            finally:
                if vad is not None and not vad.done():
                    vad.cancel()
                await server.close()
            stopped = (vad.result() if vad is not None and vad.done() and not vad.cancelled()
                       and vad.exception() is None else None)
            return _sample(mode, t, rt, stopped)


# ------------------------------------------------------------------ the report


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}"


def report(results: dict[str, list[Sample]], command: str, concurrency: int,
           vad_silence_ms: int, elapsed: float) -> str:
    lines = [
        f"LLM modes, concierge flow's first caller turn ({SAID!r}); {concurrency} calls at "
        f"a time, each against a fresh server and test servers; {elapsed:.0f} s",
        f"fixed delays: model first token / first audio {MODEL_FIRST_MS} ms (every mode); "
        f"pipeline-remote STT answer {STT_MS} ms, TTS first byte {TTS_FIRST_BYTE_MS} ms; "
        f"realtime server VAD {vad_silence_ms} ms of silence; pipeline and audio: our "
        "endpointer's 600 ms",
        "",
        f"{'mode':16} {'n':>3}  {'first audio after end of speech':>31}  "
        f"{'server response_ms':>18}  engines",
        f"{'':16} {'':>3}  {'p50 / p95 ms':>31}  {'p50 / p95 ms':>18}",
    ]
    for mode, samples in results.items():
        ok = [s for s in samples if s.error == ""]
        lines.append(
            f"{mode:16} {len(ok):>3}  "
            f"{_cell([s.first_audio for s in ok if s.first_audio is not None]):>31}  "
            f"{_cell([s.response for s in ok if s.response is not None]):>18}  "
            f"{ENGINES[mode]}")
    lines += ["", "where the time goes, p50 ms:",
              f"{'mode':16} " + "  ".join(f"{stage:>32}" for stage in STAGES)]
    for mode, samples in results.items():
        cells = []
        for stage in STAGES:
            values = [s.stages[stage] for s in samples if stage in s.stages]
            # round() to an int: a pass-through's -0.3 ms (clocks a send apart) shows as 0
            cells.append(f"{round(percentile(values, 50)):>32d}" if values else f"{'-':>32}")
        lines.append(f"{mode:16} " + "  ".join(cells))
    for samples in results.values():
        lines += [f"  FAILED {s.error}" for s in samples if s.error]
    lines += ["", f"reproduce: {command}"]
    return "\n".join(lines)


async def bench(modes: Sequence[str], calls: int, concurrency: int,
                vad_silence_ms: int) -> dict[str, list[Sample]]:
    gate = asyncio.Semaphore(concurrency)

    async def gated(mode: str) -> Sample:
        async with gate:
            return await one_call(mode, vad_silence_ms)

    results: dict[str, list[Sample]] = {}
    for mode in modes:  # one mode at a time: modes never share the cores
        results[mode] = list(await asyncio.gather(*(gated(mode) for _ in range(calls))))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_llm_modes",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per mode (default 3)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="calls of one mode at a time (default 2)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--vad-silence-ms", type=int, default=VAD_SILENCE_MS,
                        help="the realtime provider's end-of-turn silence "
                             f"(default {VAD_SILENCE_MS}; 600 matches our endpointer)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode {bad[0]!r}: use {', '.join(MODES)}")
    configure("warning", json=False)  # the servers' call logs would bury the table
    started = time.perf_counter()
    results = asyncio.run(bench(modes, args.calls, args.concurrency, args.vad_silence_ms))
    command = (f".venv/bin/python -m tests.bench_llm_modes --calls {args.calls} "
               f"--concurrency {args.concurrency}")
    if modes != list(MODES):
        command += f" --modes {','.join(modes)}"
    if args.vad_silence_ms != VAD_SILENCE_MS:
        command += f" --vad-silence-ms {args.vad_silence_ms}"
    print(report(results, command, args.concurrency, args.vad_silence_ms,
                 time.perf_counter() - started))
    return 0 if all(not s.error for samples in results.values() for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main())
