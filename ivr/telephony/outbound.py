"""us → Twilio: the frames we send on a Media Stream (media, mark, clear).

Both sides of this direction live here, because the server and the simulated caller
(`ivr.sim`) must agree with Twilio, not just with each other:

    media_message(), mark_message(), clear_message()   the server writing to Twilio
    parse_outbound(frame) -> OutboundMessage           the simulated caller reading as Twilio

`TwilioOutbound` binds the builders to one stream and a write function: it is the
implementation of the player's outbound port (`ivr.audio.player.Outbound`), so the
player sends audio, marks and clears without knowing Twilio's JSON or the stream SID.

Media is encoded once per prompt, not per frame per call: `media_pieces` turns a
prompt's audio into one string per 20 ms frame (its base64 and the JSON that closes the
message), cached by audio content so a static prompt is encoded once per process; a
stream's media message is then its fixed prefix (event, stream SID) + a piece.

The shared frame clock writes every call's frames in one tick, so the writes may not
wait: `Writer` makes an `async` send (aiohttp's `send_str`) non-blocking. It runs the
send's first step at once (it completes there unless the socket's buffer is full); a
send that has to wait on the transport is finished by a task, and later writes queue
behind it, in order (media beyond `max_backlog` are dropped and counted).

The builders and the parser are pure.
"""

from __future__ import annotations

import asyncio
import binascii
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, TypeAlias

from ivr.errors import InvalidValue
from ivr.telephony import wire
from ivr.telephony.wire import DEFAULT_MAX_BYTES

__all__ = [
    "OutClear",
    "OutMark",
    "OutMedia",
    "OutboundMessage",
    "Send",
    "TwilioOutbound",
    "Writer",
    "clear_message",
    "mark_message",
    "media_message",
    "media_pieces",
    "parse_outbound",
]

Send: TypeAlias = Callable[[str], Coroutine[Any, Any, None]]
"""Sends one text frame on the call's WebSocket."""

FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law: one media message
_PIECES_BUDGET = 4 << 20  # bytes of audio whose encoding is kept (~8 min of prompts)


@dataclass(frozen=True, slots=True)
class OutMedia:
    stream_sid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutMark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutClear:
    stream_sid: str


OutboundMessage: TypeAlias = OutMedia | OutMark | OutClear


def media_message(stream_sid: str, payload: bytes) -> str:
    """Outbound audio: one whole chunk of raw 8 kHz µ-law, base64 in a single string."""
    # Built by hand: this runs 50 times a second per call and json.dumps of the
    # dict costs several times more than quoting the one field that needs it.
    return f'{_media_prefix(stream_sid)}{wire.b64(payload)}"}}}}'


def _media_prefix(stream_sid: str) -> str:
    sid = encode_basestring_ascii(wire.check_sid(stream_sid))
    return f'{{"event":"media","streamSid":{sid},"media":{{"payload":"'


_pieces: dict[bytes, tuple[bytes, ...]] = {}
_pieces_bytes = 0


def media_pieces(ulaw: bytes) -> tuple[bytes, ...]:
    """Each 160-byte frame of `ulaw` (a whole number of frames) as the stream-independent
    tail of its media message, ASCII bytes ready for the socket; `media_message` = a
    stream's prefix + piece. Cached by content (least recently used out past a budget):
    static prompts repeat."""
    global _pieces_bytes
    if not ulaw or len(ulaw) % FRAME_BYTES:
        raise InvalidValue(f"media must be whole {FRAME_BYTES}-byte frames")
    found = _pieces.pop(ulaw, None)
    if found is None:
        b2a = binascii.b2a_base64
        found = tuple(b2a(ulaw[i:i + FRAME_BYTES], newline=False) + b'"}}'
                      for i in range(0, len(ulaw), FRAME_BYTES))
        _pieces_bytes += len(ulaw)
        while _pieces and _pieces_bytes > _PIECES_BUDGET:
            _pieces_bytes -= len(_pieces.pop(next(iter(_pieces))))
    _pieces[ulaw] = found  # (re)inserted last: the most recently used
    return found


def mark_message(stream_sid: str, name: str) -> str:
    return wire.dump(
        {"event": "mark", "streamSid": wire.check_sid(stream_sid), "mark": {"name": name}}
    )


def clear_message(stream_sid: str) -> str:
    return wire.dump({"event": "clear", "streamSid": wire.check_sid(stream_sid)})


def parse_outbound(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> OutboundMessage:
    """Parse one frame we sent Twilio (the simulated caller's side of the socket)."""
    data = wire.load(text, max_bytes)
    event = wire.string(data, "event", "")
    if event == "media":
        media = wire.obj(data, "media", "")
        return OutMedia(wire.sid(data, "streamSid", ""), wire.payload(media, "media."))
    if event == "mark":
        mark = wire.obj(data, "mark", "")
        return OutMark(wire.sid(data, "streamSid", ""), wire.string(mark, "name", "mark."))
    if event == "clear":
        return OutClear(wire.sid(data, "streamSid", ""))
    wire.fail("unknown_event", f"unknown outbound event {event[:40]!r}")


class Writer:
    """Non-blocking, in-order writes over an async `send` (see the module docstring)."""

    __slots__ = ("_backlog", "_max", "_now", "_send", "_task", "broken", "dropped")

    def __init__(self, send: Send, *, max_backlog: int = 500,
                 now: Callable[[str], bool] | None = None) -> None:
        self._send = send
        # Writes a frame at once if it can (True): `telephony.socket.MediaSocket.write_now`.
        self._now = now
        self._max = max_backlog
        self._backlog: deque[str] = deque()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # media dropped behind a socket backed up past max_backlog
        self.broken = False  # a send failed: the socket is gone, later writes are dropped

    @property
    def waiting(self) -> int:
        """Writes queued behind a send that waits on the transport."""
        return len(self._backlog) + (self._task is not None)

    async def drained(self) -> None:
        """Wait until every write queued behind a slow send went out (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def __call__(self, text: str, *, droppable: bool = False) -> None:
        if self.broken:
            return
        if self._task is not None:
            if droppable and len(self._backlog) >= self._max:
                self.dropped += 1
            else:
                self._backlog.append(text)
            return
        if self._now is not None and self._now(text):
            return
        coro = self._send(text)
        try:
            waits_on = coro.send(None)
        except StopIteration:
            return  # written at once: the usual case
        except Exception:
            self.broken = True
            return
        self._task = asyncio.create_task(self._finish(coro, waits_on))

    async def _finish(self, coro: Coroutine[Any, Any, None], waits_on: Any) -> None:
        try:
            await _resume(coro, waits_on)
            while self._backlog:
                await self._send(self._backlog.popleft())
        except Exception:
            self.broken = True
            self._backlog.clear()
        finally:
            self._task = None


async def _resume(coro: Coroutine[Any, Any, None], waits_on: Any) -> None:
    """Drive a coroutine whose first step already ran and yielded `waits_on` (what it
    waits for, as a task would), to its end."""
    while True:
        try:
            if waits_on is None:
                await asyncio.sleep(0)  # a bare yield: it only gave way
            else:
                await waits_on
        except BaseException as exc:  # cancelled, or the wait failed: the send sees it
            try:
                waits_on = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waits_on = coro.send(None)
        except StopIteration:
            return


MediaWrite: TypeAlias = Callable[[bytes], bool]
"""Writes a media message's tail (a piece) behind the stream's prefix as one frame at
once if it can (True); from `telephony.socket.MediaSocket.media_writer`."""


class TwilioOutbound:
    """One Media Stream's outbound side: audio, marks and clears as Twilio frames.

    `write` must not block (a `Writer`); media writes are the ones it may drop. With a
    `Writer` and `raw` (the socket's `media_writer` for this stream's prefix), a media
    frame goes straight to the socket while the writer has nothing queued: the frame
    clock's hot path, ~50 frames a second per call."""

    __slots__ = ("_prefix", "_raw", "_stream_sid", "_write", "_writer")

    def __init__(self, write: Callable[..., None], stream_sid: str, *,
                 raw: Callable[[str], MediaWrite] | None = None) -> None:
        self._write = write
        self._stream_sid = stream_sid
        self._prefix = _media_prefix(stream_sid)
        self._writer = write if isinstance(write, Writer) else None
        self._raw = raw(self._prefix) if raw is not None and self._writer is not None else None

    @property
    def media_prefix(self) -> str:
        """What precedes every piece in this stream's media messages."""
        return self._prefix

    def encode(self, ulaw: bytes) -> tuple[bytes, ...]:
        return media_pieces(ulaw)

    def media(self, piece: bytes) -> None:
        raw = self._raw
        if raw is not None and self._writer._task is None and raw(piece):  # type: ignore[union-attr]
            return
        self._write(self._prefix + piece.decode("ascii"), droppable=True)

    def mark(self, name: str) -> None:
        self._write(mark_message(self._stream_sid, name))

    def clear(self) -> None:
        self._write(clear_message(self._stream_sid))
