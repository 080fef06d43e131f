"""`ivr bench load`'s pure parts: the callers' messages and timing logic, the figures and
the summary, on hand-made times (the benchmark itself runs against a server process;
tests/component/test_bench_load.py runs a tiny one)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import yaml

from ivr.bench.load import write_json
from ivr.bench.load_peer import (
    CALLED,
    KEYS,
    PRESS_AFTER,
    REPLY_TIMEOUT,
    SILENCE,
    Caller,
    Figures,
    Templates,
    measure,
    percentile,
    read_frames,
    table,
    text_frame,
)
from ivr.cli.main import build_parser
from ivr.config import Settings
from ivr.errors import IvrError
from ivr.flows.engine import Digits, FlowRunner, GotoFlow, Play, Transfer
from ivr.flows.load import load_flow_text
from ivr.telephony import inbound

ROOT = Path(__file__).resolve().parents[2]
SID = "MZ" + "0" * 32


def caller(sent: list[str], keys: str = KEYS) -> Caller:
    return Caller(SID, 0.0, sent.append, random.Random(1), keys=keys)


def parsed(sent: list[str]) -> list[inbound.InboundMessage]:
    return [inbound.parse_inbound(text) for text in sent]


def test_media_template_is_exactly_what_twilio_sends() -> None:
    """The templated frame is the text the reference builder writes, and parses as Twilio's."""
    templates = Templates(SID)
    for seq, chunk in [(2, 1), (3, 2), (1234567, 99999)]:
        text = templates.media(seq, chunk)
        assert text == inbound.inbound_media_message(seq, SID, chunk, chunk * 20, SILENCE)
        assert inbound.parse_inbound(text) == inbound.Media(
            seq, SID, "inbound", chunk, chunk * 20, SILENCE)


def test_websocket_frames_as_rfc_6455_writes_them() -> None:
    """A client's frame is masked (zero key: the payload as is); a server's frames are
    read whole, one at a time, a partial one left for the next read."""
    assert text_frame(b"Hello") == b"\x81\x85\0\0\0\0Hello"  # RFC 6455 5.7, masked
    long = b"x" * 300
    assert text_frame(long) == b"\x81\xfe\x01\x2c\0\0\0\0" + long
    frames: list[tuple[int, bytes]] = []
    buf = b"\x81\x05Hello" + b"\x81\x7e\x01\x2c" + long + b"\x88\x02\x03\xe8" + b"\x81\x05He"
    used = read_frames(buf, lambda op, payload: frames.append((op, payload)))
    assert frames == [(1, b"Hello"), (1, long), (8, b"\x03\xe8")]
    assert buf[used:] == b"\x81\x05He"
    assert read_frames(b"\x81\x7e\x01", lambda op, payload: None) == 0
    with pytest.raises(IvrError):
        read_frames(b"\x81\x85\0\0\0\0Hello", lambda op, payload: None)  # masked
    with pytest.raises(IvrError):
        read_frames(b"\x01\x05Hello", lambda op, payload: None)  # a first fragment


def test_a_key_is_pressed_only_after_every_prompt_was_heard_then_its_reply_is_timed() -> None:
    sent: list[str] = []
    c = caller(sent)
    c.tick(0.00)  # before the greeting: no key
    for _ in range(10):  # 200 ms of greeting arrives at once: it plays until 0.3
        c.media_in(0.10, 0.020)
    c.mark_in(0.11, "prompt-1")
    t = 0.12
    while t < 0.30:
        c.tick(t)
        t += 0.02
    assert [type(m).__name__ for m in parsed(sent)] == ["Media"] * len(sent)  # not played yet
    c.tick(0.30)  # the mark is echoed when its audio has played
    assert parsed(sent)[-1] == inbound.Mark(c.seq, SID, "prompt-1")
    pressed_before = len(sent)
    while c.pressed == 0:
        t += 0.02
        c.tick(t)
    key = parsed(sent)[-1]
    assert key == inbound.Dtmf(c.seq, SID, "inbound_track", KEYS[0])
    assert 0.30 + PRESS_AFTER[0] <= t <= 0.32 + PRESS_AFTER[1]
    assert all(isinstance(m, inbound.Media) for m in parsed(sent[pressed_before:-1]))
    seqs = [m.sequence_number for m in parsed(sent)
            if isinstance(m, inbound.Media | inbound.Mark | inbound.Dtmf)]
    assert seqs == list(range(2, 2 + len(sent)))  # one sequence over media, marks, keys
    c.tick(t + 0.02)
    c.media_in(t + 0.035, 0.020)  # the reply's first frame
    c.media_in(t + 0.055, 0.020)
    assert c.replies == [pytest.approx(0.035)]


def test_no_key_while_a_prompt_plays_and_a_reprompt_postpones_the_key() -> None:
    sent: list[str] = []
    c = caller(sent)
    c.media_in(0.0, 0.020)
    c.tick(0.02)
    c.tick(0.04)
    assert c.press_at is None  # frames came and no mark yet: a prompt is playing
    c.mark_in(0.05, "prompt-1")
    c.tick(0.06)  # echoed: now a key is scheduled
    assert c.press_at is not None
    c.media_in(0.07, 0.020)  # a reprompt began before the key: wait for its end
    assert c.press_at is None
    for i in range(200):
        c.tick(0.08 + i * 0.02)
    assert c.pressed == 0


def test_an_unanswered_key_is_counted_and_the_keys_run_out() -> None:
    sent: list[str] = []
    c = caller(sent, keys="9")
    c.media_in(0.0, 0.020)
    c.mark_in(0.0, "prompt-1")
    t = 0.0
    while t < 2 * REPLY_TIMEOUT + 3:
        c.tick(t)
        t += 0.02
    assert (c.pressed, c.unanswered, c.replies) == (1, 1, [])
    assert sum(isinstance(m, inbound.Dtmf) for m in parsed(sent)) == 1


def test_clear_echoes_pending_marks_at_once() -> None:
    sent: list[str] = []
    c = caller(sent)
    for _ in range(50):
        c.media_in(0.0, 0.020)  # one second buffered
    c.mark_in(0.0, "prompt-1")
    c.tick(0.1)
    assert not any(isinstance(m, inbound.Mark) for m in parsed(sent))
    c.clear_in(0.15)
    c.tick(0.16)
    assert parsed(sent)[-1] == inbound.Mark(c.seq, SID, "prompt-1")


def test_the_keys_walk_the_default_flow_on_replies_without_ending_the_call() -> None:
    """Each key of KEYS gets a spoken reply and none puts the call through (which would
    end the stream); one more "9" would, so the walk stops just before it."""
    routes = yaml.safe_load((ROOT / "flows" / "routes.yaml").read_text())["numbers"]
    assert routes.get(CALLED, Settings().default_flow) == "main_menu"  # the number dialled

    def runner(name: str) -> FlowRunner:
        text = (ROOT / "flows" / f"{name}.yaml").read_text()
        return FlowRunner(load_flow_text(text), caller="+15550000001")

    run = runner("main_menu")
    assert any(isinstance(a, Play) for a in run.start())
    for key in KEYS:
        actions = run.handle(Digits(key))
        if any(isinstance(a, GotoFlow) for a in actions):
            goto = next(a for a in actions if isinstance(a, GotoFlow))
            run = runner(goto.name)
            actions = run.start()
        assert any(isinstance(a, Play) for a in actions), key
        assert not any(isinstance(a, Transfer) for a in actions), key
    assert any(isinstance(a, Transfer) for a in run.handle(Digits("9")))


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def figures(server: str, cpu_s: float) -> Figures:
    callers = []
    for i in range(4):
        c = Caller(f"MZ{i}", 0.0, lambda text: None, random.Random(i))
        c.first_in = 0.010 * (i + 1)
        c.replies = [0.005 * (i + 1)]
        c.pressed = 1
        c.max_gap = 0.045 if i == 0 else 0.020
        c.ended = 5.0 if i == 3 else None
        callers.append(c)
    return measure(server, callers, seconds=10.0, cpu_s=cpu_s, rss_kib=400.0,
                   loop_lag_ms=None, late_ticks=3, ticks=500, generator_cpu_s=0.2,
                   generator_sys_s=0.1, until=4.0)


def test_figures_and_the_summary_table() -> None:
    served, floor = figures("ivr serve", 0.04), figures("baseline", 0.08)
    assert served.cpu_ms_per_call_s == pytest.approx(1.0)
    assert (served.gap_calls, served.greeted, served.replies) == (1, 4, 4)
    assert served.greeting_p99_ms == pytest.approx(40)
    assert served.dtmf_p50_ms == pytest.approx(10)
    assert (served.rss_kib_per_call, served.ended_early) == (100.0, 0)  # ended after the run
    lines = table([served, floor])
    assert lines[0].split() == ["ivr", "serve", "baseline"]
    row = {line[:40].strip(): line[40:].split() for line in lines[1:]}
    assert row["DTMF reply p99"] == ["20", "ms", "20", "ms"]
    assert row["generator late ticks"] == ["3/500", "3/500"]
    assert row["event-loop lag p99"] == ["-", "-"]
    assert lines[-1].split()[-1] == "0.50"


def test_json_figures(tmp_path: Path) -> None:
    path = tmp_path / "load.json"
    write_json(path, "ivr bench load --calls 4", [figures("ivr serve", 0.04),
                                                  figures("baseline", 0.08)])
    data = json.loads(path.read_text())
    assert data["cpu_ratio"] == pytest.approx(0.5)
    assert data["runs"][0]["dtmf_p99_ms"] == pytest.approx(20)
    assert data["runs"][1]["generator_sys_ms_per_call_s"] == pytest.approx(2.5)
    assert data["command"] == "ivr bench load --calls 4"


def test_load_command_parses() -> None:
    args = build_parser().parse_args(["bench", "load", "--calls", "3", "--json", "x.json"])
    assert (args.calls, args.json, args.loop, args.baseline) == (3, Path("x.json"), "auto", False)
    assert build_parser().parse_args(["bench", "load", "--loop", "asyncio"]).loop == "asyncio"
