"""Taking one answer on a phone line: listen, recognize, time out.

Media drives every timer (the endpointer's no-input and end-of-speech decisions run on
the caller's clock); the wall clock is only a safety net for a stream that stops sending.
Recognition finishes after end of speech: the recognizer has had the audio all along.
However the turn ends (an answer, a time-out, keys, the caller hanging up), the utterance
it started is released: `Inbound.disarm` cancels one that was never claimed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from ivr.config import Settings
from ivr.flows import engine
from ivr.session.inbound import Inbound, KeysDone, NothingHeard
from ivr.session.record import CallRecord
from ivr.session.speaker import Speaker
from ivr.speech.base import Recognition, Utterance
from ivr.store.db import TurnRecord

T = TypeVar("T")
WithFiller = Callable[[Coroutine[Any, Any, T]], Coroutine[Any, Any, T]]


def _margin(rec: Recognition) -> float | None:
    """The lead of `rec` over the next-best hypothesis (0..1), when its engine ranks them
    (`Recognition.margin`; `extra["margin"]` from engines that predate the field); None
    otherwise: the flow then judges by the confidence alone."""
    margin = rec.margin if rec.margin is not None else rec.extra.get("margin")
    return float(margin) if isinstance(margin, int | float) else None


class Answers:
    def __init__(
        self, settings: Settings, inbound: Inbound, speaker: Speaker, record: CallRecord,
        with_filler: WithFiller[Recognition | None], stats: Counter[str],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.settings = settings
        self.inbound = inbound
        self.speaker = speaker
        self.record = record
        self.with_filler = with_filler
        self.stats = stats
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()

    async def take(self, listen: engine.Listen) -> engine.Event:
        """The caller's answer to `listen` (set as `inbound.listen` already)."""
        await self.speaker.wait_heard(self.settings.mark_grace_ms / 1000)
        config = self.inbound.arm(listen)
        budget = (config.no_input_ms + config.max_utterance_ms) / 1000 + 10
        try:
            answer = await asyncio.wait_for(self._answer(), budget)
        except TimeoutError:
            self.stats["answer_timeouts"] += 1
            answer = engine.NoInput()
        finally:
            self.inbound.disarm()
        return answer

    async def _answer(self) -> engine.Event:
        inbound, record = self.inbound, self.record
        step = inbound.listen.step if inbound.listen else None
        turn = record.open_turn(step, self.speaker.take_prompts())
        while True:
            item = await inbound.inputs.get()
            if isinstance(item, KeysDone):
                await inbound.drop_utterance()
                turn.timings["digits_done"] = record.ms()
                return engine.Digits(item.result.digits)
            if isinstance(item, NothingHeard):
                if inbound.dtmf.digits:
                    continue  # keys are being pressed; their own timeout decides
                return engine.NoInput()
            # Speech ended: the recognizer has had the audio all along; ask for the result.
            if inbound.dtmf.digits:
                await inbound.drop_utterance()
                continue
            ev = item.event
            started = inbound.speech_started
            turn.timings.update({
                "caller_speech_start": float(started.at_ms if started else ev.at_ms),
                "caller_speech_end": float(ev.last_voice_ms),
                "caller_endpoint": float(ev.at_ms),  # caller clock, like the two above
                "speech_start": record.at(inbound.speech_started_at),
                "endpoint": record.ms(),
            })
            captured, inbound.captured = inbound.captured, None
            if captured:
                # A model that hears the audio itself is asked at once; the recognizer's
                # words are only for the record, and fill the turn when they come.
                self._words_later(turn)
                return engine.Speech("", 1.0, audio=bytes(captured))
            rec = await self.with_filler(self._recognize())
            turn.timings["recognized"] = record.ms()
            if rec is None:
                return engine.Speech("", 0.0)
            # An engine that gives no score is taken at its word (the certainty
            # thresholds are on the embedded recognizer's scale).
            confidence = 1.0 if rec.confidence is None else rec.confidence
            return engine.Speech(rec.text, confidence, margin=_margin(rec))

    def _words_later(self, turn: TurnRecord) -> None:
        # Claimed now: the answer is returned next and the listen disarmed, which would
        # drop an utterance nobody holds yet.
        claimed = self.inbound.claim_utterance()

        async def words() -> None:
            rec = await self._recognize(claimed)
            turn.timings["recognized"] = self.record.ms()
            if rec is not None:
                turn.input_text = rec.text
                turn.confidence = rec.confidence
            self.record.span_ended(turn)  # written again if it already was

        task = asyncio.create_task(words())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def running(self) -> list[asyncio.Task[None]]:
        """Recognitions still filling in a turn's words (for the end of the call)."""
        return [t for t in self._tasks if not t.done()]

    async def _recognize(
        self, claimed: asyncio.Task[Utterance] | None = None,
    ) -> Recognition | None:
        task = claimed if claimed is not None else self.inbound.claim_utterance()
        if task is None:
            return None
        timeout = self.settings.recognition_timeout_ms / 1000
        timer = self.record.span("stt")
        try:
            utt = await asyncio.wait_for(asyncio.shield(task), timeout)
            rec = await asyncio.wait_for(utt.finish(), timeout)
        except (TimeoutError, Exception) as exc:  # a failed engine is a no-match, not a crash
            self.log.warning("recognition_failed", error=repr(exc))
            self.stats["recognition_errors"] += 1
            timer.span["error"] = type(exc).__name__
            timer.done(getattr(self.record.services.recognizer, "name", ""))
            return None
        finally:
            self.inbound.release(task)  # finished, failed or cancelled: never left open
        timer.done(rec.engine)
        # Billed to the engine that answered: a remote request that failed over to the
        # embedded recognizer served nobody and costs nothing here.
        self.record.usage.add("stt", rec.engine, {
            **(rec.usage or {"audio_s": rec.audio_seconds}), "requests": 1})
        self.stats["recognitions"] += 1
        self.record.stt_audio_s += rec.audio_seconds
        self.record.stt_cpu_s += rec.cpu_seconds
        self.log.debug("recognized", text=rec.text, confidence=rec.confidence,
                       audio_s=rec.audio_seconds, cpu_s=rec.cpu_seconds)
        return rec
