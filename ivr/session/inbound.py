"""A call's inbound side: media frames, endpointing, keys, barge-in.

Called by the WebSocket handler once per frame, synchronously: it never awaits (reading
slowly makes Twilio drop inbound audio). Speech is streamed to recognition while the
caller talks; what the endpointer and the key collector decide (speech ended, no input,
keys complete) goes on `inputs`, for `answers.Answers` to take.

Barge-in: speech (or a key) during a prompt that allows it interrupts the speaker within
one frame of the speech-start decision. Word-gated (`IVR_BARGE_IN=words`, a flow's
`engines.barge_in`), speech interrupts only once it is believably a word
(`_believable`): a cough or line noise over the prompt is recognized on the side and,
when it ends with no word, dropped while the prompt plays on. A key still interrupts at
once.

Every utterance started here is finished or cancelled: the one whose speech ended is
claimed by `answers.Answers` (which releases it when recognition is over, whatever the
outcome); any other is cancelled when new speech starts, when keys win, when the turn ends
and when the call ends. An utterance left open would hold a recognizer worker that every
other call needs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.audio.codec import Upsampler, ulaw_to_pcm16
from ivr.audio.endpoint import (
    DigitsComplete,
    DtmfCollector,
    EndpointConfig,
    Endpointer,
    NoSpeech,
    SpeechEnded,
    SpeechStarted,
)
from ivr.audio.voicing import VoicingMeter
from ivr.flows import engine
from ivr.grammar import Grammar
from ivr.session.speaker import Speaker
from ivr.speech.base import Recognizer, Utterance, partial_text
from ivr.telephony.inbound import Dtmf, Mark, Media


@dataclass(frozen=True, slots=True)
class KeysDone:
    result: DigitsComplete


@dataclass(frozen=True, slots=True)
class SpeechDone:
    event: SpeechEnded


@dataclass(frozen=True, slots=True)
class NothingHeard:
    event: NoSpeech


Input = KeysDone | SpeechDone | NothingHeard


def endpoint_config(listen: engine.Listen, complete_ms: int = 0) -> EndpointConfig:
    """The endpointer's timings for `listen`; `complete_ms` (0: off) ends a turn whose
    answer is complete for its grammar sooner (`IVR_ENDPOINT_COMPLETE_MS`)."""
    base = EndpointConfig()
    return EndpointConfig(
        end_silence_ms=listen.end_silence_ms or base.end_silence_ms,
        no_input_ms=listen.timeout_ms or base.no_input_ms,
        max_utterance_ms=listen.max_utterance_ms or base.max_utterance_ms,
        complete_silence_ms=complete_ms or None,
    )


class Inbound:
    def __init__(
        self, recognizer: Recognizer, speaker: Speaker, stats: Counter[str],
        log: structlog.typing.FilteringBoundLogger, *, complete_ms: int = 0,
    ) -> None:
        self.recognizer = recognizer
        self.complete_ms = complete_ms  # see endpoint_config
        self.speaker = speaker
        self.stats = stats
        self.log = log
        self.endpointer = Endpointer()
        self.dtmf = DtmfCollector()
        self.upsampler = Upsampler()
        self.caller_ms = 0  # the caller's clock: last media.timestamp, never backwards
        self.inputs: asyncio.Queue[Input] = asyncio.Queue()
        self.listen: engine.Listen | None = None  # the answer being (or about to be) taken
        self.barged = False  # the caller barged in on the prompts of this answer
        # The utterance's 16 kHz audio, kept when the question asks (`Listen.keep_audio`).
        self.captured: bytearray | None = None
        # A Realtime `llm` step: every frame's µ-law goes to `tap`, and the endpointer,
        # watching while the model speaks, calls `on_voice` when the caller starts talking.
        self.tap: Callable[[bytes], None] | None = None
        self.on_voice: Callable[[], None] | None = None
        self.speech_started: SpeechStarted | None = None
        self.speech_started_at = 0.0
        self._utt: Utterance | None = None  # the utterance being fed
        self._utt_task: asyncio.Task[Utterance] | None = None  # its start, until claimed
        self._utt_backlog: list[bytes] = []
        # The grammar the speech being fed is recognized with, and the last partial
        # hypothesis judged against it (grammar-aware endpointing).
        self._grammar: Grammar | None = None
        self._partial: str | None = None
        self._complete = False
        # Every utterance started and not yet finished or cancelled, by its start task.
        self._open: set[asyncio.Task[Utterance]] = set()
        self._cancelling: set[asyncio.Task[None]] = set()
        # Word-gated barge-in: the prompt playing wants words (set per prompt), the watch
        # it runs, the speech over it not yet believed to be a word (`_gated`), and the
        # pitch that speech has carried.
        self._words_gate = False
        self._watch: EndpointConfig | None = None
        self._gated = False
        self._voicing = VoicingMeter()

    # ------------------------------------------------------------ frames

    def on_media(self, msg: Media) -> None:
        self.on_audio(msg.payload, msg.timestamp)

    def on_audio(self, payload: bytes, timestamp: int) -> None:
        """A media frame's decoded µ-law and `media.timestamp` (the socket's fast lane
        calls this directly, with no `Media` built)."""
        self.stats["frames_in"] += 1
        if self.tap is not None:
            self.tap(payload)  # a Realtime session hears the caller's µ-law as it came
        pcm = ulaw_to_pcm16(payload)
        endpointer = self.endpointer
        if self._grammar is not None and self._utt is not None and endpointer.in_speech:
            self._judge_partial(self._utt, self._grammar)
        event = endpointer.process(pcm, timestamp)
        # The endpointer's clock, not the raw timestamp: a frozen one must not stop the
        # key timers (or leave them behind the endpointer's).
        self.caller_ms = endpointer.now_ms
        if endpointer.in_speech and not isinstance(event, SpeechStarted):
            self._feed(self.upsampler.process(pcm))
            if self._words_gate:
                self._voicing.feed(pcm)
            if self._gated:
                self._judge_gate()
        if event is not None:
            if isinstance(event, SpeechStarted):
                self._on_speech_started(event)
            elif isinstance(event, SpeechEnded) and self._gated and self.speaker.playing \
                    and self._voicing.pitched_ms < WORD_PITCHED_MS:
                self._drop_gated(event)
            elif isinstance(event, SpeechEnded):
                if self._gated and self.speaker.playing:
                    # Voiced enough for a word, but the recognizer's partials lagged (a
                    # short word decoded late): the prompt is cut now and the speech is
                    # the answer; the final result decides what it was.
                    self._barge_in("words_at_end")
                self._gated = False
                if self.endpointer.answer_complete:
                    self.stats["turns_ended_complete"] += 1
                self.log.debug("speech_ended", at_ms=event.at_ms, last_voice_ms=event.last_voice_ms,
                               complete=self.endpointer.answer_complete, partial=self._partial)
                self._feed(self.upsampler.flush())
                self.inputs.put_nowait(SpeechDone(event))
            else:
                self.inputs.put_nowait(NothingHeard(event))
        if self.dtmf.active:
            done = self.dtmf.poll(self.caller_ms)
            if done is not None:
                self.inputs.put_nowait(KeysDone(done))

    def _judge_partial(self, utt: Utterance, grammar: Grammar) -> None:
        """Tell the endpointer whether what the recognizer heard so far is a whole answer:
        then a short silence ends the turn, otherwise the full end-of-speech time."""
        text = partial_text(utt)
        if text != self._partial:
            self._partial = text
            self._complete = text is not None and grammar.complete(text)
            # What the caller said is personal data: at debug level only.
            self.log.debug("partial", text=text, complete=self._complete,
                           caller_ms=self.endpointer.now_ms)
        self.endpointer.answer_complete = self._complete

    def on_dtmf(self, msg: Dtmf) -> None:
        self.stats["dtmf"] += 1
        if self.listen is None or self.listen.dtmf is None:
            self.log.debug("dtmf_ignored", digit=msg.digit)
            return
        if not self.dtmf.active:
            spec = self.listen.dtmf
            self.dtmf.start(spec.max_digits, terminator=spec.terminator,
                            inter_digit_ms=spec.inter_digit_ms)
        if self.speaker.playing and self.speaker.interruptible:
            self._barge_in("dtmf")
        self._gated = False
        # Keys win over speech: a caller who presses keys is not answering by voice.
        self.endpointer.disarm()
        done = self.dtmf.press(msg.digit, self.caller_ms)
        if done is not None:
            self.inputs.put_nowait(KeysDone(done))

    def on_mark(self, msg: Mark) -> None:
        self.speaker.on_mark(msg.name)

    def _on_speech_started(self, event: SpeechStarted) -> None:
        self.speech_started = event
        self.speech_started_at = time.monotonic()
        if self.on_voice is not None:  # a Realtime step listens for itself
            self.endpointer.disarm()
            self.on_voice()
            return
        if self._words_gate:
            self._voicing.reset()
            self._voicing.feed(event.preroll)
        listen = self.listen
        if listen is None or not listen.speech:
            self.endpointer.disarm()
            return
        if self.speaker.playing:
            if not self.speaker.interruptible:
                # Speech over a prompt that may not be interrupted is not an answer.
                self.endpointer.disarm()
                return
            if self._words_gate:
                self._gated = True  # interrupts once it is a word (`_judge_gate`)
            else:
                self._barge_in("speech")
        self._abandon_current()  # speech that never ended answers nothing now
        self.upsampler.reset()
        self._utt_backlog = [self.upsampler.process(event.preroll)]
        self.captured = bytearray(self._utt_backlog[0]) if listen.keep_audio else None
        grammar = listen.grammar or (Grammar(listen.phrases) if listen.phrases else None)
        if grammar is not None and not grammar.phrases and grammar.jsgf is None:
            grammar = None  # free text: the language model
        self._grammar = grammar if self.complete_ms else None
        self._partial, self._complete = None, False
        self._utt_task = asyncio.create_task(self.recognizer.start(grammar))
        self._open.add(self._utt_task)
        self._utt_task.add_done_callback(self._utt_ready)

    def _judge_gate(self) -> None:
        """Gated speech over a prompt: interrupt it once the speech is believably a word.
        A prompt that ended meanwhile needs no interrupting: the speech is its answer."""
        if not self.speaker.playing:
            self._gated = False
            return
        utt = self._utt
        if _believable(partial_text(utt) if utt is not None else None,
                       self._voicing.pitched_ms):
            self._gated = False
            self._barge_in("words")

    def _drop_gated(self, event: SpeechEnded) -> None:
        """Gated speech ended with no pitch to speak of while the prompt plays: the prompt
        was never interrupted, nothing is answered, and the watch goes on."""
        self._gated = False
        self.stats["barge_ins_rejected"] += 1
        self.log.info("barge_in_rejected", at_ms=event.at_ms,
                      pitched_ms=self._voicing.pitched_ms)
        self._abandon_current()
        if self._watch is not None:
            self.endpointer.watch_barge_in(self._watch, self.caller_ms)

    def _barge_in(self, by: str) -> None:
        if self.barged:
            return
        self.barged = True
        self.stats["barge_ins"] += 1
        self.speaker.interrupt()
        self.log.info("barge_in", by=by, caller_ms=self.caller_ms)

    # ------------------------------------------------------ listening

    def watch_barge_in(self, listen: engine.Listen, *, words: bool = False) -> None:
        """A prompt that may be interrupted starts: listen for speech over it; with
        `words`, only speech that is believably a word interrupts it."""
        self._words_gate = words
        self._watch = endpoint_config(listen, self.complete_ms)
        if words and self.endpointer.in_speech and not self.barged:
            self._gated = True  # speech under way goes on, gated, over this prompt
            return
        self.endpointer.watch_barge_in(self._watch, self.caller_ms)

    def arm(self, listen: engine.Listen) -> EndpointConfig:
        """Start taking `listen`'s answer (speech already under way is kept)."""
        config = endpoint_config(listen, self.complete_ms)
        if listen.speech and not self.endpointer.in_speech and not self.dtmf.digits:
            self.endpointer.arm(config, self.caller_ms)
        if listen.dtmf is not None and not self.dtmf.active:
            self.dtmf.start(listen.dtmf.max_digits, terminator=listen.dtmf.terminator,
                            inter_digit_ms=listen.dtmf.inter_digit_ms)
        return config

    def disarm(self) -> None:
        """The answer is taken (or given up on): what comes in now answers nothing."""
        self.endpointer.disarm()
        self.dtmf.cancel()
        self.barged = False
        self._gated = False
        self.listen = None
        self._abandon_current()
        while not self.inputs.empty():  # leftovers (keys and speech both ended) are stale
            self.inputs.get_nowait()

    # ------------------------------------------------------ the utterance

    def _utt_ready(self, task: asyncio.Task[Utterance]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._open.discard(task)
            return
        if task not in self._open:  # released before the recognizer had started it
            self._cancel_soon(task.result())
            return
        if task is not self._utt_task and self._utt is not None:
            return  # claimed after newer speech began feeding: nothing more to feed it
        self._utt = task.result()
        for chunk in self._utt_backlog:
            self._utt.feed(chunk)
        self._utt_backlog = []

    def _feed(self, pcm16k: bytes) -> None:
        if not pcm16k:
            return
        if self.captured is not None:
            self.captured += pcm16k
        if self._utt is not None:
            self._utt.feed(pcm16k)
        else:
            self._utt_backlog.append(pcm16k)

    def claim_utterance(self) -> asyncio.Task[Utterance] | None:
        """The utterance of the speech that just ended, for recognition to finish; the
        claimer must `release` it."""
        task, self._utt_task = self._utt_task, None
        return task

    def release(self, task: asyncio.Task[Utterance]) -> None:
        """Recognition of `task`'s utterance is over (a result, a failure, a time-out or a
        cancel): cancel it unless it settled, so it never holds a worker."""
        if task not in self._open:
            return
        self._open.discard(task)
        if not task.done():
            return  # `_utt_ready` cancels it once the recognizer has started it
        if task.cancelled() or task.exception() is not None:
            return
        utt = task.result()
        if utt is self._utt:
            self._utt = None
        self._cancel_soon(utt)  # a no-op for one that settled

    def _abandon_current(self) -> None:
        """The speech being listened to will never be recognized: cancel its utterance."""
        task, self._utt_task = self._utt_task, None
        self._utt_backlog = []
        if task is not None:
            self.stats["utterances_abandoned"] += 1
            self.release(task)
        self._utt = None

    def _cancel_soon(self, utt: Utterance) -> None:
        # Called per frame: never await here; the cancel runs as a task `close()` awaits.
        cancelling = asyncio.create_task(self._cancel(utt))
        self._cancelling.add(cancelling)
        cancelling.add_done_callback(self._cancelling.discard)

    async def _cancel(self, utt: Utterance) -> None:
        try:
            await asyncio.wait_for(utt.cancel(), 2)
        except (TimeoutError, Exception) as exc:  # the engine's problem; its reaper frees it
            self.log.warning("utterance_cancel_failed", error=repr(exc))

    async def drop_utterance(self) -> None:
        """Keys won over speech: the recognizer may stop."""
        self._abandon_current()

    def running(self) -> list[asyncio.Task[Any]]:
        task = self._utt_task
        return [task] if task is not None and not task.done() else []

    async def close(self) -> None:
        """The call ended: cancel every utterance still open and wait (bounded) for it."""
        self._abandon_current()
        for task in list(self._open):
            self.release(task)
        if self._cancelling:
            await asyncio.wait(set(self._cancelling), timeout=3)


# Fillers pocketsphinx may put in a hypothesis: none of them is a word the caller said.
_NOT_WORDS = frozenset({"<s>", "</s>", "<sil>", "[noise]", "[speech]", "(null)"})
# Pitched audio (`ivr.audio.voicing`) that makes speech over a prompt believable as a word.
# Measured: every word had 160 ms or more of it; coughs, breaths and clicks none. With a
# word in the partial hypothesis, 100 ms (reached 100-260 ms into a word). Without one,
# 150 ms, a vowel's worth: pocketsphinx reports a word only once it has ended, so a long
# word ("appointment") showed in a partial 560-780 ms after its onset, while 150 ms of
# pitch came 160-320 ms in for every word of `ivr bench latency` in four voices.
WORD_PITCHED_MS = 100
VOWEL_PITCHED_MS = 150


def _believable(partial: str | None, pitched_ms: int) -> bool:
    """Is speech over a prompt a word? Its pitch says so: a vowel's worth alone, or less
    with a word the recognizer heard. The word alone proves nothing: a grammar search
    reports *some* phrase of its grammar even for a cough. An engine with no partial
    hypotheses (a remote recognizer) has only the pitch to go by."""
    if pitched_ms >= VOWEL_PITCHED_MS:
        return True
    if pitched_ms < WORD_PITCHED_MS:
        return False
    words = [w for w in (partial or "").lower().split() if w not in _NOT_WORDS]
    return any(not (w.startswith("+") or w.startswith("[")) for w in words)
