"""The Realtime API's wire format, pure: client messages out, typed server events in.

Two dialects are spoken. GA (`gpt-realtime`): `session.update` with `type: "realtime"` and
an `audio` block (`audio/pcmu` both ways), output events `response.output_audio.delta`
and `response.output_audio_transcript.done`. Beta (`gpt-4o-realtime-preview`, header
`OpenAI-Beta: realtime=v1`, and some compatible servers): a flat session
(`input_audio_format: "g711_ulaw"`) and `response.audio.delta`,
`response.audio_transcript.done`. Outgoing messages follow the dialect the session
chose; incoming ones are accepted under either name, since the two differ only there.

Twilio's 8 kHz µ-law goes to the provider and comes back as it is (base64 in JSON): no
decoding, no resampling, so the bytes a caller hears are the bytes the model produced.

A transcription session (`intent="transcription"`, the remote streaming recognizer) is
the same socket opened with `?intent=transcription` instead of `?model=`: GA configures it
with a `session.update` of `type: "transcription"`, beta with `transcription_session.update`
(and answers `transcription_session.created` / `.updated`); its input is 24 kHz PCM16,
the only PCM rate the API takes, with no turn detection: the client commits the buffer.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from ivr.providers.usage import realtime_token_units

__all__ = [
    "TRANSCRIPTION_RATE",
    "AudioDelta",
    "AudioDone",
    "Closed",
    "EventDecoder",
    "FunctionCall",
    "InputTranscript",
    "InputTranscriptDelta",
    "InputTranscriptFailed",
    "OutputTranscript",
    "RealtimeConfig",
    "RealtimeError",
    "RealtimeEvent",
    "ResponseDone",
    "SessionEvent",
    "SpeechStarted",
    "SpeechStopped",
    "audio_append",
    "audio_commit",
    "connect_params",
    "function_output",
    "is_beta_session",
    "item_truncate",
    "realtime_url",
    "response_cancel",
    "response_create",
    "session_update",
    "usage_units",
]

log = structlog.get_logger(__name__)

# The sample rate of a transcription session's PCM16 input (`audio/pcm` takes no other).
TRANSCRIPTION_RATE = 24000


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """One call's Realtime session: where, as whom, and what the model is told.

    `tools` are function tools in the Realtime form (`{"type": "function", "name",
    "description", "parameters"}`); the chat-completions form (`{"type": "function",
    "function": {...}}`) is accepted and flattened. `beta` asks for the beta dialect
    (the `OpenAI-Beta` header); the server's `session.created` has the last word.

    `intent="transcription"` opens a transcription session instead of a conversation:
    `model` is then the transcription model (`gpt-4o-transcribe`), biased by
    `transcription_prompt`, and the conversation fields are unused.
    """

    url: str  # ws:// or wss://, without the query (`?model=` is added)
    api_key: str | None
    model: str
    voice: str | None = None
    instructions: str = ""
    tools: Sequence[Mapping[str, Any]] = ()
    beta: bool = False
    connect_timeout_s: float = 5.0
    transcription_model: str | None = "whisper-1"
    # Pings this often; an unanswered one ends the session (`Closed("dropped")`) instead
    # of a dead socket leaving the caller in silence until TCP gives up.
    heartbeat_s: float | None = 15.0
    intent: Literal["conversation", "transcription"] = "conversation"
    transcription_prompt: str | None = None
    language: str | None = None  # ISO-639-1 of the caller's speech, for transcription


# --- server events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioDelta:
    item_id: str
    ulaw: bytes  # 8 kHz µ-law exactly as the provider sent it


@dataclass(frozen=True, slots=True)
class AudioDone:
    item_id: str


@dataclass(frozen=True, slots=True)
class OutputTranscript:
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class InputTranscriptDelta:
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    text: str
    # What the transcription was billed (a transcription `usage` object: tokens or
    # duration), when the provider says.
    usage: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    """The transcription of a committed buffer failed (the session goes on)."""

    item_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int  # on the provider's clock: ms of input audio appended so far
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class FunctionCall:
    call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    status: str  # completed, cancelled, incomplete, failed
    usage: dict[str, Any] = field(default_factory=dict, compare=False)
    response_id: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RealtimeError:
    """An `error` event: the request it names failed, the session goes on."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The socket ended: `closed` (we closed it), `server_closed` (a normal close frame
    from the provider) or `dropped` (anything else); always the last event."""

    reason: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """`session.created` / `session.updated`; consumed by the handshake."""

    kind: str
    session: dict[str, Any]


RealtimeEvent = (
    AudioDelta | AudioDone | OutputTranscript | InputTranscriptDelta | InputTranscript
    | InputTranscriptFailed | SpeechStarted | SpeechStopped | FunctionCall | ResponseDone
    | RealtimeError | Closed
)


# --- client messages ------------------------------------------------------------------


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    inner = tool.get("function")
    if isinstance(inner, Mapping):
        return {"type": "function", **inner}
    return dict(tool)


def realtime_url(configured: str | None, base_url: str) -> str:
    """The Realtime endpoint: `IVR_REALTIME_URL`, else the provider's own
    (`https://host/v1` → `wss://host/v1/realtime`)."""
    if configured:
        return configured
    base = base_url.rstrip("/")
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/realtime"


def connect_params(config: RealtimeConfig) -> dict[str, str]:
    """The query of the WebSocket URL: the model for a conversation; for transcription
    only the intent (a `?model=` URL opens a conversation session, which refuses a
    transcription update)."""
    if config.intent == "transcription":
        return {"intent": "transcription"}
    return {"model": config.model}


def session_update(config: RealtimeConfig, beta: bool) -> dict[str, Any]:
    """The `session.update` that sets µ-law both ways, server VAD, the step's instructions
    and tools, and input transcription (for the turn record), in the session's dialect;
    for a transcription session, `transcription_update`."""
    if config.intent == "transcription":
        return transcription_update(config, beta)
    tools = [_tool(t) for t in config.tools]
    transcription = {"model": config.transcription_model}
    if beta:
        session: dict[str, Any] = {
            "modalities": ["audio", "text"], "instructions": config.instructions,
            "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
            "turn_detection": {"type": "server_vad"},
            "tools": tools, "tool_choice": "auto",
        }
        if config.transcription_model:
            session["input_audio_transcription"] = transcription
        if config.voice:
            session["voice"] = config.voice
        return {"type": "session.update", "session": session}
    audio_in: dict[str, Any] = {
        "format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"},
    }
    if config.transcription_model:
        audio_in["transcription"] = transcription
    audio_out: dict[str, Any] = {"format": {"type": "audio/pcmu"}}
    if config.voice:
        audio_out["voice"] = config.voice
    return {"type": "session.update", "session": {
        "type": "realtime", "model": config.model, "instructions": config.instructions,
        "output_modalities": ["audio"], "audio": {"input": audio_in, "output": audio_out},
        "tools": tools, "tool_choice": "auto",
    }}


def transcription_update(config: RealtimeConfig, beta: bool) -> dict[str, Any]:
    """A transcription session's update: 24 kHz PCM16 in, `config.model` transcribing
    (with the prompt and language when given), no turn detection (the client commits)."""
    transcription: dict[str, Any] = {"model": config.model}
    if config.transcription_prompt:
        transcription["prompt"] = config.transcription_prompt
    if config.language:
        transcription["language"] = config.language
    if beta:
        return {"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": transcription,
            "turn_detection": None,
        }}
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": TRANSCRIPTION_RATE},
        "transcription": transcription, "turn_detection": None,
    }}}}


_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'


def audio_append(ulaw: bytes) -> str:
    """`input_audio_buffer.append` as JSON text, built without `json.dumps`: it is sent
    every 20 ms per call, and base64 needs no escaping."""
    return _APPEND_HEAD + base64.b64encode(ulaw).decode("ascii") + '"}'


def audio_commit() -> dict[str, Any]:
    """End of the input: the buffer becomes an item, and its transcription starts."""
    return {"type": "input_audio_buffer.commit"}


def function_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": output,
    }}


def response_create(instructions: str | None = None) -> dict[str, Any]:
    if instructions is None:
        return {"type": "response.create"}
    return {"type": "response.create", "response": {"instructions": instructions}}


def response_cancel() -> dict[str, Any]:
    return {"type": "response.cancel"}


def item_truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": max(0, int(audio_end_ms))}


def is_beta_session(session: Mapping[str, Any]) -> bool | None:
    """Which dialect a `session.created` session object is in (None: cannot tell)."""
    if session.get("type") in ("realtime", "transcription") or "audio" in session:
        return False
    if "input_audio_format" in session or "modalities" in session:
        return True
    return None


def usage_units(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """A `response.done` usage object as billable units (`text_in`, `cached_in`,
    `audio_in`, `text_out`, `audio_out`; `providers.usage.realtime_token_units`)."""
    return realtime_token_units(usage)


# --- decoding -------------------------------------------------------------------------

# Beta names of events whose GA name differs.
_BETA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "transcription_session.created": "session.created",
    "transcription_session.updated": "session.updated",
}


def _str(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    return value if isinstance(value, str) else ""


def _ms(event: Mapping[str, Any], key: str) -> int:
    value = event.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class EventDecoder:
    """Server frames (JSON text) → typed events, one at a time, in order.

    Stateful only for function calls: beta's `response.function_call_arguments.done` does
    not carry the function's name (GA's does), so names are learnt from
    `response.output_item.added`; a call is reported once, by whichever of
    `arguments.done` and `output_item.done` first has everything. A frame that is not a
    JSON object with a `type` is counted in `malformed` and skipped."""

    def __init__(self) -> None:
        self.malformed = 0
        self.beta_seen = False  # a beta-only event name arrived
        self._names: dict[str, str] = {}
        self._reported: set[str] = set()

    def decode(self, text: str | bytes) -> RealtimeEvent | SessionEvent | None:
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.malformed += 1
            return None
        kind: str = event["type"]
        if kind in _BETA:
            self.beta_seen = True
            kind = _BETA[kind]
        try:
            return self._typed(kind, event)
        except (binascii.Error, ValueError):
            self.malformed += 1
            return None

    def _typed(self, kind: str, e: dict[str, Any]) -> RealtimeEvent | SessionEvent | None:
        if kind == "response.output_audio.delta":
            return AudioDelta(_str(e, "item_id"), base64.b64decode(_str(e, "delta"),
                                                                   validate=True))
        if kind == "response.output_audio.done":
            return AudioDone(_str(e, "item_id"))
        if kind == "response.output_audio_transcript.done":
            return OutputTranscript(_str(e, "item_id"), _str(e, "transcript"))
        if kind == "conversation.item.input_audio_transcription.delta":
            return InputTranscriptDelta(_str(e, "item_id"), _str(e, "delta"))
        if kind == "conversation.item.input_audio_transcription.completed":
            usage = e.get("usage")
            return InputTranscript(_str(e, "item_id"), _str(e, "transcript"),
                                   usage if isinstance(usage, dict) else {})
        if kind == "conversation.item.input_audio_transcription.failed":
            error = _error(e.get("error"))
            return InputTranscriptFailed(_str(e, "item_id"), error.code, error.message)
        if kind == "input_audio_buffer.speech_started":
            return SpeechStarted(_ms(e, "audio_start_ms"), _str(e, "item_id"))
        if kind == "input_audio_buffer.speech_stopped":
            return SpeechStopped(_ms(e, "audio_end_ms"), _str(e, "item_id"))
        if kind in ("response.output_item.added", "response.output_item.done"):
            return self._item(kind, e.get("item"))
        if kind == "response.function_call_arguments.done":
            call_id = _str(e, "call_id")
            return self._call(call_id, _str(e, "name") or self._names.get(call_id, ""),
                              _str(e, "arguments"))
        if kind == "response.done":
            return _response_done(e.get("response"))
        if kind == "error":
            return _error(e.get("error"))
        if kind in ("session.created", "session.updated"):
            session = e.get("session")
            return SessionEvent(kind, session if isinstance(session, dict) else {})
        log.debug("realtime_event_ignored", type=kind)
        return None

    def _item(self, kind: str, item: object) -> FunctionCall | None:
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return None
        call_id, name = _str(item, "call_id"), _str(item, "name")
        if name:
            self._names[call_id] = name
        if kind == "response.output_item.done":
            return self._call(call_id, name, _str(item, "arguments"))
        return None

    def _call(self, call_id: str, name: str, arguments: str) -> FunctionCall | None:
        if not call_id or not name or call_id in self._reported:
            return None
        self._reported.add(call_id)
        self._names.pop(call_id, None)
        return FunctionCall(call_id, name, arguments or "{}")


def _response_done(response: object) -> ResponseDone:
    if not isinstance(response, dict):
        return ResponseDone("unknown")
    usage = response.get("usage")
    return ResponseDone(_str(response, "status") or "unknown",
                        usage if isinstance(usage, dict) else {}, _str(response, "id"))


def _error(error: object) -> RealtimeError:
    if not isinstance(error, dict):
        return RealtimeError("unknown", str(error))
    code = _str(error, "code") or _str(error, "type") or "unknown"
    return RealtimeError(code, _str(error, "message"))
