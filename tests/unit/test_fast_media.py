"""The media fast path reads exactly what the precise parser reads, or steps aside."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from ivr.telephony import inbound, wire

uints = st.integers(min_value=0, max_value=10**17)
sids = st.text(min_size=1, max_size=40)
tracks = st.text(max_size=12)


def frame(seq: int, sid: str, track: str, chunk: int, ts: int, payload: bytes,
          sid_first: bool, indent: int | None) -> str:
    media = {"track": track, "chunk": str(chunk), "timestamp": str(ts),
             "payload": base64.b64encode(payload).decode()}
    data: dict[str, object] = {"event": "media", "sequenceNumber": str(seq)}
    if sid_first:
        data |= {"streamSid": sid, "media": media}
    else:
        data |= {"media": media, "streamSid": sid}
    return json.dumps(data, indent=indent, separators=None if indent else (",", ":"))


@given(uints, sids, tracks, uints, uints, st.binary(min_size=1, max_size=400),
       st.booleans(), st.sampled_from([None, 1]))
def test_fast_path_agrees_with_the_precise_parser(
    seq: int, sid: str, track: str, chunk: int, ts: int, payload: bytes,
    sid_first: bool, indent: int | None,
) -> None:
    text = frame(seq, sid, track, chunk, ts, payload, sid_first, indent)
    precise = inbound._parse_media(wire.load(text, 10**6))
    assert inbound.parse_inbound(text, max_bytes=10**6) == precise
    fast = inbound._fast_media(text, 10**6)
    assert fast is None or fast == precise
    fields = inbound.media_fields(text, 10**6)
    assert fields is None or fields == (precise.stream_sid, precise.timestamp, precise.payload)
    assert (fields is None) == (fast is None or not text.startswith('{"event":"media"'))


def test_canonical_frames_take_the_fast_path_and_odd_ones_do_not() -> None:
    both = [frame(4, "MZ1", "inbound", 2, 5, b"\xff" * 160, first, None)
            for first in (True, False)]
    assert all(inbound._fast_media(t, 10**6) is not None for t in both)
    odd = [
        both[0].replace('"MZ1"', '"MZ\\u0031"'),  # an escape: the precise parser's
        both[0].replace('"payload":"', '"payload":"!'),  # not base64
        both[0].replace('"chunk":"2"', '"chunk":2'),  # a JSON number
        both[0][:-1] + ',"extra":1}',  # another key
    ]
    assert all(inbound._fast_media(t, 10**6) is None for t in odd)
    assert inbound._fast_media(both[0], len(both[0]) - 1) is None  # too big: refused there
    assert [inbound.media_fields(t, 10**6) for t in both] == [("MZ1", 5, b"\xff" * 160)] * 2
    assert all(inbound.media_fields(t, 10**6) is None for t in odd)
    assert inbound.media_fields(both[0], len(both[0]) - 1) is None
    assert inbound.media_fields(" " + both[0], 10**6) is None  # not as Twilio writes it
