"""The frames the pool and a recognition worker exchange over the worker's stdin/stdout.

Every message is a frame: 1 byte type, 4 byte big-endian payload length, payload.

parent -> worker
  BEGIN  "B"  4-byte utterance id + JSGF grammar (UTF-8; empty = the language model)
  AUDIO  "A"  4-byte id + 16 kHz mono PCM16 (a worker holds several utterances at once)
  END    "E"  4-byte id: no more audio, reply with RESULT
  CANCEL "C"  4-byte id: drop the utterance, reply with DROPPED
worker -> parent
  READY  "Y"  JSON {"pid", "load_seconds"} once the models are loaded
  RESULT "R"  JSON {"id", "text", "confidence", "score", "audio_seconds", "cpu_seconds",
              "search", "error"}
  PARTIAL "P" JSON {"id", "text"}: the hypothesis so far, sent after a decoded block
              when it changed, until END (grammar-aware endpointing reads it)
  DROPPED "D" 4-byte id: a CANCEL was read (known id or not). The pool's proof that a
              worker it asked to drop a stuck utterance is still alive, so it need not be
              killed with the other utterances it holds.

Pure framing, no I/O and no pocketsphinx: both sides import it.
"""

from __future__ import annotations

import struct
from typing import Final

from ivr.errors import SpeechError

__all__ = [
    "AUDIO",
    "BEGIN",
    "BLOCK_BYTES",
    "CANCEL",
    "DROPPED",
    "END",
    "HEADER",
    "MAX_PAYLOAD",
    "PARTIAL",
    "READY",
    "RESULT",
    "SAMPLE_RATE",
    "UTTERANCE_ID",
    "FrameParser",
    "WireError",
    "encode_frame",
]

BEGIN: Final = b"B"
AUDIO: Final = b"A"
END: Final = b"E"
CANCEL: Final = b"C"
READY: Final = b"Y"
RESULT: Final = b"R"
PARTIAL: Final = b"P"
DROPPED: Final = b"D"

HEADER: Final = struct.Struct(">cI")
UTTERANCE_ID: Final = struct.Struct(">I")
MAX_PAYLOAD: Final = 16 * 1024 * 1024  # 8 minutes of audio; anything larger is a broken stream

SAMPLE_RATE: Final = 16000
BLOCK_BYTES: Final = SAMPLE_RATE * 2 // 10  # 100 ms: fine-grained enough to notice CANCEL promptly


class WireError(SpeechError):
    """A frame that cannot be parsed: the stream is out of sync and cannot be trusted."""


def encode_frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameParser:
    """Incremental frame decoder for a byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buf += data
        frames: list[tuple[bytes, bytes]] = []
        while len(self._buf) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buf)
            if length > MAX_PAYLOAD:
                raise WireError(f"frame of {length} bytes")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((kind, bytes(self._buf[HEADER.size : end])))
            del self._buf[:end]
        return frames
