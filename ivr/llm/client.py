"""Streaming chat completions from an OpenAI-compatible provider, as typed deltas.

The agent wants text as soon as it is generated (the first sentence can be synthesized
while the model is still writing the second) and tool calls only once they are whole, so
this module turns the server-sent event stream into `TextDelta`s as they come and
`ToolCallDone`s assembled across chunks. Transport failures are the provider client's
`ProviderError`s; a stream we cannot parse is `ProviderBadResponse`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from ivr.providers.http import (
    ProviderBadResponse,
    ProviderClient,
    ProviderTimeout,
    ProviderUnavailable,
)
from ivr.providers.limiter import estimate_tokens
from ivr.providers.usage import token_units

__all__ = [
    "ChatClient",
    "ChatDelta",
    "Finish",
    "TextDelta",
    "ToolCallDone",
    "Usage",
]

_PATH = "/chat/completions"


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    id: str
    name: str  # as the model sent it: the function-calling form ("bookings__book")
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # The same tokens as disjoint billable units (`providers.usage.token_units`: text,
    # cached, audio, in and out), for the call's cost.
    units: dict[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


ChatDelta = TextDelta | ToolCallDone | Usage | Finish
ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatClient:
    """`stream()` one chat completion through a resilient `ProviderClient`."""

    def __init__(self, provider: ProviderClient, model: str) -> None:
        self.provider = provider
        self.model = model

    def _bad(self, message: str) -> ProviderBadResponse:
        return ProviderBadResponse(self.provider.name, f"POST {_PATH}: {message}")

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: ToolChoice = "auto",
    ) -> AsyncGenerator[ChatDelta, None]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            # Sent only with tools: some servers reject tool_choice without them.
            body["tools"] = tools
            body["tool_choice"] = tool_choice
        partial: dict[int, _PartialCall] = {}
        done = seen = False
        # The TPM budget counts the prompt as sent (chars / 4): the provider's own count
        # comes only with the usage chunk at the end of the stream.
        tokens = estimate_tokens(body)
        async with self.provider.request(
            "POST", _PATH, json=body, stream=True, tokens=tokens
        ) as resp:
            if resp.content_type != "text/event-stream":
                # A proxy's error page or a server that ignored `stream`: not a reply.
                raise self._bad(f"expected text/event-stream, got {resp.content_type!r}")
            try:
                async for raw in resp.content:
                    line = raw.decode("utf-8", errors="replace").strip()
                    # Blank lines separate events; ":" lines are keep-alive comments;
                    # event:/id:/retry: fields carry nothing for chat completions.
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    seen = True
                    for delta in self._parse(data, partial):
                        yield delta
            except (TimeoutError, aiohttp.ServerTimeoutError) as e:
                raise ProviderTimeout(self.provider.name, f"POST {_PATH}: reading stream") from e
            except aiohttp.ClientError as e:
                raise ProviderUnavailable(
                    self.provider.name, f"POST {_PATH}: stream broke: {e!r}"
                ) from e
            except ValueError as e:  # aiohttp: a line longer than its buffer limit
                raise self._bad(f"unreadable stream: {e}") from e
        if not done and partial:
            # A stream cut before [DONE] with a tool call still open may hold truncated
            # arguments; running a half-received call would be worse than failing.
            raise self._bad("stream ended before [DONE] with an unfinished tool call")
        if not done and not seen:
            raise self._bad("stream ended before any event")
        for call in _drain(partial):
            yield call

    def _parse(self, data: str, partial: dict[int, _PartialCall]) -> list[ChatDelta]:
        try:
            chunk = json.loads(data)
        except ValueError as e:
            raise self._bad(f"malformed JSON in stream chunk: {e}") from e
        if not isinstance(chunk, dict):
            raise self._bad(f"stream chunk is {type(chunk).__name__}, not an object")
        if isinstance(chunk.get("error"), dict):
            # Some servers report a failure mid-stream as an error event with status 200.
            raise self._bad(f"error in stream: {chunk['error'].get('message', chunk['error'])}")
        out: list[ChatDelta] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n=1 is all we ask for
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(TextDelta(text))
            for tc in delta.get("tool_calls") or []:
                if not isinstance(tc, dict):
                    raise self._bad("tool_calls entry is not an object")
                index = tc.get("index", 0)
                if not isinstance(index, int):
                    raise self._bad(f"tool call index {index!r} is not an integer")
                call = partial.setdefault(index, _PartialCall())
                if tc.get("id"):
                    call.id = str(tc["id"])
                fn = tc.get("function") or {}
                if fn.get("name"):
                    # Sent once by OpenAI; some servers repeat it in every chunk.
                    call.name = str(fn["name"])
                if isinstance(fn.get("arguments"), str):
                    call.arguments.append(fn["arguments"])
            reason = choice.get("finish_reason")
            if reason:
                out.extend(_drain(partial))
                out.append(Finish(str(reason)))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            out.append(Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                cached_tokens=int(details.get("cached_tokens") or 0),
                units=token_units(usage),
            ))
        return out


def _drain(partial: dict[int, _PartialCall]) -> list[ChatDelta]:
    """The assembled calls in index order, and forget them (each is emitted once)."""
    calls: list[ChatDelta] = [
        ToolCallDone(
            id=call.id or f"call_{index}",
            name=call.name,
            arguments_json="".join(call.arguments),
        )
        for index, call in sorted(partial.items())
    ]
    partial.clear()
    return calls
