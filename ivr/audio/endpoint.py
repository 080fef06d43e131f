"""Endpointing (when did the caller start and stop talking) and DTMF digit collection.

Both are plain synchronous state machines driven by the call session; neither reads a
wall clock. Time is the caller's clock: the `timestamp_ms` Twilio puts on every inbound
media frame. Packets get lost, so timers are measured between timestamps, never by
counting frames.

That clock is the caller's to write, so the endpointer never lets it run backwards: a
frame stamped before the end of the previous one (a frozen or backwards timestamp,
which Twilio never sends) is placed right after it (`now_ms`). Every frame then moves
time forward by its own length, timers run out, and no buffer here holds more than its
span of audio (nor, for frames too short to move time, more than the span in 10 ms
frames), whatever the timestamps say.

How the session drives an `Endpointer` for one answer::

    ep.arm(config, now_ms)                 # now_ms: caller clock (last media timestamp)
    for each inbound frame (pcm16 8 kHz, timestamp):
        event = ep.process(pcm, timestamp)
        if isinstance(event, SpeechStarted):
            utterance = await recognizer.start(grammar)
            utterance.feed(upsampler.process(event.preroll))   # includes this frame
        elif ep.in_speech:
            utterance.feed(upsampler.process(pcm))
        elif isinstance(event, SpeechEnded):
            utterance.feed(upsampler.flush())
            result = await utterance.finish()
        elif isinstance(event, NoSpeech):
            ...

That is: after `SpeechStarted` feed its `preroll` (which already contains the frame that
triggered it), then forward every frame for which `in_speech` is still True after
`process()` returned. After `SpeechEnded` or `NoSpeech` the endpointer is idle until armed
again: one arm, one answer.

Barge-in: while a prompt plays, `watch_barge_in(config, now_ms)` runs the same detector
without the no-input timer. It reports `SpeechStarted` (stop the prompt) and then carries
on exactly as if armed, so the caller's interrupting answer is recognised with its
onset; a session that only wanted to stop a prompt calls `disarm()`.

While idle, `process()` only keeps the last few hundred ms of audio for the preroll and
does not run the VAD.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import numpy as np
import webrtcvad

from ivr.errors import InvalidValue

__all__ = [
    "DTMF_DIGITS",
    "MAX_KEYS",
    "DigitsComplete",
    "DtmfCollector",
    "EndpointConfig",
    "EndpointEvent",
    "Endpointer",
    "NoSpeech",
    "SpeechEnded",
    "SpeechStarted",
]

_RATE = 8000
_BYTES_PER_MS = _RATE * 2 // 1000  # PCM16 mono at 8 kHz
_VAD_FRAME_BYTES = (160, 320, 480)  # the 10, 20 and 30 ms frames webrtcvad accepts
_MIN_FRAME_MS = 10  # the shortest frame the VAD judges; what the ring is sized for


def _ring_frames(span_ms: int) -> int:
    """The preroll ring's length in frames: its span in the shortest frames, plus the
    frame that triggers speech and one that straddles the horizon."""
    return span_ms // _MIN_FRAME_MS + 2


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Endpointing timings, all in caller-clock milliseconds.

    Voice is *sustained* when at least `speech_start_ratio` of the last
    `speech_start_ms` is voiced (200 ms at 0.8: 8 of 10 frames, so a frame lost or
    missed does not matter). Sustained voice starts speech, and during speech it is what
    keeps the turn open: it ends after `end_silence_ms` without sustained voice, or
    `max_utterance_ms` after it started.

    Why 200 ms and not less: webrtcvad keeps saying "voiced" after voice stops (its
    hangover: 80 ms after a short burst, 120 ms after sustained speech in modes 2-3,
    160 ms in modes 0-1), so a 20 ms click reads as 100 ms of voice. At 200 ms / 0.8 a
    start needs about 80 ms of actual voice, and clicks up to ~60 ms neither start
    speech nor hold a turn open.

    The hangover would also make a turn end `end_silence_ms` plus ~120 ms (modes 2-3)
    after the caller's last sound, so the silence is timed from the last voiced frame
    that is within `trail_db` of the loudest frame of the utterance: the hangover's
    frames after the voice has stopped are near-silence on a quiet line and do not
    count. On a line whose noise is within `trail_db` of the voice they are as loud as
    the noise, count as before, and the turn ends as late as it did (None: the hangover
    always counts). 40 dB keeps weak endings (a trailing "f", "th" or "s" is 20-30 dB
    below the vowels) and drops only what is all but silent.

    `complete_silence_ms` (None: off) is the shorter silence that ends a turn while the
    session says the answer so far is complete (`Endpointer.answer_complete`: the
    recognizer's partial hypothesis is a whole answer for the step's grammar).
    """

    speech_start_ms: int = 200
    speech_start_ratio: float = 0.8
    end_silence_ms: int = 600
    no_input_ms: int = 5000
    max_utterance_ms: int = 15000
    preroll_ms: int = 300
    # Mode 2 rather than 3: on espeak speech band-limited to 300-3400 Hz, through µ-law
    # and with white or pink noise added, both modes were equally (and fully) fooled by
    # loud noise, but mode 3 missed a quiet caller (-45 dBFS at 10 dB SNR) in 13-18 of
    # 24 utterances where mode 2 missed none. Mode 3 ended turns ~50 ms sooner.
    vad_mode: int = 2
    complete_silence_ms: int | None = None
    trail_db: float | None = 40.0

    def __post_init__(self) -> None:
        if self.vad_mode not in (0, 1, 2, 3):
            raise InvalidValue(f"vad_mode must be 0..3, got {self.vad_mode}")
        if not 0.0 < self.speech_start_ratio <= 1.0:
            raise InvalidValue(
                f"speech_start_ratio must be in (0, 1], got {self.speech_start_ratio}")
        for name in ("speech_start_ms", "end_silence_ms", "no_input_ms", "max_utterance_ms"):
            if getattr(self, name) <= 0:
                raise InvalidValue(f"{name} must be positive, got {getattr(self, name)}")
        if self.complete_silence_ms is not None and self.complete_silence_ms <= 0:
            raise InvalidValue(
                f"complete_silence_ms must be positive, got {self.complete_silence_ms}")
        if self.trail_db is not None and self.trail_db <= 0:
            raise InvalidValue(f"trail_db must be positive, got {self.trail_db}")
        if self.preroll_ms < 0:
            raise InvalidValue(f"preroll_ms must not be negative, got {self.preroll_ms}")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking.

    `at_ms` is the onset: the start of the first voiced frame of the detection window.
    `preroll` is PCM16 8 kHz audio from up to `preroll_ms` before `at_ms` through the
    frame that triggered detection, so the recognizer hears the whole first word.
    """

    at_ms: int
    preroll: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller stopped talking (`silence`) or talked for too long (`max_length`).

    `at_ms` is when that was decided: the end of the frame that completed the silence or
    reached the cap. `last_voice_ms` is the end of the last voiced audio (the VAD's
    hangover left out where the line is quiet enough to tell, see `EndpointConfig`),
    the better reference for measuring response latency and what the silence is timed
    from.
    """

    at_ms: int
    reason: Literal["silence", "max_length"]
    last_voice_ms: int


@dataclass(frozen=True, slots=True)
class NoSpeech:
    """No speech started within `no_input_ms` of arming; `at_ms` is when that was seen."""

    at_ms: int


EndpointEvent: TypeAlias = SpeechStarted | SpeechEnded | NoSpeech

State: TypeAlias = Literal["idle", "listening", "barge_in", "speech"]


class Endpointer:
    r"""webrtcvad-based endpointer for one call's 8 kHz PCM16 inbound audio.

    Cost of `process()` per 20 ms frame, one core of an AMD EPYC, Python 3.11 (most of
    it is webrtcvad itself): listening to line noise ~2.1 µs, in speech ~4.5 µs (2.3 µs
    plus ~2 µs weighing a voiced frame against `trail_db`), idle
    ~0.25 µs (no VAD). At 1,000 calls that is ~0.1 s of CPU per second. Reproduce
    (drop the `arm` for idle; a 150 Hz square wave as `f` for speech):

        .venv/bin/python -m timeit -s "from ivr.audio.endpoint import Endpointer, \
            EndpointConfig; import numpy as np, itertools; e = Endpointer(); \
            e.arm(EndpointConfig(no_input_ms=10**9), 0); t = itertools.count(0, 20); \
            f = np.random.default_rng(0).normal(0, 30, 160).astype('int16').tobytes()" \
            "e.process(f, next(t))"
    """

    def __init__(self) -> None:
        self._config = EndpointConfig()
        self._vad = webrtcvad.Vad(self._config.vad_mode)
        self._vad_mode = self._config.vad_mode
        self._state: State = "idle"
        # Recent (timestamp, pcm) frames for the preroll, kept even while idle: trimmed
        # to the span by time, and by count for frames too short to move time.
        self._ring_span_ms = self._config.preroll_ms + self._config.speech_start_ms
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=_ring_frames(self._ring_span_ms))
        self._now_ms = 0  # the start of the last frame, on a clock that never goes back
        self._end_ms = 0  # its end: the earliest the next frame can start
        # Voiced frames in the speech-start window as (timestamp, duration, power): mean
        # square, weighed only with `trail_db` set.
        self._voiced: deque[tuple[int, int, float]] = deque()
        self._voiced_ms = 0
        self._no_input_at: int | None = None
        self._speech_at = 0
        self._last_voice_ms = 0
        # The power of the utterance's loudest voiced frame (`trail_db`).
        self._peak = 0.0
        # Set by the session while in speech: the words heard so far are a whole answer,
        # so `complete_silence_ms` of silence ends the turn. Reset by each start of speech.
        self.answer_complete = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def now_ms(self) -> int:
        """The caller's clock as kept here: the last frame's `media.timestamp`, or the end
        of the frame before it if that is later (a timestamp never runs backwards)."""
        return self._now_ms

    @property
    def in_speech(self) -> bool:
        """True between `SpeechStarted` and `SpeechEnded`: forward frames to recognition."""
        return self._state == "speech"

    @property
    def armed(self) -> bool:
        """Listening for an answer or a barge-in, or in speech."""
        return self._state != "idle"

    def arm(self, config: EndpointConfig, now_ms: int) -> None:
        """Listen for one answer; the no-input timer runs from `now_ms` (caller clock)."""
        self._start(config, "listening")
        self._no_input_at = now_ms + config.no_input_ms

    def watch_barge_in(self, config: EndpointConfig, now_ms: int) -> None:
        """Listen for speech over a prompt: no no-input timer; `now_ms` is unused but
        taken for symmetry with `arm` so callers pass the same clock to both."""
        del now_ms
        self._start(config, "barge_in")
        self._no_input_at = None

    def disarm(self) -> None:
        """Stop listening; frames are only buffered for a later preroll."""
        self._state = "idle"
        self._no_input_at = None

    def _start(self, config: EndpointConfig, state: State) -> None:
        self._config = config
        if config.vad_mode != self._vad_mode:
            # Keep the Vad instance: its noise estimate has adapted to this line.
            self._vad.set_mode(config.vad_mode)
            self._vad_mode = config.vad_mode
        self._ring_span_ms = config.preroll_ms + config.speech_start_ms
        frames = _ring_frames(self._ring_span_ms)
        if frames != self._ring.maxlen:
            self._ring = deque(self._ring, maxlen=frames)
        self._voiced.clear()
        self._voiced_ms = 0
        self._state = state
        self.answer_complete = False

    def _sound_end(self, window: deque[tuple[int, int, float]], trail_db: float | None
                   ) -> int | None:
        """The end of the last voiced frame in `window` that is the caller's sound: within
        `trail_db` of the loudest (any, with `trail_db` None); None if there is none."""
        if trail_db is None:
            ts, dur, _ = window[-1]
            return ts + dur
        floor = self._peak * 10 ** (-trail_db / 10)
        for ts, dur, power in reversed(window):
            if power > 0 and power >= floor:
                return ts + dur
        return None

    def _is_voiced(self, pcm: bytes) -> bool:
        if len(pcm) in _VAD_FRAME_BYTES:
            return bool(self._vad.is_speech(pcm, _RATE))
        # Twilio sends 20 ms frames; anything else is judged by the majority of its
        # 20 ms pieces so an odd-sized frame cannot raise in the VAD and drop the call.
        pieces = [pcm[i : i + 320] for i in range(0, len(pcm) - 159, 320)]
        votes = sum(self._vad.is_speech(p, _RATE) for p in pieces if len(p) in _VAD_FRAME_BYTES)
        return bool(pieces) and votes * 2 > len(pieces)

    def process(self, pcm16_8k: bytes, timestamp_ms: int) -> EndpointEvent | None:
        """Feed one inbound frame stamped with Twilio's `media.timestamp`."""
        dur = len(pcm16_8k) // _BYTES_PER_MS
        if timestamp_ms < self._end_ms:
            timestamp_ms = self._end_ms  # frozen or backwards: right after the last frame
        end = timestamp_ms + dur
        self._now_ms = timestamp_ms
        self._end_ms = end
        ring = self._ring
        ring.append((timestamp_ms, pcm16_8k))
        horizon = end - self._ring_span_ms
        while len(ring) > 1 and ring[0][0] < horizon:
            ring.popleft()

        state = self._state
        if state == "idle":
            return None
        cfg = self._config
        window = self._voiced
        if self._is_voiced(pcm16_8k):
            power = _power(pcm16_8k) if cfg.trail_db is not None else 0.0
            window.append((timestamp_ms, dur, power))
            if state == "speech" and power > self._peak:
                self._peak = power
            self._voiced_ms += dur
        window_start = end - cfg.speech_start_ms
        while window and window[0][0] < window_start:
            self._voiced_ms -= window.popleft()[1]
        sustained = self._voiced_ms >= cfg.speech_start_ratio * cfg.speech_start_ms

        if state == "speech":
            if sustained:
                # The VAD's hangover after the voice stopped is not the caller's sound.
                sound_end = self._sound_end(window, cfg.trail_db)
                if sound_end is not None:
                    self._last_voice_ms = max(self._last_voice_ms, sound_end)
            last_voice = self._last_voice_ms
            silence_ms = cfg.end_silence_ms
            if self.answer_complete and cfg.complete_silence_ms is not None:
                silence_ms = min(silence_ms, cfg.complete_silence_ms)
            if end - last_voice >= silence_ms:
                self._state = "idle"
                return SpeechEnded(end, "silence", last_voice)
            if end - self._speech_at >= cfg.max_utterance_ms:
                self._state = "idle"
                return SpeechEnded(end, "max_length", last_voice)
            return None

        # listening or barge_in: look for the start of speech.
        if sustained:
            onset = window[0][0]
            last_ts, last_dur, _ = window[-1]
            self._state = "speech"
            self._speech_at = onset
            self._last_voice_ms = last_ts + last_dur
            self._no_input_at = None
            self.answer_complete = False
            since = onset - cfg.preroll_ms
            preroll = b"".join(pcm for ts, pcm in ring if ts >= since)
            self._peak = max(power for _, _, power in window)
            return SpeechStarted(onset, preroll)
        deadline = self._no_input_at
        # Voice already in the window at the deadline may be a start still being
        # confirmed; give it one window's time rather than cut the caller off.
        if (
            deadline is not None
            and end >= deadline
            and (not window or end >= deadline + cfg.speech_start_ms)
        ):
            self.disarm()
            return NoSpeech(end)
        return None


def _power(pcm: bytes) -> float:
    """Mean square of PCM16 samples (~1.5 µs for a 20 ms frame)."""
    samples = np.frombuffer(pcm, dtype=np.int16, count=len(pcm) // 2).astype(np.float64)
    return float(np.dot(samples, samples)) / len(samples) if len(samples) else 0.0


DTMF_DIGITS = frozenset("0123456789*#ABCD")
# No prompt asks for more keys than this; without a cap a collection with no max_digits
# grows with every key a peer sends while the caller clock (audio) stands still.
MAX_KEYS = 64


@dataclass(frozen=True, slots=True)
class DigitsComplete:
    """Collected digits (terminator excluded) and why collection stopped."""

    digits: str
    reason: Literal["max_digits", "terminator", "timeout"]


class DtmfCollector:
    """Collects keypad digits for one answer.

    Complete on `max_digits` (at most `MAX_KEYS`), on the terminator (not included;
    alone it gives ""), or when `inter_digit_ms` passes after a digit. Before the first digit only
    `first_digit_timeout_ms` applies (None: wait indefinitely, leaving the no-input
    decision to the endpointer). Twilio's dtmf messages carry no timestamp, so `now_ms`
    is the session's caller clock (the latest media timestamp); `poll()` it on each
    media frame. Once complete the collector is inactive until `start()` again.
    """

    def __init__(self) -> None:
        self._active = False
        self._digits: list[str] = []
        self._max_digits: int | None = None
        self._terminator: str | None = "#"
        self._inter_digit_ms = 3000
        self._deadline: int | None = None

    @property
    def active(self) -> bool:
        return self._active

    @property
    def digits(self) -> str:
        """Digits pressed so far in the current collection."""
        return "".join(self._digits)

    def start(
        self,
        max_digits: int | None,
        terminator: str | None = "#",
        inter_digit_ms: int = 3000,
        first_digit_timeout_ms: int | None = None,
        *,
        now_ms: int | None = None,
    ) -> None:
        """Begin collecting; `max_digits=None` means only the terminator or a timeout end it.

        `now_ms` (caller clock) is needed only to time `first_digit_timeout_ms`.
        """
        if max_digits is not None and not 0 < max_digits <= MAX_KEYS:
            raise InvalidValue(f"max_digits must be within 1..{MAX_KEYS}, got {max_digits}")
        if terminator is not None and terminator not in DTMF_DIGITS:
            raise InvalidValue(f"terminator must be a DTMF key, got {terminator!r}")
        if first_digit_timeout_ms is not None and now_ms is None:
            raise InvalidValue("now_ms is needed to time the first digit")
        self._active = True
        self._digits = []
        self._max_digits = max_digits
        self._terminator = terminator
        self._inter_digit_ms = inter_digit_ms
        self._deadline = (
            None
            if first_digit_timeout_ms is None or now_ms is None
            else now_ms + first_digit_timeout_ms
        )

    def cancel(self) -> None:
        self._active = False
        self._deadline = None

    def _complete(self, reason: Literal["max_digits", "terminator", "timeout"]) -> DigitsComplete:
        self.cancel()
        return DigitsComplete(self.digits, reason)

    def press(self, digit: str, now_ms: int) -> DigitsComplete | None:
        """A key press. Presses while inactive, or of unknown keys, are ignored.

        A press arriving after a deadline that was not polled yet completes the
        collection with "timeout" first (the late key is not part of it): by the
        caller's clock the timeout came first.
        """
        if not self._active or digit not in DTMF_DIGITS:
            return None
        late = self.poll(now_ms)
        if late is not None:
            return late
        if digit == self._terminator:
            return self._complete("terminator")
        self._digits.append(digit)
        if len(self._digits) >= (self._max_digits or MAX_KEYS):
            return self._complete("max_digits")
        self._deadline = now_ms + self._inter_digit_ms
        return None

    def poll(self, now_ms: int) -> DigitsComplete | None:
        """Check the timers; a timeout completes with whatever was collected."""
        if self._active and self._deadline is not None and now_ms >= self._deadline:
            return self._complete("timeout")
        return None
