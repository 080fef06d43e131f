"""Twilio Media Streams protocol: golden frames, round trips, and hostile input."""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.errors import (
    ConfigError,
    FlowError,
    InvalidValue,
    IvrError,
    ProtocolError,
    SpeechError,
    StoreError,
)
from ivr.telephony import inbound
from ivr.telephony.inbound import (
    DTMF_DIGITS,
    Connected,
    Dtmf,
    InboundMessage,
    Mark,
    Media,
    Start,
    Stop,
    connected_message,
    dtmf_message,
    inbound_mark_message,
    inbound_media_message,
    parse_inbound,
    start_message,
    stop_message,
)
from ivr.telephony.outbound import (
    OutClear,
    OutMark,
    OutMedia,
    TwilioOutbound,
    Writer,
    clear_message,
    mark_message,
    media_message,
    media_pieces,
    parse_outbound,
)
from ivr.telephony.wire import DEFAULT_MAX_BYTES

GOLDEN = Path(__file__).parent / "golden"
SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
ACCOUNT = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
CALL = "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
# 20 ms of a 1 kHz tone in µ-law: one 8-sample period, repeated.
TONE = bytes.fromhex("ffa9a0a9ff292029") * 20

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def golden_text(name: str) -> str:
    return (GOLDEN / f"{name}.json").read_text()


def golden_dict(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(golden_text(name))
    return data


def reason_of(text: str | bytes, *, outbound: bool = False, **kwargs: Any) -> str:
    parse = parse_outbound if outbound else parse_inbound
    with pytest.raises(ProtocolError) as info:
        parse(text, **kwargs)
    return info.value.reason


def dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --------------------------------------------------------------------------- golden frames

GOLDEN_INBOUND: list[tuple[str, InboundMessage]] = [
    ("connected", Connected(protocol="Call", version="1.0.0")),
    (
        "start",
        Start(
            sequence_number=1,
            stream_sid=SID,
            account_sid=ACCOUNT,
            call_sid=CALL,
            tracks=("inbound",),
            encoding="audio/x-mulaw",
            sample_rate=8000,
            channels=1,
            custom_parameters={"flow": "dental_booking", "caller": "+15005550006"},
        ),
    ),
    (
        "media",
        Media(
            sequence_number=3,
            stream_sid=SID,
            track="inbound",
            chunk=2,
            timestamp=25,
            payload=TONE,
        ),
    ),
    ("dtmf", Dtmf(sequence_number=5, stream_sid=SID, track="inbound_track", digit="1")),
    ("mark", Mark(sequence_number=6, stream_sid=SID, name="prompt-3")),
    ("stop", Stop(sequence_number=7, stream_sid=SID, account_sid=ACCOUNT, call_sid=CALL)),
]

# The simulated caller must produce what Twilio produces, so each golden frame is also
# rebuilt from its values with the caller-side builders.
GOLDEN_INBOUND_BUILT: dict[str, str] = {
    "connected": connected_message(),
    "start": start_message(
        1, SID, ACCOUNT, CALL, {"flow": "dental_booking", "caller": "+15005550006"}
    ),
    "media": inbound_media_message(3, SID, 2, 25, TONE),
    "dtmf": dtmf_message(5, SID, "1"),
    "mark": inbound_mark_message(6, SID, "prompt-3"),
    "stop": stop_message(7, SID, ACCOUNT, CALL),
}

GOLDEN_OUTBOUND: list[tuple[str, str, object]] = [
    ("outbound_media", media_message(SID, TONE), OutMedia(stream_sid=SID, payload=TONE)),
    ("outbound_mark", mark_message(SID, "prompt-3"), OutMark(stream_sid=SID, name="prompt-3")),
    ("outbound_clear", clear_message(SID), OutClear(stream_sid=SID)),
]


@pytest.mark.parametrize(("name", "expected"), GOLDEN_INBOUND, ids=[n for n, _ in GOLDEN_INBOUND])
def test_golden_inbound_parses(name: str, expected: InboundMessage) -> None:
    text = golden_text(name)
    assert parse_inbound(text) == expected
    assert parse_inbound(text.encode()) == expected


@pytest.mark.parametrize("name", list(GOLDEN_INBOUND_BUILT))
def test_caller_builders_reproduce_golden_inbound(name: str) -> None:
    built = GOLDEN_INBOUND_BUILT[name]
    assert json.loads(built) == golden_dict(name)
    # Compact, single-line, like Twilio's frames on the wire.
    assert "\n" not in built and ": " not in built


@pytest.mark.parametrize(
    ("name", "built", "expected"), GOLDEN_OUTBOUND, ids=[n for n, _, _ in GOLDEN_OUTBOUND]
)
def test_golden_outbound(name: str, built: str, expected: object) -> None:
    assert json.loads(built) == golden_dict(name)
    assert parse_outbound(golden_text(name)) == expected
    assert parse_outbound(built) == expected


def test_twilio_outbound_sends_the_golden_frames() -> None:
    """The player's port on a Twilio stream sends exactly the outbound golden frames."""
    sent: list[str] = []

    def write(text: str, *, droppable: bool = False) -> None:
        sent.append(text)

    out = TwilioOutbound(write, SID)
    (piece,) = out.encode(TONE)
    out.media(piece)
    out.mark("prompt-3")
    out.clear()
    assert sent == [built for _, built, _ in GOLDEN_OUTBOUND]
    names = ["outbound_media", "outbound_mark", "outbound_clear"]
    assert [json.loads(text) for text in sent] == [golden_dict(name) for name in names]


def test_media_pieces_make_the_media_messages_and_are_encoded_once() -> None:
    """A prompt's frames are encoded once (same pieces object for the same audio), and a
    stream's prefix + piece is exactly `media_message` for each frame."""
    audio = bytes(range(256)) * 5  # 8 frames
    pieces = media_pieces(audio)
    assert media_pieces(bytes(audio)) is pieces  # by content, not by object
    sent: list[str] = []
    out = TwilioOutbound(lambda text, droppable=False: sent.append(text), SID)
    for piece in pieces:
        out.media(piece)
    assert sent == [media_message(SID, audio[i:i + 160]) for i in range(0, len(audio), 160)]
    with pytest.raises(InvalidValue):
        media_pieces(audio[:100])


async def test_writer_never_blocks_and_keeps_order_behind_a_slow_send() -> None:
    """A send waiting on the transport is finished by a task; later writes queue behind
    it in order, and media past the backlog bound are dropped, marks never."""
    gate = asyncio.get_running_loop().create_future()
    sent: list[str] = []

    async def send(text: str) -> None:
        if text == "slow":
            await gate
        sent.append(text)

    write = Writer(send, max_backlog=2)
    write("a")
    assert sent == ["a"]  # written synchronously
    write("slow")
    write("m1", droppable=True)
    write("m2", droppable=True)
    write("m3", droppable=True)  # past the bound: dropped
    write("mark")  # never dropped
    assert sent == ["a"] and write.dropped == 1 and write.waiting == 4
    gate.set_result(None)
    async with asyncio.timeout(5):
        await write.drained()
    assert write.waiting == 0
    assert sent == ["a", "slow", "m1", "m2", "mark"]


def test_outbound_media_is_one_whole_base64_string_without_header() -> None:
    payload = json.loads(media_message(SID, TONE))["media"]["payload"]
    assert base64.b64decode(payload, validate=True) == TONE


def test_start_accepts_absent_inner_stream_sid_and_custom_parameters() -> None:
    frame = golden_dict("start")
    del frame["start"]["streamSid"]
    del frame["start"]["customParameters"]
    start = parse_inbound(dumps(frame))
    assert isinstance(start, Start)
    assert start.stream_sid == SID and start.custom_parameters == {}


def test_numbers_accepted_as_json_integers_too() -> None:
    frame = golden_dict("media")
    frame["sequenceNumber"] = 3
    frame["media"]["chunk"] = 2
    frame["media"]["timestamp"] = 25
    assert parse_inbound(dumps(frame)) == GOLDEN_INBOUND[2][1]
    start = golden_dict("start")
    start["start"]["mediaFormat"]["sampleRate"] = "8000"
    assert parse_inbound(dumps(start)) == GOLDEN_INBOUND[1][1]


def test_unknown_keys_are_ignored() -> None:
    frame = golden_dict("dtmf")
    frame["future"] = {"x": [1, 2]}
    frame["dtmf"]["duration"] = "100"
    assert parse_inbound(dumps(frame)) == GOLDEN_INBOUND[3][1]


# --------------------------------------------------------------------------- round trips

sids = st.text(min_size=1, max_size=40)
texts = st.text(max_size=40)
uints = st.integers(min_value=0, max_value=2**63 - 1)
payloads = st.binary(min_size=1, max_size=400)
digits = st.sampled_from(sorted(DTMF_DIGITS))


@PROPERTY
@given(
    seq=uints,
    sid=sids,
    account=texts,
    call=texts,
    params=st.dictionaries(texts, texts, max_size=5),
    tracks=st.lists(texts, min_size=1, max_size=3).map(tuple),
    encoding=texts,
    rate=st.integers(1, 2**63 - 1),
    channels=st.integers(1, 8),
)
def test_round_trip_start(
    seq: int,
    sid: str,
    account: str,
    call: str,
    params: dict[str, str],
    tracks: tuple[str, ...],
    encoding: str,
    rate: int,
    channels: int,
) -> None:
    text = start_message(
        seq,
        sid,
        account,
        call,
        params,
        tracks,
        encoding=encoding,
        sample_rate=rate,
        channels=channels,
    )
    assert parse_inbound(text) == Start(
        seq, sid, account, call, tracks, encoding, rate, channels, params
    )


@PROPERTY
@given(seq=uints, sid=sids, chunk=uints, ts=uints, payload=payloads, track=texts)
def test_round_trip_inbound_media(
    seq: int, sid: str, chunk: int, ts: int, payload: bytes, track: str
) -> None:
    text = inbound_media_message(seq, sid, chunk, ts, payload, track)
    assert parse_inbound(text) == Media(seq, sid, track, chunk, ts, payload)


@PROPERTY
@given(seq=uints, sid=sids, digit=digits)
def test_round_trip_dtmf(seq: int, sid: str, digit: str) -> None:
    assert parse_inbound(dtmf_message(seq, sid, digit)) == Dtmf(seq, sid, "inbound_track", digit)


@PROPERTY
@given(seq=uints, sid=sids, name=texts)
def test_round_trip_inbound_mark(seq: int, sid: str, name: str) -> None:
    assert parse_inbound(inbound_mark_message(seq, sid, name)) == Mark(seq, sid, name)


@PROPERTY
@given(seq=uints, sid=sids, account=texts, call=texts)
def test_round_trip_stop(seq: int, sid: str, account: str, call: str) -> None:
    assert parse_inbound(stop_message(seq, sid, account, call)) == Stop(seq, sid, account, call)


def test_round_trip_connected() -> None:
    assert parse_inbound(connected_message()) == Connected("Call", "1.0.0")


@PROPERTY
@given(sid=sids, payload=payloads, name=texts)
def test_round_trip_outbound(sid: str, payload: bytes, name: str) -> None:
    assert parse_outbound(media_message(sid, payload)) == OutMedia(sid, payload)
    assert parse_outbound(mark_message(sid, name)) == OutMark(sid, name)
    assert parse_outbound(clear_message(sid)) == OutClear(sid)
    # media_message is hand-built for speed; it must equal what json.dumps would give.
    assert json.loads(media_message(sid, payload)) == {
        "event": "media",
        "streamSid": sid,
        "media": {"payload": base64.b64encode(payload).decode()},
    }


def test_builders_reject_what_parsers_would_reject() -> None:
    bad_calls: list[Any] = [
        lambda: media_message(SID, b""),
        lambda: media_message("", TONE),
        lambda: mark_message("", "m"),
        lambda: clear_message(""),
        lambda: inbound_media_message(1, SID, 1, 1, b""),
        lambda: inbound_media_message(-1, SID, 1, 1, TONE),
        lambda: inbound_media_message(1, SID, True, 1, TONE),
        lambda: inbound_media_message(1, SID, 1, 2**63, TONE),
        lambda: dtmf_message(1, SID, "E"),
        lambda: dtmf_message(1, SID, "12"),
        lambda: start_message(1, SID, ACCOUNT, CALL, {}, ()),
        lambda: start_message(1, SID, ACCOUNT, CALL, {}, sample_rate=0),
        lambda: start_message(1, "", ACCOUNT, CALL, {}),
        lambda: stop_message(-5, SID, ACCOUNT, CALL),
        lambda: inbound_mark_message(1, "", "m"),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


# --------------------------------------------------------------------------- hostile input

KNOWN_KEYS = [
    "event",
    "sequenceNumber",
    "streamSid",
    "start",
    "media",
    "dtmf",
    "mark",
    "stop",
    "accountSid",
    "callSid",
    "tracks",
    "mediaFormat",
    "encoding",
    "sampleRate",
    "channels",
    "customParameters",
    "track",
    "chunk",
    "timestamp",
    "payload",
    "digit",
    "name",
    "protocol",
    "version",
]
EVENTS = ["connected", "start", "media", "dtmf", "mark", "stop", "clear", "Media", ""]
NASTY_STRINGS = [
    "",
    "0",
    "-1",
    "1.5",
    "1e3",
    " 7",
    "+7",
    "1_000",
    "٣",  # Arabic-Indic three: isdigit() is True
    "²",  # superscript two: isdigit() is True
    "9" * 19,
    "9" * 40,
    "QQ==",
    "QQ=",
    "Q===",
    "QQ==QQ==",
    "é===",
    "!!!!",
    "MZ",
    "\ud800",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(NASTY_STRINGS)
    | st.sampled_from(EVENTS)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)
event_objects = st.builds(
    lambda event, body: {**body, "event": event},
    st.sampled_from(EVENTS) | json_scalars,
    st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, max_size=8),
)


def valid_inbound_frames() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(connected_message()),
        st.builds(
            start_message,
            uints,
            sids,
            texts,
            texts,
            st.dictionaries(texts, texts, max_size=3),
        ),
        st.builds(inbound_media_message, uints, sids, uints, uints, payloads),
        st.builds(dtmf_message, uints, sids, digits),
        st.builds(inbound_mark_message, uints, sids, texts),
        st.builds(stop_message, uints, sids, texts, texts),
    )


def valid_outbound_frames() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(media_message, sids, payloads),
        st.builds(mark_message, sids, texts),
        st.builds(clear_message, sids),
    )


def paths(node: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def corrupt_base64(text: str, draw: st.DrawFn) -> str:
    how = draw(st.sampled_from(["char", "truncate", "pad", "space", "empty", "unicode"]))
    if how == "char":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(list("!-_*.\n\x00"))) + text[at:]
    if how == "truncate":
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if how == "pad":
        return text + draw(st.sampled_from(["=", "==", "===", "QQ==", "A"]))
    if how == "space":
        return " " + text
    if how == "unicode":
        return text + "é"
    return ""


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[str]) -> str:
    frame = json.loads(draw(frames))
    # Targeted damage first: random paths rarely land on the one payload or digit.
    media, dtmf = frame.get("media"), frame.get("dtmf")
    if isinstance(media, dict) and "payload" in media and draw(st.booleans()):
        media["payload"] = corrupt_base64(media["payload"], draw)
    if isinstance(dtmf, dict) and "digit" in dtmf and draw(st.booleans()):
        dtmf["digit"] = draw(st.sampled_from(["E", "a", "12", "", "1 ", "١", "**"]))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(paths(frame)))
        if not path:
            frame = draw(json_values)
            continue
        parent: Any = frame
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        op = draw(st.sampled_from(["drop", "swap", "base64", "stringify", "negate"]))
        value = parent[key]
        if op == "drop":
            del parent[key]
        elif op == "swap":
            parent[key] = draw(json_values)
        elif op == "base64" and isinstance(value, str):
            parent[key] = corrupt_base64(value, draw)
        elif op == "stringify" and not isinstance(value, str):
            parent[key] = json.dumps(value)
        elif op == "negate" and isinstance(value, str) and value.isdigit():
            parent[key] = "-" + value
        if not isinstance(frame, (dict, list)):
            break
    return dumps(frame)


def assert_only_protocol_errors(parse: Any, text: str | bytes) -> None:
    try:
        parse(text)
    except ProtocolError as exc:
        assert exc.reason and exc.message
    # Any other exception propagates and fails the test with its traceback.


@PROPERTY
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_and_bytes_raise_only_protocol_error(text: str | bytes) -> None:
    assert_only_protocol_errors(parse_inbound, text)
    assert_only_protocol_errors(parse_outbound, text)


@PROPERTY
@given(json_values | event_objects)
def test_arbitrary_json_raises_only_protocol_error(value: object) -> None:
    text = dumps(value)
    assert_only_protocol_errors(parse_inbound, text)
    assert_only_protocol_errors(parse_outbound, text)
    assert_only_protocol_errors(parse_inbound, text.encode())


@PROPERTY
@given(mutated(valid_inbound_frames()))
def test_mutated_inbound_frames_raise_only_protocol_error(text: str) -> None:
    assert_only_protocol_errors(parse_inbound, text)


@PROPERTY
@given(mutated(valid_outbound_frames()))
def test_mutated_outbound_frames_raise_only_protocol_error(text: str) -> None:
    assert_only_protocol_errors(parse_outbound, text)


@PROPERTY
@given(mutated(st.builds(inbound_media_message, uints, sids, uints, uints, payloads)))
def test_media_fast_path_agrees_with_precise_parser(text: str) -> None:
    # parse_inbound shortcuts canonical media frames; the shortcut must never accept,
    # reject or decode anything differently from the field-by-field parser.
    def outcome(parse: Any) -> object:
        try:
            return parse()
        except ProtocolError as exc:
            return exc.reason

    data = json.loads(text)
    if not isinstance(data, dict) or data.get("event") != "media":
        return
    assert outcome(lambda: parse_inbound(text)) == outcome(lambda: inbound._parse_media(data))


@PROPERTY
@given(st.text(alphabet="AQgw+/=\n !é", max_size=12) | st.text(max_size=12))
def test_base64_strictness_matches_b64decode_validate(text: str) -> None:
    # The parser calls binascii directly for speed; it must be exactly as strict as the
    # documented base64.b64decode(..., validate=True).
    def decode(fn: Any) -> bytes | None:
        try:
            result: bytes = fn(text)
        except ValueError:
            return None
        return result

    expected = decode(lambda s: base64.b64decode(s, validate=True))
    actual = decode(lambda s: binascii.a2b_base64(s, strict_mode=True))
    assert actual == expected


# --------------------------------------------------------------------------- each reason


def media_with(**changes: Any) -> str:
    frame = golden_dict("media")
    for dotted, value in changes.items():
        node = frame
        *parents, key = dotted.split("__")
        for parent in parents:
            node = node[parent]
        if value is DROP:
            del node[key]
        else:
            node[key] = value
    return dumps(frame)


DROP = object()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not_json"),
        ("{", "not_json"),
        ("{'event': 'media'}", "not_json"),
        ('{"event":"mark"} trailing', "not_json"),
        ('{"event":"media","sequenceNumber":NaN}', "not_json"),
        ('{"x": Infinity}', "not_json"),
        ('{"sequenceNumber": ' + "1" * 5000 + "}", "not_json"),  # int() digit limit
        (b"\xff\xfe{}", "not_json"),
        ('\ufeff{"event":"connected"}', "not_json"),
        ("[]", "not_object"),
        ('"media"', "not_object"),
        ("null", "not_object"),
        ("3", "not_object"),
        ("{}", "missing_field"),
        ('{"event":null}', "bad_type"),
        ('{"event":1}', "bad_type"),
        ('{"event":["media"]}', "bad_type"),
        ('{"event":"clear","streamSid":"MZ1"}', "unknown_event"),
        ('{"event":"Media"}', "unknown_event"),
        ('{"event":"connected","version":"1.0.0"}', "missing_field"),
        ('{"event":"connected","protocol":"Call","version":1}', "bad_type"),
        (media_with(streamSid=DROP), "missing_field"),
        (media_with(media=DROP), "missing_field"),
        (media_with(media__payload=DROP), "missing_field"),
        (media_with(media__track=DROP), "missing_field"),
        (media_with(media=[]), "bad_type"),
        (media_with(media="payload"), "bad_type"),
        (media_with(streamSid=None), "bad_type"),
        (media_with(streamSid=""), "bad_stream_sid"),
        (media_with(media__track=1), "bad_type"),
        (media_with(sequenceNumber=True), "bad_type"),
        (media_with(sequenceNumber=3.0), "bad_type"),
        (media_with(sequenceNumber=None), "bad_type"),
        (media_with(sequenceNumber="three"), "bad_number"),
        (media_with(sequenceNumber=""), "bad_number"),
        (media_with(sequenceNumber="-3"), "bad_number"),
        (media_with(sequenceNumber=-3), "bad_number"),
        (media_with(sequenceNumber="+3"), "bad_number"),
        (media_with(sequenceNumber=" 3"), "bad_number"),
        (media_with(sequenceNumber="1_0"), "bad_number"),
        (media_with(sequenceNumber="٣"), "bad_number"),
        (media_with(media__chunk="9" * 20), "bad_number"),
        (media_with(media__timestamp=2**63), "bad_number"),
        (media_with(media__timestamp="5.5"), "bad_number"),
        (media_with(media__payload=7), "bad_type"),
        (media_with(media__payload="!!!!"), "bad_base64"),
        (media_with(media__payload="QQ="), "bad_base64"),
        (media_with(media__payload="QQ==QQ=="), "bad_base64"),
        (media_with(media__payload="QQ== "), "bad_base64"),
        (media_with(media__payload="QQ\n=="), "bad_base64"),
        (media_with(media__payload="QQ-_"), "bad_base64"),  # URL-safe alphabet
        (media_with(media__payload="QQé="), "bad_base64"),
        (media_with(media__payload=""), "empty_payload"),
        (media_with(media__payload="===="), "bad_base64"),
    ],
)
def test_inbound_reasons(text: str | bytes, reason: str) -> None:
    assert reason_of(text) == reason


def start_with(mutate: Any) -> str:
    frame = golden_dict("start")
    mutate(frame)
    return dumps(frame)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (start_with(lambda f: f["start"].update(streamSid="MZother")), "bad_stream_sid"),
        (start_with(lambda f: f["start"].update(streamSid="")), "bad_stream_sid"),
        (start_with(lambda f: f["start"].update(streamSid=5)), "bad_type"),
        (start_with(lambda f: f["start"].pop("tracks")), "missing_field"),
        (start_with(lambda f: f["start"].update(tracks="inbound")), "bad_type"),
        (start_with(lambda f: f["start"].update(tracks=[])), "bad_value"),
        (start_with(lambda f: f["start"].update(tracks=["inbound", 2])), "bad_type"),
        (start_with(lambda f: f["start"].pop("mediaFormat")), "missing_field"),
        (start_with(lambda f: f["start"]["mediaFormat"].update(sampleRate=0)), "bad_value"),
        (start_with(lambda f: f["start"]["mediaFormat"].update(channels=-1)), "bad_number"),
        (start_with(lambda f: f["start"]["mediaFormat"].update(encoding=None)), "bad_type"),
        (start_with(lambda f: f["start"].update(customParameters=[])), "bad_type"),
        (start_with(lambda f: f["start"]["customParameters"].update(n=1)), "bad_type"),
        (start_with(lambda f: f["start"].pop("callSid")), "missing_field"),
        (start_with(lambda f: f.pop("start")), "missing_field"),
        (start_with(lambda f: f.pop("sequenceNumber")), "missing_field"),
        (dumps({"event": "dtmf", "sequenceNumber": "5", "streamSid": SID}), "missing_field"),
        (dtmf_message(5, SID, "1").replace('"1"', '"E"'), "bad_digit"),
        (dtmf_message(5, SID, "1").replace('"1"', '"12"'), "bad_digit"),
        (dtmf_message(5, SID, "1").replace('"1"', '""'), "bad_digit"),
        (dtmf_message(5, SID, "A").replace('"A"', '"a"'), "bad_digit"),
        (dtmf_message(5, SID, "1").replace('"1"', "1"), "bad_type"),
        (inbound_mark_message(6, SID, "m").replace('"m"', "null"), "bad_type"),
        (dumps({"event": "mark", "sequenceNumber": "6", "streamSid": SID}), "missing_field"),
        (
            dumps({"event": "stop", "sequenceNumber": "7", "streamSid": SID, "stop": {}}),
            "missing_field",
        ),
    ],
)
def test_inbound_reasons_other_events(text: str, reason: str) -> None:
    assert reason_of(text) == reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("nope", "not_json"),
        ("[1]", "not_object"),
        ("{}", "missing_field"),
        ('{"event":"start"}', "unknown_event"),
        ('{"event":"clear"}', "missing_field"),
        ('{"event":"clear","streamSid":""}', "bad_stream_sid"),
        ('{"event":"clear","streamSid":1}', "bad_type"),
        ('{"event":"mark","streamSid":"MZ1","mark":{}}', "missing_field"),
        ('{"event":"media","streamSid":"MZ1","media":{"payload":""}}', "empty_payload"),
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"QQ"}}', "bad_base64"),
        ('{"event":"media","streamSid":"MZ1","media":"QQ=="}', "bad_type"),
    ],
)
def test_outbound_reasons(text: str, reason: str) -> None:
    assert reason_of(text, outbound=True) == reason


def test_oversized_is_checked_before_parsing() -> None:
    frame = golden_text("media")
    assert reason_of(frame, max_bytes=len(frame.encode()) - 1) == "oversized"
    assert reason_of(frame.encode(), max_bytes=10) == "oversized"
    assert isinstance(parse_inbound(frame, max_bytes=len(frame.encode())), Media)
    # Limits are in UTF-8 bytes, not characters.
    mark = inbound_mark_message(6, SID, "ü" * 100)
    wire = json.dumps(json.loads(mark), ensure_ascii=False)
    assert reason_of(wire, max_bytes=len(wire) + 50) == "oversized"
    assert isinstance(parse_inbound(wire, max_bytes=len(wire.encode())), Mark)
    # Garbage that is too big is reported as too big, not as bad JSON.
    assert reason_of("x" * (DEFAULT_MAX_BYTES + 1)) == "oversized"
    assert reason_of("x" * (DEFAULT_MAX_BYTES + 1), outbound=True) == "oversized"


def test_deep_nesting_is_not_json_not_recursion_error() -> None:
    assert reason_of("[" * 200_000, max_bytes=10**6) == "not_json"
    assert reason_of('{"a":' * 200_000, max_bytes=10**7) == "not_json"


def test_error_messages_name_the_field() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_inbound(media_with(media__chunk="x"))
    assert "media.chunk" in str(info.value)
    with pytest.raises(ProtocolError) as info:
        parse_inbound(start_with(lambda f: f["start"]["mediaFormat"].pop("channels")))
    assert "start.mediaFormat.channels" in str(info.value)


def test_messages_are_frozen_values() -> None:
    media = parse_inbound(golden_text("media"))
    assert isinstance(media, Media)
    with pytest.raises(AttributeError):
        media.chunk = 9  # type: ignore[misc]
    assert not hasattr(media, "__dict__")
    assert copy.copy(media) == media


# --------------------------------------------------------------------------- errors module


def test_error_tree() -> None:
    for cls in (ProtocolError, FlowError, SpeechError, StoreError, ConfigError):
        assert issubclass(cls, IvrError)
    exc = ProtocolError("bad_base64", "media.payload is not valid base64")
    assert (exc.reason, exc.message) == ("bad_base64", "media.payload is not valid base64")
    assert str(exc) == "bad_base64: media.payload is not valid base64"
    again = pickle.loads(pickle.dumps(exc))
    assert (again.reason, again.message) == (exc.reason, exc.message)


def test_flow_error_renders_location_and_hint() -> None:
    full = FlowError(
        "unknown step 'gret'", file="flows/a.yaml", line=3, col=7, hint="did you mean 'greet'?"
    )
    assert str(full) == "flows/a.yaml:3:7: unknown step 'gret' (did you mean 'greet'?)"
    assert str(FlowError("no steps", file="a.yaml")) == "a.yaml: no steps"
    assert str(FlowError("no steps")) == "no steps"
    again = pickle.loads(pickle.dumps(full))
    assert str(again) == str(full)
