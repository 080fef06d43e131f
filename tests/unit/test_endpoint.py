from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pytest
import webrtcvad

from ivr.audio.endpoint import (
    MAX_KEYS,
    DigitsComplete,
    DtmfCollector,
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    NoSpeech,
    SpeechEnded,
    SpeechStarted,
)

FRAME = 320  # 20 ms of 8 kHz PCM16
SILENCE = bytes(FRAME)


def voiced(ms: int, f0: float = 150.0) -> bytes:
    """A voice-like signal webrtcvad flags in every frame: a harmonic-rich 150 Hz
    glottal-ish tone with a 4 Hz syllable-rate amplitude modulation."""
    t = np.arange(8 * ms) / 8000
    x = np.zeros_like(t)
    for k in range(1, int(3800 / f0) + 1):
        x += np.sin(2 * np.pi * f0 * k * t) / k
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    peak = float(np.max(np.abs(x)))
    return (x / peak * 8000).astype(np.int16).tobytes()


def silence(ms: int) -> bytes:
    return bytes(16 * ms)


def feed(
    ep: Endpointer, audio: bytes, start_ms: int = 0
) -> Iterator[tuple[int, bytes, EndpointEvent | None]]:
    """Feed `audio` as 20 ms frames stamped from `start_ms`; yield (ts, frame, event)."""
    for i in range(0, len(audio), FRAME):
        ts = start_ms + i // 16
        frame = audio[i : i + FRAME]
        yield ts, frame, ep.process(frame, ts)


def events(stream: Iterable[tuple[int, bytes, EndpointEvent | None]]) -> list[EndpointEvent]:
    return [e for _, _, e in stream if e is not None]


def vad_flags(audio: bytes, mode: int = 2) -> str:
    """What a fresh webrtcvad says about each 20 ms frame, as a string of 0/1."""
    vad = webrtcvad.Vad(mode)
    return "".join(
        "1" if vad.is_speech(audio[i : i + FRAME], 8000) else "0"
        for i in range(0, len(audio), FRAME)
    )


def voice_end_ms(audio: bytes, mode: int = 2) -> int:
    """End of the last frame webrtcvad flags: voice plus the VAD's own hangover."""
    return (vad_flags(audio, mode).rindex("1") + 1) * 20


def test_synthetic_voice_is_flagged_by_the_vad() -> None:
    # The tests below rely on this: every frame of the signal is voiced, silence is not,
    # and the only smearing is webrtcvad's hangover after the voice stops.
    for mode in range(4):
        flags = vad_flags(silence(500) + voiced(1000) + silence(1000), mode)
        assert flags.startswith("0" * 25 + "1" * 50)
        assert "0" not in flags.rstrip("0")[25:]
        assert 3 <= len(flags.rstrip("0")) - 75 <= 8  # hangover: 60-160 ms


def test_no_input_fires_by_caller_clock_across_a_gap() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=1000), now_ms=0)
    seen = []
    # 0..380 ms, then packets lost until 900 ms: far fewer than 50 frames reach 1000 ms.
    ev = None
    for ts in [*range(0, 400, 20), *range(900, 2000, 20)]:
        seen.append(ts)
        ev = ep.process(SILENCE, ts)
        if ev is not None:
            break
    assert ev == NoSpeech(at_ms=1000)
    assert seen[-1] == 980 and len(seen) == 25
    assert not ep.armed
    assert ep.process(SILENCE, 1000) is None


def test_no_input_when_the_gap_jumps_past_the_deadline() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=1000), now_ms=500)
    assert ep.process(SILENCE, 500) is None
    assert ep.process(SILENCE, 2000) == NoSpeech(at_ms=2020)


@pytest.mark.parametrize("mode", [2, 3])
def test_speech_started_with_preroll_then_ended_by_silence(mode: int) -> None:
    cfg = EndpointConfig(preroll_ms=300, end_silence_ms=600, no_input_ms=5000, vad_mode=mode)
    ep = Endpointer()
    ep.arm(cfg, now_ms=0)
    audio = silence(500) + voiced(1000) + silence(1000)
    forwarded = b""
    got: list[tuple[int, EndpointEvent]] = []
    for ts, frame, ev in feed(ep, audio):
        # The forwarding contract documented in the module.
        if isinstance(ev, SpeechStarted):
            forwarded += ev.preroll
        elif ep.in_speech:
            forwarded += frame
        if ev is not None:
            got.append((ts, ev))

    (t_start, started), (t_end, ended) = got
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    # Onset at the first voiced frame; confirmed once 8 of 10 frames are voiced.
    assert started.at_ms == 500 and t_start == 640
    # Preroll: 300 ms before the onset through the confirming frame.
    assert started.preroll == audio[200 * 16 : 660 * 16]
    # Ends end_silence_ms after the voice stopped (1500 ms): the frames webrtcvad still
    # flags after it (its hangover) are silence on this quiet line.
    assert voice_end_ms(audio, mode) > 1500
    assert ended == SpeechEnded(at_ms=2100, reason="silence", last_voice_ms=1500)
    assert t_end == 2080
    # The recognizer got everything from preroll start to the end of speech, no gaps.
    assert forwarded == audio[200 * 16 : t_end * 16]
    assert not ep.in_speech and not ep.armed


def test_preroll_includes_audio_from_before_arming() -> None:
    ep = Endpointer()
    events(feed(ep, silence(400)))  # idle: buffered only
    ep.arm(EndpointConfig(preroll_ms=300), now_ms=400)
    (started,) = events(feed(ep, voiced(300), start_ms=400))
    assert isinstance(started, SpeechStarted)
    assert started.at_ms == 400
    assert started.preroll == silence(300) + voiced(300)[: 160 * 16]


def test_click_neither_starts_speech_nor_holds_the_turn_open() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=3000), now_ms=0)
    # A 20 ms burst reads as 100 ms voiced (hangover) but is not sustained voice.
    evs = events(feed(ep, silence(500) + voiced(20) + silence(2480)))
    assert evs == [NoSpeech(at_ms=3000)]

    ep.arm(EndpointConfig(end_silence_ms=600), now_ms=3000)
    speech = voiced(400) + silence(300)
    audio = speech + voiced(20) + silence(600)
    evs = events(feed(ep, audio, start_ms=3000))
    assert evs[1] == SpeechEnded(3400 + 600, "silence", 3400)


def noisy(audio: bytes, rms: float) -> bytes:
    """`audio` on a line with white noise of `rms` (PCM16 units)."""
    x = np.frombuffer(audio, np.int16).astype(np.float64)
    x += np.random.default_rng(0).normal(0.0, rms, len(x))
    return np.clip(x, -32768, 32767).astype(np.int16).tobytes()


def ended_at(config: EndpointConfig, audio: bytes) -> SpeechEnded:
    ep = Endpointer()
    ep.arm(config, now_ms=0)
    ended = [e for e in events(feed(ep, audio)) if isinstance(e, SpeechEnded)]
    assert len(ended) == 1
    return ended[0]


def test_the_vad_hangover_is_not_the_callers_sound_on_a_quiet_line() -> None:
    audio = silence(500) + voiced(1000) + silence(1000)
    hangover_end = voice_end_ms(audio)
    assert hangover_end >= 1560  # webrtcvad flags 60-160 ms of silence after the voice
    for complete_ms, end_ms in ((None, 2100), (250, 1760)):  # whole 20 ms frames
        ep = Endpointer()
        ep.arm(EndpointConfig(complete_silence_ms=complete_ms), now_ms=0)
        ended = []
        for _, _, event in feed(ep, audio):
            ep.answer_complete = True  # as the session says of a whole answer
            if isinstance(event, SpeechEnded):
                ended.append(event)
        # The silence is timed from where the voice stopped, not from the hangover's end.
        assert ended == [SpeechEnded(end_ms, "silence", 1500)]
    # Without trail_db the hangover counts, as webrtcvad alone has it.
    assert ended_at(EndpointConfig(trail_db=None), audio) == SpeechEnded(
        hangover_end + 600, "silence", hangover_end)


def test_on_a_noisy_line_the_hangover_counts() -> None:
    # Noise ~28 dB below the voice: the hangover's frames are as loud as the line, within
    # trail_db of the voice, so the turn ends as late as the VAD alone would have it.
    audio = noisy(silence(500) + voiced(1000) + silence(1000), rms=100)
    hangover_end = voice_end_ms(audio)
    assert hangover_end >= 1560
    assert ended_at(EndpointConfig(), audio) == SpeechEnded(
        hangover_end + 600, "silence", hangover_end)


def test_a_weak_ending_within_trail_db_holds_the_turn() -> None:
    # Voice, then 200 ms of it 10 dB down (a weak ending webrtcvad still hears; 20 dB
    # down it hears only its hangover's worth): the caller's sound, within trail_db.
    weak = (np.frombuffer(voiced(200), np.int16) * 10 ** (-10 / 20)).astype(np.int16)
    audio = silence(500) + voiced(800) + weak.tobytes() + silence(1000)
    assert vad_flags(audio)[65:75] == "1" * 10  # the VAD hears the weak part
    assert ended_at(EndpointConfig(), audio).last_voice_ms == 1500


def test_start_needs_most_of_the_window_voiced() -> None:
    v = voiced(20)
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=10_000), now_ms=0)
    # A 20 ms burst every 200 ms is voiced half the time (with hangover), never 80%.
    pattern = ([v] + [SILENCE] * 9) * 10
    assert all(ep.process(f, i * 20) is None for i, f in enumerate(pattern))


def test_lost_packets_count_as_unvoiced_in_the_start_window() -> None:
    audio = voiced(400)
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=10_000), now_ms=0)
    # Voice from 0, but packets 40-140 ms are lost: at 160 ms, 8 frames would have been
    # voiced by count; by the clock only 2 of the last 10 frame slots are.
    stamps = [0, 20, *range(160, 400, 20)]
    evs = [(ts, ep.process(audio[ts * 16 : ts * 16 + FRAME], ts)) for ts in stamps]
    started = [(ts, e) for ts, e in evs if e is not None]
    assert len(started) == 1
    ts, ev = started[0]
    # Needs 160 voiced ms within 200: the frames 160..300 (and not 0 and 20).
    assert ts == 300 and isinstance(ev, SpeechStarted) and ev.at_ms == 160


def test_start_tolerates_a_short_packet_loss() -> None:
    audio = voiced(400)
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=10_000), now_ms=0)
    # 40 ms lost after the onset: 8 of the 10 slots up to 200 ms are still voiced.
    stamps = [0, 20, 40, *range(100, 400, 20)]
    evs = [(ts, ep.process(audio[ts * 16 : ts * 16 + FRAME], ts)) for ts in stamps]
    started = [(ts, e) for ts, e in evs if e is not None]
    assert [(ts, e.at_ms) for ts, e in started] == [(180, 0)]


def test_max_utterance() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(max_utterance_ms=1000), now_ms=0)
    evs = events(feed(ep, silence(100) + voiced(3000)))
    assert isinstance(evs[0], SpeechStarted) and evs[0].at_ms == 100
    assert evs[1] == SpeechEnded(at_ms=1100, reason="max_length", last_voice_ms=1100)
    assert len(evs) == 2


def test_no_input_waits_for_a_start_being_confirmed() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=1000), now_ms=0)
    evs = events(feed(ep, silence(900) + voiced(500)))
    assert isinstance(evs[0], SpeechStarted) and evs[0].at_ms == 900


def test_barge_in_watch_has_no_timeout_and_continues_into_speech() -> None:
    ep = Endpointer()
    ep.watch_barge_in(EndpointConfig(no_input_ms=1000), now_ms=0)
    assert ep.state == "barge_in"
    evs = events(feed(ep, silence(10_000) + voiced(500) + silence(800)))
    assert [type(e) for e in evs] == [SpeechStarted, SpeechEnded]
    assert evs[0].at_ms == 10_000


def test_disarm_stops_events() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(), now_ms=0)
    ep.disarm()
    assert events(feed(ep, voiced(500) + silence(6000))) == []


def test_rearm_after_an_answer() -> None:
    ep = Endpointer()
    cfg = EndpointConfig(no_input_ms=1000)
    ep.arm(cfg, now_ms=0)
    first = events(feed(ep, voiced(300) + silence(900)))
    assert [type(e) for e in first] == [SpeechStarted, SpeechEnded]
    ep.arm(cfg, now_ms=1200)
    assert events(feed(ep, silence(1000), start_ms=1200)) == [NoSpeech(at_ms=2200)]


def test_odd_frame_sizes_do_not_raise() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=10_000), now_ms=0)
    audio = voiced(1000)
    ts, evs = 0, []
    for size in [400, 100, 640, 7, 960] * 4:
        chunk, audio = audio[:size], audio[size:]
        evs.append(ep.process(chunk, ts))
        ts += size // 16
    assert any(isinstance(e, SpeechStarted) for e in evs)


def _growth(work: Callable[[], object]) -> int:
    """Bytes still allocated after `work()` ran (what it left behind)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_frozen_timestamp_keeps_the_preroll_bounded() -> None:
    """10,000 frames all stamped 0 leave no more than the preroll span behind (each a
    fresh bytes object, as decoded frames are): not 10,000 frames' worth."""
    ep = Endpointer()

    def flood() -> None:
        for _ in range(10_000):
            ep.process(bytes(FRAME), 0)

    assert _growth(flood) < 64 * 1024  # the span: 25 frames of 320 bytes, with overhead
    assert ep.now_ms == 9_999 * 20  # each frame moved the clock by its own length
    ep.arm(EndpointConfig(preroll_ms=300), now_ms=ep.now_ms)
    (started,) = events(feed(ep, voiced(300), start_ms=0))
    assert isinstance(started, SpeechStarted)
    assert len(started.preroll) == (300 + 160) * 16  # the preroll, not the flood


def test_frames_too_short_to_move_the_clock_are_bounded_by_count() -> None:
    ep = Endpointer()

    def flood() -> None:
        for _ in range(10_000):
            ep.process(bytes(8), 0)  # half a millisecond: no duration at 16 bytes/ms

    assert _growth(flood) < 64 * 1024


def test_voice_at_a_frozen_timestamp_is_bounded_and_ends_by_frames_received() -> None:
    """In speech the start window and the utterance are measured on frames received, so
    frozen-timestamp voice neither grows the window nor holds a turn open forever."""
    audio = voiced(10_000 * 20)
    frames = [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]
    ep = Endpointer()
    ep.arm(EndpointConfig(max_utterance_ms=2000), now_ms=0)
    got: list[EndpointEvent] = []

    def flood() -> None:
        for frame in frames:
            ev = ep.process(frame, 0)
            if ev is not None:
                got.append(ev)
                if isinstance(ev, SpeechEnded):
                    ep.watch_barge_in(EndpointConfig(max_utterance_ms=10**9), ep.now_ms)

    assert _growth(flood) < 64 * 1024
    started, ended = got[:2]
    assert isinstance(started, SpeechStarted) and started.at_ms == 0
    assert ended == SpeechEnded(at_ms=2000, reason="max_length", last_voice_ms=2000)


def test_no_input_runs_on_frames_received_when_timestamps_run_backwards() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(no_input_ms=1000), now_ms=5000)
    stamps = [5000 - 20 * i for i in range(200)]  # 5000, 4980, ...: always backwards
    evs = [(i, ep.process(SILENCE, ts)) for i, ts in enumerate(stamps)]
    # The first frame sets the clock; every later one goes on 20 ms from there.
    assert [(i, e) for i, e in evs if e is not None] == [(49, NoSpeech(at_ms=6000))]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        EndpointConfig(vad_mode=4)
    with pytest.raises(ValueError):
        EndpointConfig(speech_start_ratio=0)
    with pytest.raises(ValueError):
        EndpointConfig(end_silence_ms=0)


# --- DTMF -----------------------------------------------------------------------------


def test_dtmf_max_digits() -> None:
    c = DtmfCollector()
    c.start(3, now_ms=0)
    assert c.press("1", 100) is None
    assert c.press("2", 200) is None
    assert c.press("3", 300) == DigitsComplete("123", "max_digits")
    assert not c.active
    assert c.press("4", 400) is None


def test_dtmf_terminator_is_not_included() -> None:
    c = DtmfCollector()
    c.start(10, now_ms=0)
    for i, d in enumerate("42*"):
        assert c.press(d, i * 100) is None
    assert c.press("#", 500) == DigitsComplete("42*", "terminator")


def test_dtmf_terminator_alone_gives_empty_result() -> None:
    c = DtmfCollector()
    c.start(4, terminator="#", now_ms=0)
    assert c.press("#", 100) == DigitsComplete("", "terminator")


def test_dtmf_inter_digit_timeout() -> None:
    c = DtmfCollector()
    c.start(6, inter_digit_ms=3000, now_ms=0)
    assert c.poll(60_000) is None  # no first-digit timeout by default
    c.press("7", 60_000)
    c.press("8", 61_000)
    assert c.poll(63_999) is None
    assert c.poll(64_000) == DigitsComplete("78", "timeout")
    assert c.poll(70_000) is None


def test_dtmf_late_press_after_an_unpolled_timeout() -> None:
    c = DtmfCollector()
    c.start(6, inter_digit_ms=3000, now_ms=0)
    c.press("1", 1000)
    assert c.press("2", 4000) == DigitsComplete("1", "timeout")
    assert not c.active


def test_dtmf_first_digit_timeout() -> None:
    c = DtmfCollector()
    c.start(4, first_digit_timeout_ms=5000, now_ms=1000)
    assert c.poll(5999) is None
    assert c.poll(6000) == DigitsComplete("", "timeout")


def test_dtmf_no_terminator_and_unknown_keys() -> None:
    c = DtmfCollector()
    c.start(2, terminator=None, now_ms=0)
    assert c.press("x", 10) is None
    assert c.press("#", 20) is None
    assert c.digits == "#"
    assert c.press("1", 30) == DigitsComplete("#1", "max_digits")


def test_dtmf_keys_without_max_digits_are_capped() -> None:
    """A collection ended only by a terminator or a timeout still stops at MAX_KEYS:
    keys from a peer whose audio (the caller clock) stands still cannot pile up."""
    c = DtmfCollector()
    c.start(None, terminator=None, now_ms=0)
    results = [c.press("1", 0) for _ in range(MAX_KEYS)]
    assert results[:-1] == [None] * (MAX_KEYS - 1)
    assert results[-1] == DigitsComplete("1" * MAX_KEYS, "max_digits")
    assert not c.active


def test_dtmf_validation() -> None:
    c = DtmfCollector()
    with pytest.raises(ValueError):
        c.start(0, now_ms=0)
    with pytest.raises(ValueError):
        c.start(MAX_KEYS + 1, now_ms=0)
    with pytest.raises(ValueError):
        c.start(1, terminator="x", now_ms=0)
    with pytest.raises(ValueError):
        c.start(1, first_digit_timeout_ms=5000)
    c.start(1)  # now_ms only matters for the first-digit timeout
    assert c.press("5", 10) == DigitsComplete("5", "max_digits")
