"""What the request handlers share: one `Services` object in the app, under `SERVICES`."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import aiohttp
import structlog
from aiohttp import web

from ivr.config import Settings
from ivr.errors import StoreError
from ivr.telephony.stream_token import StreamTokens, secret_for

if TYPE_CHECKING:
    from ivr.analytics.metrics import Metrics
    from ivr.analytics.pricing import Pricing
    from ivr.flows.library import FlowLibrary
    from ivr.flows.model import Flow
    from ivr.llm.client import ChatClient
    from ivr.speech.base import Recognizer, Synthesizer
    from ivr.speech.cache import CachedSynthesis
    from ivr.store.db import CallStore
    from ivr.tools.registry import ToolRegistry

log = structlog.get_logger("ivr.server")


# What every call hears when the server has to end it (a drain ran out of time). Fixed
# words, prewarmed with each flow's voice like the flows' own static prompts.
SHUTDOWN_PROMPT = "We have to end this call now. Please call back."
SERVER_PROMPTS = (SHUTDOWN_PROMPT,)


class LiveCall(Protocol):
    """A call in progress, as the server sees it (a `session.call.CallSession`)."""

    stream_sid: str
    call_sid: str

    async def end(self, reason: str) -> None: ...

    def prompts_played(self) -> list[dict[str, str]]:
        """[{mark, text, state}] of every prompt played so far, in order."""

    async def shut_down(self, *, budget_s: float) -> None:
        """The server is going away: say `SHUTDOWN_PROMPT` (within `budget_s`; none
        when 0), end the call with outcome `shutdown` and hang up. Idempotent."""


@dataclass(slots=True)
class Services:
    settings: Settings
    store: CallStore | None = None
    recognizer: Recognizer | None = None
    synthesizer: Synthesizer | None = None
    library: FlowLibrary | None = None
    calls: dict[str, LiveCall] = field(default_factory=dict)  # by stream SID
    # Transfers waiting for Twilio to fetch <Connect action>: call SID -> number to dial.
    # Parked in the store (any process may get that request); this dict only without a
    # store, or when the store refused one (`park_transfer`).
    transfers: dict[str, str] = field(default_factory=dict)
    # Plain counts for /healthz (protocol errors by reason, calls by outcome, stream
    # events); `metrics` is the Prometheus registry behind /metrics.
    counters: Counter[str] = field(default_factory=Counter)
    tools: ToolRegistry | None = None
    # `server.memory`: heap trims so far, and `calls_started` at the last one (None: the
    # server does not trim); /healthz shows whether calls ended since.
    heap_trims: int = 0
    heap_trimmed_through: int | None = None
    speech_cache: CachedSynthesis | None = None
    metrics: Metrics = field(default_factory=lambda: _metrics())
    pricing: Pricing | None = None
    http: aiohttp.ClientSession | None = None  # shared by providers and webhook tools
    llm: ChatClient | None = None  # set when IVR_LLM_BASE_URL is: `llm` steps run agents
    _static: dict[int, tuple[Flow, frozenset[str]]] = field(default_factory=dict)
    # The stream start's signing key and the tokens already used (see
    # telephony/stream_token.py): /voice issues, /media accepts each token once.
    stream_tokens: StreamTokens = field(init=False)
    # Set once SIGTERM arrives and never cleared: /readyz answers 503 and no new call
    # starts (admission control reads it too), while the live calls go on.
    draining: bool = False
    # The recognizer workers' start, in the background (owned by the engines context),
    # and whether it has succeeded.
    workers_starting: asyncio.Task[None] | None = None
    recognizer_ready: bool = False
    # The start-up prewarm, running in the background (owned by the flows context).
    prewarming: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.stream_tokens = StreamTokens(secret_for(s.stream_secret, s.twilio_auth_token),
                                          ttl_s=s.stream_token_ttl_s)

    async def park_transfer(self, call_sid: str, number: str) -> None:
        """Park the number a call is to be transferred to until `/connect-action`."""
        if self.store is not None:
            try:
                await self.store.park_transfer(call_sid, number)
                return
            except StoreError as exc:  # this process may still get the request
                log.warning("transfer_park_failed", call_sid=call_sid, error=str(exc))
        self.transfers[call_sid] = number

    async def take_transfer(self, call_sid: str) -> str | None:
        """The number parked for `call_sid`, taken (dialed once); None if none."""
        number = self.transfers.pop(call_sid, None)
        if number is None and self.store is not None and call_sid:
            try:
                number = await self.store.take_transfer(call_sid)
            except StoreError as exc:  # the call hangs up rather than waiting on the store
                log.error("transfer_take_failed", call_sid=call_sid, error=str(exc))
        return number

    def voice_for(self, flow: Flow) -> tuple[str, int]:
        """The voice and rate calls of `flow` speak with. A flow's `voice.name` is an
        espeak voice; with a remote synthesizer configured its `voice.remote` (else the
        provider's configured voice) is used instead, since the two share no names."""
        s, v = self.settings, flow.voice
        rate = v.rate if v is not None and v.rate else s.voice_rate
        if s.tts is not None:
            return (v.remote if v is not None and v.remote else s.tts.voice or "alloy"), rate
        return (v.name if v is not None and v.name else s.voice), rate

    def static_prompts(self, flow: Flow) -> frozenset[str]:
        """The flow's template-free prompts and the server's own (`SERVER_PROMPTS`): what
        comes from the synthesis cache (memoized per flow object: reloads make new ones)."""
        entry = self._static.get(id(flow))
        if entry is None or entry[0] is not flow:
            from ivr.flows.prompts import static_prompts

            entry = (flow, frozenset(static_prompts(flow)) | frozenset(SERVER_PROMPTS))
            self._static[id(flow)] = entry
        return entry[1]

    @property
    def ready(self) -> bool:
        """Ready for calls: flows loaded, store open, recognizer workers up, not draining."""
        return (not self.draining and self.recognizer_ready and self.store is not None
                and bool(self.flows))

    @property
    def flows(self) -> dict[str, Flow]:
        return self.library.flows if self.library is not None else {}


def _metrics() -> Metrics:
    from ivr.analytics.metrics import Metrics

    return Metrics()


SERVICES = web.AppKey("services", Services)
