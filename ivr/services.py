"""What the request handlers share: one `Services` object in the app, under `SERVICES`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from ivr.config import Settings

if TYPE_CHECKING:
    from ivr.call import CallSession
    from ivr.flows.model import Flow
    from ivr.speech.base import Recognizer, Synthesizer
    from ivr.store.db import CallStore


@dataclass(slots=True)
class Services:
    settings: Settings
    store: CallStore | None = None
    recognizer: Recognizer | None = None
    synthesizer: Synthesizer | None = None
    flows: dict[str, Flow] = field(default_factory=dict)
    calls: dict[str, CallSession] = field(default_factory=dict)
    # Counters until the Prometheus registry lands: protocol errors by reason, calls, ...
    counters: Counter[str] = field(default_factory=Counter)


SERVICES = web.AppKey("services", Services)
