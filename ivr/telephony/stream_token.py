"""The signed stream start: `/voice` vouches for a call, `/media` accepts only what it vouched for.

Anyone who can reach `/media` can send a `start` frame, and everything in it (the
CallSid, and in `customParameters` the caller's number and the flow) is theirs to
choose. So `/voice`, which only Twilio reaches once signatures are on, mints a token
and puts it in a `<Parameter name="token">` beside `from`, `to` and `flow`; Twilio
copies the `<Parameter>`s into the `start` frame, and `/media` starts a call only when
the token verifies over exactly those values and the `start`'s CallSid:

    v1.<CallSid>.<expires, unix s>.<nonce, 32 hex>.<HMAC-SHA256, base64url>

The MAC covers the version, CallSid, caller, called number, flow, expiry and nonce (a
JSON array: unambiguous). The values travel as their own `<Parameter>`s rather than
inside the token because Twilio caps each `<Parameter>` at 500 characters and a SIP
`From` can be long. A token is used once: its nonce is remembered until it expires, in
the store when the server has one (`UsedMarks`, `CallStore.use_token`: `/voice` and
`/media` of one call may reach different processes, and a replay another one), else in
this process's memory.

The secret (`secret_for`): `IVR_STREAM_SECRET`, else derived from `TWILIO_AUTH_TOKEN`,
else random bytes drawn when the server starts. The token is required in every case.

Pure apart from the injected clock and the used-nonce memory (or port).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol, get_args

from ivr.errors import InvalidValue, IvrError, StoreError
from ivr.phone import caller_identity

__all__ = [
    "REJECT_REASONS",
    "TOKEN_PARAMETER",
    "RejectReason",
    "StartRejected",
    "StreamClaims",
    "StreamTokens",
    "UsedMarks",
    "secret_for",
]

TOKEN_PARAMETER: Final = "token"

# A closed set: the reasons are counted per label (services.counters, Prometheus).
RejectReason = Literal[
    "missing",  # no token parameter
    "malformed",  # not a token of ours at all
    "bad_signature",  # the MAC does not cover these values (a parameter was changed)
    "expired",
    "call_sid_mismatch",  # a genuine token for another call
    "replayed",  # a token already used by an earlier start
    "busy",  # the used-token memory is full of live tokens, or unreachable (fail closed)
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)

_VERSION = "v1"
_TOKEN_RE = re.compile(
    r"v1\.([A-Za-z0-9]{1,64})\.([1-9][0-9]{0,11})\.([0-9a-f]{32})\.([A-Za-z0-9_-]{43})"
)
_MAX_TOKEN = 200
_CALL_SID_RE = re.compile(r"[A-Za-z0-9]{1,64}")
def secret_for(stream_secret: str, twilio_auth_token: str) -> bytes:
    """The key tokens are signed with: the configured one, else one derived from the auth
    token (so every process of a Twilio-signed service agrees), else a fresh random one."""
    if stream_secret:
        return stream_secret.encode()
    if twilio_auth_token:
        return hmac.new(twilio_auth_token.encode(), b"ivr-stream-token", hashlib.sha256).digest()
    return secrets.token_bytes(32)


class StartRejected(IvrError):
    """A `start` the server did not vouch for; `reason` is one of `REJECT_REASONS`."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(reason, message)
        self.reason: RejectReason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True, slots=True)
class StreamClaims:
    """What `/voice` vouched for: the only source of a call's identity and flow."""

    call_sid: str
    caller: str
    """The caller's number, "" when anonymous (withheld or not a number)."""
    called: str
    flow: str
    """The flow `/voice` chose (`?flow=`), "" to route by the called number."""
    expires: int
    nonce: str

    def parameters(self, token: str) -> dict[str, str]:
        """The `<Parameter>`s that carry these claims and their token."""
        return {"flow": self.flow, "from": self.caller, "to": self.called,
                TOKEN_PARAMETER: token}


class UsedMarks(Protocol):
    """Where used nonces are marked, shared by every process (the call store)."""

    async def use_token(self, nonce: str, expires_at: float) -> bool:
        """Mark `nonce` used until `expires_at` (unix s); False if it already was."""
        ...


class StreamTokens:
    """Mints tokens for `/voice`, accepts each at most once for `/media`.

    With `marks` (set once the store is open), `spend` marks a nonce used there, so a
    token is spent once across processes. Without, used nonces are remembered in memory
    until their token expires, at most `max_used` of them; when that many live tokens
    have been used, further starts are refused (`busy`) rather than forgetting one,
    which would let it be replayed.
    """

    def __init__(
        self, secret: bytes, *, ttl_s: int = 300, clock: Callable[[], float] = time.time,
        max_used: int = 100_000, marks: UsedMarks | None = None,
    ) -> None:
        if not secret:
            raise TypeError("a stream token secret must not be empty")
        self._secret = secret
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_used = max_used
        self.marks = marks
        self._used: set[str] = set()
        self._expiry: list[tuple[int, str]] = []  # a heap of (expires, nonce) for _used

    def issue(self, call_sid: str, from_: str, to: str, flow: str) -> dict[str, str]:
        """The `<Parameter>`s for a call: `from` (an identity or ""), `to`, `flow`, `token`.

        Raises `InvalidValue` for a CallSid that is not 1-64 letters and digits (Twilio's
        are `CA` and 32 hex digits)."""
        if not _CALL_SID_RE.fullmatch(call_sid):
            raise InvalidValue(f"CallSid {call_sid[:70]!r} is not a Twilio call SID")
        claims = StreamClaims(
            call_sid=call_sid, caller=caller_identity(from_), called=to, flow=flow,
            expires=int(self.clock()) + self.ttl_s, nonce=secrets.token_hex(16),
        )
        token = f"{_VERSION}.{call_sid}.{claims.expires}.{claims.nonce}.{self._mac(claims)}"
        return claims.parameters(token)

    def accept(self, parameters: Mapping[str, str], call_sid: str) -> StreamClaims:
        """`verify`, then spend the token in this process's memory (no `marks`)."""
        claims = self.verify(parameters, call_sid)
        self._spend(claims, self.clock())
        return claims

    async def accept_start(self, parameters: Mapping[str, str], call_sid: str) -> StreamClaims:
        """The claims of a `start` with these customParameters and CallSid; the token is
        spent (in `marks` when set). Raises `StartRejected` for anything `/voice` did
        not issue for this call, or for a token already used."""
        claims = self.verify(parameters, call_sid)
        await self.spend(claims)
        return claims

    async def spend(self, claims: StreamClaims) -> None:
        """Mark a verified token used; `StartRejected("replayed")` if it already was. A
        store that cannot say refuses the start (`busy`): fail closed."""
        if self.marks is None:
            self._spend(claims, self.clock())
            return
        try:
            fresh = await self.marks.use_token(claims.nonce, claims.expires)
        except StoreError as exc:
            raise StartRejected("busy", f"the used-token marks are unreachable: {exc}") from exc
        if not fresh:
            raise StartRejected("replayed", "the token was used by an earlier start")

    def verify(self, parameters: Mapping[str, str], call_sid: str) -> StreamClaims:
        """The claims of a `start` with these customParameters and CallSid, not yet
        spent. Raises `StartRejected` for anything `/voice` did not issue for this call."""
        token = parameters.get(TOKEN_PARAMETER)
        if not token:
            raise StartRejected("missing", "the start carries no token parameter")
        match = _TOKEN_RE.fullmatch(token) if len(token) <= _MAX_TOKEN else None
        if match is None:
            raise StartRejected("malformed", "the token parameter is not a stream token")
        token_sid, expires, nonce, mac = match.groups()
        claims = StreamClaims(
            call_sid=token_sid, caller=parameters.get("from", ""),
            called=parameters.get("to", ""), flow=parameters.get("flow", ""),
            expires=int(expires), nonce=nonce,
        )
        if not hmac.compare_digest(mac.encode(), self._mac(claims).encode()):
            raise StartRejected("bad_signature", "the token does not cover these parameters")
        now = self.clock()
        if claims.expires <= now:
            raise StartRejected("expired", f"the token expired {now - claims.expires:.0f} s ago")
        if not hmac.compare_digest(token_sid.encode(), call_sid.encode()):
            raise StartRejected("call_sid_mismatch", "the token was issued for another call")
        return claims

    @property
    def used(self) -> int:
        """Used tokens still remembered (until they expire)."""
        return len(self._used)

    def _spend(self, claims: StreamClaims, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            self._used.discard(heapq.heappop(expiry)[1])
        if claims.nonce in self._used:
            raise StartRejected("replayed", "the token was used by an earlier start")
        if len(self._used) >= self.max_used:
            raise StartRejected("busy", f"{len(self._used)} live tokens in use; refusing more")
        self._used.add(claims.nonce)
        heapq.heappush(expiry, (claims.expires, claims.nonce))

    def _mac(self, claims: StreamClaims) -> str:
        message = json.dumps(
            [_VERSION, claims.call_sid, claims.caller, claims.called, claims.flow,
             claims.expires, claims.nonce],
            separators=(",", ":"),
        ).encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
