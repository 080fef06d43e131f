"""The signed stream start: tokens `/voice` issues, and which `start`s `/media` accepts."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.errors import InvalidValue, ProtocolError, StoreError
from ivr.phone import caller_identity
from ivr.telephony.inbound import Start, parse_inbound, start_message
from ivr.telephony.stream_token import (
    REJECT_REASONS,
    StartRejected,
    StreamClaims,
    StreamTokens,
    secret_for,
)

SECRET = b"k" * 32
NOW = 1_800_000_000.0
CALL = "CA" + "1" * 32
OTHER_CALL = "CA" + "2" * 32
SID = "MZ" + "3" * 32
ACCOUNT = "AC" + "4" * 32
CALLER, CALLED = "+14155550123", "+14155550999"


class Clock:
    """Wall-clock seconds a test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tokens(clock: Clock | None = None, **kwargs: Any) -> StreamTokens:
    return StreamTokens(SECRET, ttl_s=300, clock=clock or Clock(), **kwargs)


def reason(t: StreamTokens, params: dict[str, str], call_sid: str = CALL) -> str:
    with pytest.raises(StartRejected) as info:
        t.accept(params, call_sid)
    return info.value.reason


def test_issued_parameters_are_accepted_once_with_their_claims() -> None:
    t = tokens()
    params = t.issue(CALL, CALLER, CALLED, "demo")
    assert {k: v for k, v in params.items() if k != "token"} == {
        "flow": "demo", "from": CALLER, "to": CALLED}
    assert params["token"].startswith(f"v1.{CALL}.{int(NOW) + 300}.")
    assert len(params["token"]) < 200  # well inside Twilio's 500-character <Parameter>
    claims = t.accept(params, CALL)
    assert (claims.call_sid, claims.caller, claims.called, claims.flow) == (
        CALL, CALLER, CALLED, "demo")
    assert claims.expires == int(NOW) + 300
    assert reason(t, params) == "replayed"


def test_each_issue_is_a_new_token() -> None:
    """Twilio may fetch /voice twice for a call: each answer is its own single-use token."""
    t = tokens()
    first, second = t.issue(CALL, CALLER, CALLED, ""), t.issue(CALL, CALLER, CALLED, "")
    assert first["token"] != second["token"]
    t.accept(first, CALL)
    t.accept(second, CALL)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.pop("token"), "missing"),
        (lambda p: p.update(token=""), "missing"),
        (lambda p: p.update(token="not-a-token"), "malformed"),
        (lambda p: p.update(token=p["token"] + "x"), "malformed"),
        (lambda p: p.update(token=p["token"].upper()), "malformed"),
        (lambda p: p.update(token="v1." + "A" * 300), "malformed"),
        (lambda p: p.update({"from": "+19995550000"}), "bad_signature"),
        (lambda p: p.pop("from"), "bad_signature"),
        (lambda p: p.update(to="+19995550000"), "bad_signature"),
        (lambda p: p.update(flow="concierge"), "bad_signature"),
        (lambda p: p.pop("flow"), "bad_signature"),
        # The token names another call: its MAC no longer covers the values.
        (lambda p: p.update(token=p["token"].replace(CALL, OTHER_CALL)), "bad_signature"),
        # A later expiry than the one signed.
        (lambda p: p.update(token=p["token"].replace(".1800000300.", ".1900000300.")),
         "bad_signature"),
        (lambda p: p.update(token=p["token"][:-1] + ("A" if p["token"][-1] != "A" else "B")),
         "bad_signature"),
    ],
)
def test_a_changed_parameter_is_rejected(change: Any, expected: str) -> None:
    t = tokens()
    params = t.issue(CALL, CALLER, CALLED, "demo")
    change(params)
    assert reason(t, params) == expected


def test_unsigned_extra_parameters_change_nothing() -> None:
    """A parameter the token does not cover (`caller`, anything) is ignored, not trusted."""
    t = tokens()
    params = t.issue(CALL, CALLER, CALLED, "")
    claims = t.accept({**params, "caller": "+19995550000", "phone": "+1999"}, CALL)
    assert claims.caller == CALLER and claims.flow == ""


def test_a_token_for_another_call_is_rejected() -> None:
    t = tokens()
    params = t.issue(CALL, CALLER, CALLED, "")
    assert reason(t, params, OTHER_CALL) == "call_sid_mismatch"
    t.accept(params, CALL)  # not spent by the refused attempt


def test_expiry_follows_the_injected_clock() -> None:
    clock = Clock()
    t = tokens(clock)
    params = t.issue(CALL, CALLER, CALLED, "")
    clock.now = NOW + 299
    late = t.issue(OTHER_CALL, CALLER, CALLED, "")
    clock.now = NOW + 300
    assert reason(t, params) == "expired"
    assert t.accept(late, OTHER_CALL).expires == int(NOW) + 599


def test_another_secret_cannot_issue() -> None:
    params = StreamTokens(b"x" * 32, clock=Clock()).issue(CALL, CALLER, CALLED, "")
    assert reason(tokens(), params) == "bad_signature"


def test_used_tokens_are_forgotten_once_expired_and_bounded() -> None:
    clock = Clock()
    t = tokens(clock, max_used=3)
    for i in range(3):
        sid = f"CA{i:032d}"
        t.accept(t.issue(sid, CALLER, CALLED, ""), sid)
    assert t.used == 3
    # Full of live tokens: refuse rather than forget one (which would allow its replay).
    assert reason(t, t.issue(CALL, CALLER, CALLED, "")) == "busy"
    clock.now = NOW + 300  # all three expired: their marks go, a new call is accepted
    t.accept(t.issue(CALL, CALLER, CALLED, ""), CALL)
    assert t.used == 1


@pytest.mark.parametrize("withheld", [
    "", "anonymous", "Anonymous", "RESTRICTED", "unknown", "unavailable", "private",
    "blocked", "+266696687", "266696687", "+7378742833", "+2562533", "+8656696",
    "+86282452253", "sip:alice@example.com", "client:alice", "+1 415 555 ext 9", "12",
])
def test_a_withheld_caller_id_is_an_anonymous_caller(withheld: str) -> None:
    t = tokens()
    assert caller_identity(withheld) == ""
    params = t.issue(CALL, withheld, CALLED, "")
    assert params["from"] == ""
    assert t.accept(params, CALL).caller == ""


def test_caller_identity_keeps_a_number() -> None:
    assert caller_identity(" +14155550123 ") == "+14155550123"
    assert caller_identity("4155550123") == "+14155550123"  # as tools store it
    assert caller_identity("+1 (415) 555-0123") == "+14155550123"


def test_call_sid_shape_is_checked_when_issuing() -> None:
    for bad in ("", "CA.1", "CA" + "1" * 70, "CA 1"):
        with pytest.raises(InvalidValue):
            tokens().issue(bad, CALLER, CALLED, "")


def test_secret_sources() -> None:
    assert secret_for("s" * 32, "auth") == b"s" * 32
    derived = secret_for("", "auth-token")
    assert derived == secret_for("", "auth-token") and derived != b"auth-token"
    assert len(derived) == 32
    assert secret_for("", "") != secret_for("", "")  # random, drawn per server start


def test_reject_reasons_are_a_closed_set() -> None:
    assert set(REJECT_REASONS) == {"missing", "malformed", "bad_signature", "expired",
                                   "call_sid_mismatch", "replayed", "busy"}


# --------------------------------------------------------------------------- property

_CORRUPT = ["", "!!!", "-1", "x" * 300, "\u0000", "9" * 40, "==", "+19995550000",
            "concierge", OTHER_CALL, "v1." + OTHER_CALL]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _paths(obj: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in obj.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out.extend(_paths(value, (*prefix, key)))
    return out


def genuine_start(params: dict[str, str]) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(start_message(1, SID, ACCOUNT, CALL, params))
    return frame


@st.composite
def mutated_start(draw: st.DrawFn, params: dict[str, str]) -> str:
    """A genuine start (parameters from /voice) with one field, anywhere, dropped, retyped,
    corrupted or edited; or an unsigned parameter added."""
    frame = copy.deepcopy(genuine_start(params))
    paths = [*_paths(frame), ("start", "customParameters", "caller")]
    path = draw(st.sampled_from(paths))
    parent: dict[str, Any] = frame
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    how = draw(st.sampled_from(["drop", "retype", "corrupt", "edit"]))
    if how == "drop":
        parent.pop(key, None)
    elif how == "retype":
        parent[key] = draw(json_values)
    elif how == "corrupt" or not isinstance(parent.get(key), str) or not parent[key]:
        parent[key] = draw(st.sampled_from(_CORRUPT))
    else:  # one character changed, inserted or removed
        text: str = parent[key]
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        ch = draw(st.characters(codec="ascii").filter(lambda c: c != text[i]))
        text = (text[:i] + ch + text[i + 1:] if op == "replace"
                else text[:i] + ch + text[i:] if op == "insert" else text[:i] + text[i + 1:])
        parent[key] = text
    return json.dumps(frame)


ISSUER = tokens()
PARAMS = ISSUER.issue(CALL, CALLER, CALLED, "demo")
SIGNED = StreamClaims(CALL, CALLER, CALLED, "demo", int(NOW) + 300, "")


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_start(PARAMS))
def test_no_change_to_a_start_yields_another_identity(text: str) -> None:
    """Whatever single field of a genuine start is changed, the frame is either refused
    (a protocol error, or a rejected start with a known reason) or accepted as exactly
    the call /voice vouched for: same CallSid, caller, called number and flow."""
    try:
        start = parse_inbound(text)
    except ProtocolError:
        return
    assert isinstance(start, Start)
    fresh = tokens()  # nothing used yet: every verdict is the token's own
    try:
        claims = fresh.accept(start.custom_parameters, start.call_sid)
    except StartRejected as exc:
        assert exc.reason in REJECT_REASONS and exc.reason != "busy"
        return
    assert start.call_sid == CALL
    assert (claims.call_sid, claims.caller, claims.called, claims.flow, claims.expires) == (
        SIGNED.call_sid, SIGNED.caller, SIGNED.called, SIGNED.flow, SIGNED.expires)


class Marks:
    """A shared used-marks store (the call store's `use_token`), in memory."""

    def __init__(self, fail: bool = False) -> None:
        self.used: dict[str, float] = {}
        self.fail = fail

    async def use_token(self, nonce: str, expires_at: float) -> bool:
        if self.fail:
            raise StoreError("connection lost")
        if nonce in self.used:
            return False
        self.used[nonce] = expires_at
        return True


async def test_with_shared_marks_a_token_starts_one_stream_across_processes() -> None:
    """Two processes (two StreamTokens, one secret) on one store: the token /voice of
    either issued starts one stream, whichever process the start reaches."""
    marks = Marks()
    a, b = tokens(marks=marks), tokens(marks=marks)
    params = a.issue(CALL, CALLER, CALLED, "demo")
    claims = await b.accept_start(params, CALL)
    assert claims.flow == "demo" and marks.used == {claims.nonce: float(claims.expires)}
    for t in (a, b):
        with pytest.raises(StartRejected) as info:
            await t.accept_start(params, CALL)
        assert info.value.reason == "replayed"
    assert a.used == b.used == 0  # nothing kept in process memory


async def test_unreachable_marks_refuse_the_start() -> None:
    """Fail closed: a store that cannot say whether a token was used starts nothing."""
    t = tokens(marks=Marks(fail=True))
    with pytest.raises(StartRejected) as info:
        await t.accept_start(t.issue(CALL, CALLER, CALLED, "demo"), CALL)
    assert info.value.reason == "busy"
