"""The Media Stream's WebSocket: aiohttp's, with fast lanes for media frames in and out.

A call receives 50 media frames a second. Through `async for msg in ws` each one is
queued by aiohttp's frame parser, wakes the handler task, and goes back through
`receive()`: at a thousand calls that wake-up path cost more than all the work done on
the frames (`ivr bench load`). Here the parser hands each text frame to `fast` right
where it decoded it, inside the socket's read callback; `fast` handles it there and
then (and returns True), or declines (False) and the frame takes the queue as usual.

Order is the queue's: `fast` only sees a frame while nothing is queued ahead of it,
and the handler declines while it is in the middle of an `await` on an earlier frame (a
`start`), so frames are handled in the order they came whichever way they go. Control
frames (ping, close) never take the lane: aiohttp answers them in `receive()`.

Out, `write_now` writes a text frame straight to the transport (the frame clock sends
every call's frames in one tick, ~50 a second per call): a header and one write, where
`send_str` costs several coroutines per frame. It steps aside (False) while the peer is
not reading, so the `Writer` waits on aiohttp's drain and nothing piles up unbounded.

This sits on aiohttp internals (its frame parser's queue): where they differ from what
this expects (another aiohttp version), the socket is aiohttp's own, unchanged, and
every frame takes the queue (`lane_open` is False; logged once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import structlog
from aiohttp import WSMsgType, web

__all__ = ["MediaSocket"]

log = structlog.get_logger("ivr.media")

FastLane = Callable[[str], bool]
"""Handle one text frame now (True), or leave it to the queue (False)."""

_lane_failed = False  # logged once per process
# Past this many bytes waiting in the transport, a write takes aiohttp's path, which
# waits for the peer to read (the `Writer` queues behind it): nothing piles up here.
_HIGH_WATER: Final = 64 * 1024

_reader: Any
try:
    from aiohttp._websocket import reader as _reader
except ImportError:  # pragma: no cover - an aiohttp without these internals
    _reader = None
WebSocketDataQueue: Any = getattr(_reader, "WebSocketDataQueue", None)
WebSocketReader: Any = getattr(_reader, "WebSocketReader", None)


def _queue_type() -> Any:
    if WebSocketDataQueue is None:
        return None

    class _Queue(WebSocketDataQueue):  # type: ignore[misc]
        fast: FastLane | None = None

        def feed_data(self, data: Any, size: int) -> None:
            fast = self.fast
            if (fast is not None and not self._buffer and data.type is WSMsgType.TEXT
                    and fast(data.data)):
                return
            super().feed_data(data, size)

    return _Queue


_QUEUE = _queue_type()


def _header(n: int) -> bytes:
    """A server's text frame header (FIN, opcode 1, not masked) for an `n`-byte payload."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


class MediaSocket(web.WebSocketResponse):
    """`web.WebSocketResponse` whose text frames go to `fast` first (see the module)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lane: Any = None  # the queue with the lane, once the socket is open
        self.lane_open = False

    def write_now(self, text: str) -> bool:
        """Write `text` as one text frame at once, below aiohttp's `send_str` (a frame
        header and one transport write, no coroutine): True, or False when it cannot
        (closing, the peer not reading, no transport) and `send_str` must."""
        writer = self._writer
        transport = getattr(writer, "transport", None)
        if (transport is None or self._closed or self._closing or transport.is_closing()
                or transport.get_write_buffer_size() > _HIGH_WATER):
            return False
        data = text.encode()
        transport.write(_header(len(data)) + data)
        return True

    def media_writer(self, prefix: str) -> Callable[[bytes], bool]:
        """`write_now` for media messages of one stream: `prefix` (ASCII, the same in
        every message) encoded and framed once, each frame then one transport write of
        header + prefix + the piece (its tail, ASCII bytes)."""
        pre = prefix.encode("ascii")
        heads: dict[int, bytes] = {}

        def write(piece: bytes) -> bool:
            writer = self._writer
            transport = getattr(writer, "transport", None)
            if (transport is None or self._closed or self._closing
                    or transport.is_closing()
                    or transport.get_write_buffer_size() > _HIGH_WATER):
                return False
            n = len(piece)
            head = heads.get(n)
            if head is None:
                head = heads[n] = _header(len(pre) + n) + pre
            transport.write(head + piece)
            return True

        return write

    def fast_lane(self, fast: FastLane | None) -> None:
        """Send text frames to `fast` from now on (frames queued before take the
        queue: the lane opens only behind them); None closes the lane (and lets go of
        `fast`, which holds the call: do it when the call's read loop ends)."""
        if self._lane is not None:
            self._lane.fast = fast

    def _post_start(self, request: web.BaseRequest, protocol: Any, writer: Any) -> None:
        super()._post_start(request, protocol, writer)
        global _lane_failed
        detail = "aiohttp has no WebSocketDataQueue/WebSocketReader"
        try:
            if _QUEUE is not None and WebSocketReader is not None:
                self._open_lane(request)
        except Exception as exc:  # internals not as expected: the plain socket works
            detail = repr(exc)[:200]
        if not self.lane_open and not _lane_failed:
            _lane_failed = True
            log.warning("media_fast_lane_off", detail=detail)

    def _open_lane(self, request: web.BaseRequest) -> None:
        old = self._reader
        assert old is not None and not old._buffer  # nothing parsed yet: upgrade just done
        queue = _QUEUE(request._protocol, old._limit, loop=self._loop)
        parser = WebSocketReader(queue, self._max_msg_size, compress=bool(self._compress),
                                 decode_text=self._decode_text)
        handler = request.protocol
        assert handler is not None
        callback = handler._data_received_cb
        handler._payload_parser = None  # set_parser takes over only from no parser
        handler.set_parser(parser, data_received_cb=callback)
        self._reader, self._parser = queue, parser
        self._lane = queue
        self.lane_open = True
