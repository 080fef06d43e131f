"""A call's record: its turns with their timings, its usage and cost, its end.

A turn is the prompts played since the last answer plus the answer (speech, keys, or no
input). It is opened when an answer starts being taken (`open_turn`), filled in from the
runner's reading (`read`, or `read_free` inside an `llm` step), and written once the
reply's first frame has left (`replied`), so `response_ms` measures voice to voice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import structlog

from ivr.analytics.usage import UsageLedger
from ivr.audio.player import Prompt
from ivr.flows import engine
from ivr.server.services import Services
from ivr.store.db import ABANDONED, COMPLETED, DROPPED, FAILED, SHUTDOWN, TRANSFERRED, TurnRecord

END_WRITE_WAIT_S = 1.0

_FLOW_OUTCOMES = {
    "completed": COMPLETED, "fallback": COMPLETED, "goto_flow": COMPLETED,
    "hangup": ABANDONED, "error": FAILED, "transferred": TRANSFERRED,
}


# Stage durations a turn's timings carry for the latency metrics (p50/p95/p99 per stage):
# from a span's start to its first byte/token, or to its end for stages without one.
_SPAN_METRIC = {"stt": ("stt_ms", "end"), "llm": ("llm_first_token_ms", "first"),
                "tts": ("tts_first_byte_ms", "first"), "tool": ("tool_ms", "end")}


class SpanTimer:
    """One provider stage serving this call: asked now, `first()` byte or token, `done()`.
    Kept in the turn it serves, which is written again if it was flushed before the stage
    ended (a reply streams on after its first frame)."""

    __slots__ = ("_record", "_turn", "span")

    def __init__(
        self, record: CallRecord, turn: TurnRecord | None, stage: str, start: float,
    ) -> None:
        self._record = record
        self._turn = turn
        self.span: dict[str, Any] = {"stage": stage, "provider": "", "start": start}

    def first(self) -> None:
        if "first" not in self.span:
            self.span["first"] = self._record.ms()
            self._metric("first")

    def done(self, provider: str) -> None:
        if "end" in self.span:
            return
        self.span["provider"] = provider
        self.span["end"] = self._record.ms()
        self._metric("end")
        self._record.span_ended(self._turn)

    def _metric(self, point: str) -> None:
        key, at = _SPAN_METRIC.get(self.span["stage"], ("", ""))
        timings = self._turn.timings if self._turn is not None else None
        if at != point or timings is None or (key in timings and at == "first"):
            return
        ms = round(self.span[point] - self.span["start"], 1)
        timings[key] = round(timings.get(key, 0.0) + ms, 1) if at == "end" else ms


def call_outcome(runner: engine.FlowRunner, reason: str) -> str:
    """How the call ended for the record: from the flow when it finished, else from why
    the stream ended (`stop`: the caller hung up; `shutdown`: the server ended it)."""
    if not runner.done:
        return {"stop": ABANDONED, "shutdown": SHUTDOWN}.get(reason, DROPPED)
    return _FLOW_OUTCOMES.get(runner.outcome or "", COMPLETED)


class CallRecord:
    """One call's turns and usage, written to the store and the metrics."""

    def __init__(
        self, services: Services, call_sid: str, stats: Counter[str],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.services = services
        self.call_sid = call_sid
        self.stats = stats
        self.log = log
        self.t0 = time.monotonic()
        self.labels: dict[str, str] = {}  # which engines/models the usage counts are for
        self.usage = UsageLedger()  # units per engine that served a request
        self.stt_audio_s = 0.0  # seconds of caller audio sent to recognition
        self.stt_cpu_s = 0.0  # CPU the embedded recognizer spent on them (worker processes)
        self._seq = 0
        self.turn: TurnRecord | None = None  # the turn awaiting its reply's first frame
        self.pending: TurnRecord | None = None  # the turn whose answer is being taken
        self._orphans: list[dict[str, Any]] = []  # spans before the first turn opened
        self._flushed: set[int] = set()  # turns already written (by seq)
        self._responses: list[float] = []  # voice-to-voice of each turn, ms

    def ms(self) -> float:
        """Now, in ms since the stream started."""
        return self.at(time.monotonic())

    def at(self, t: float) -> float:
        return round((t - self.t0) * 1000, 1)

    # ------------------------------------------------------------------ turns

    def open_turn(self, step: str | None, prompts: list[Prompt]) -> TurnRecord:
        """The turn of the answer about to be taken, after `prompts`."""
        self._seq += 1
        first = next((p.first_frame_at for p in prompts if p.first_frame_at is not None), None)
        states = {p.state for p in prompts}
        heard = ("interrupted" if "interrupted" in states
                 else "played" if states and states <= {"played"} else "unheard")
        turn = TurnRecord(
            seq=self._seq, step=step,
            prompt=" ".join(p.text for p in prompts), prompt_heard=heard,
            timings={"prompt_first_frame": self.at(first)} if first is not None else {},
        )
        if prompts and heard == "interrupted":
            turn.timings["prompt_heard_ms"] = round(sum(p.heard_ms for p in prompts), 1)
        turn.spans, self._orphans = self._orphans, []
        self.pending = turn
        return turn

    def read(self, result: engine.Turn | None) -> None:
        """The answer as the runner read it."""
        turn = self.pending
        if turn is None:
            return
        turn.input_kind = {"speech": "speech", "dtmf": "dtmf"}.get(
            result.input if result else "", "no_input")
        turn.input_text = result.text if result else None
        turn.confidence = result.confidence if result else None
        turn.understood = result.understood if result else None
        if result is not None and result.slot is not None:
            turn.slot, turn.slot_value = result.slot, result.value
        turn.result = result.result if result else "no_input"
        self.turn, self.pending = turn, None
        # What the caller said or keyed is personal data: at debug level only.
        self.log.info("turn", seq=turn.seq, step=turn.step, input=turn.input_kind,
                      result=turn.result)
        self.log.debug("turn_text", seq=turn.seq, text=turn.input_text,
                       understood=turn.understood)

    def read_free(self, answer: engine.Event) -> None:
        """A caller turn inside an agent step (the flow runner does not see those)."""
        turn, self.pending = self.pending, None
        if turn is None:
            return
        if isinstance(answer, engine.Speech):
            # Words may have been filled in already (a model that hears the audio is
            # asked before the recognizer's words arrive: `Answers._words_later`).
            turn.input_kind, turn.result = "speech", "match"
            turn.input_text = answer.text or turn.input_text
        elif isinstance(answer, engine.Digits):
            turn.input_kind, turn.input_text, turn.result = "dtmf", answer.digits, "match"
        else:
            turn.input_kind, turn.result = "no_input", "no_input"
        self.turn = turn

    def hung_up(self) -> None:
        """The caller left while an answer was being taken."""
        if self.pending is not None:
            self.pending.result = "hangup"
            self.turn, self.pending = self.pending, None

    async def replied(self, prompt: Prompt) -> None:
        """A prompt was played: if it is the reply to the last answer, the turn is whole."""
        if self.turn is not None and prompt.first_frame_at is not None:
            self.turn.timings["reply_first_frame"] = self.at(prompt.first_frame_at)
            await self.flush()

    async def flush(self, goodbye: tuple[str | None, list[Prompt]] | None = None) -> None:
        """Write the turn awaiting its reply. `goodbye`: prompts played after the last
        answer once the flow is done (step, prompts), written as a turn with no input."""
        turn, self.turn = self.turn, None
        if turn is None and goodbye is not None and goodbye[1]:
            turn = self.open_turn(*goodbye)
            turn.result = None
        if turn is None:
            return
        # Voice-to-voice: from the end-of-speech decision (or the last key) to the reply.
        start = turn.timings.get("endpoint", turn.timings.get("digits_done"))
        end = turn.timings.get("reply_first_frame")
        if start is not None and end is not None:
            turn.timings["response_ms"] = round(end - start, 1)
            self._responses.append(turn.timings["response_ms"])
        self.services.metrics.turn(turn.timings)
        self._flushed.add(turn.seq)
        if self.services.store is not None:
            # Queued, never awaited: a locked or full database must not hold up the reply.
            self.services.store.record_turn(self.call_sid, turn)

    def span(self, stage: str, *, at: float | None = None) -> SpanTimer:
        """Time a provider stage (stt, llm, tool, tts) asked now (or at monotonic `at`)
        for the turn it serves: the answer being taken, else the one awaiting its reply,
        else the next turn to open."""
        turn = self.pending or self.turn
        timer = SpanTimer(self, turn, stage, self.ms() if at is None else self.at(at))
        (turn.spans if turn is not None else self._orphans).append(timer.span)
        return timer

    def span_ended(self, turn: TurnRecord | None) -> None:
        if (turn is not None and turn.seq in self._flushed and self.services.store is not None):
            self.services.store.record_turn(self.call_sid, turn)  # an upsert by (call, seq)

    # -------------------------------------------------------------- the call

    async def start(self, *, stream_sid: str, account_sid: str | None, from_masked: str,
                    to_masked: str, flow: str) -> None:
        if self.services.store is not None:
            # Awaited: the row exists before the greeting's first frame (if the database
            # refuses it, the store queues it and the call goes on).
            await self.services.store.open_call(
                self.call_sid, stream_sid=stream_sid, account_sid=account_sid,
                from_masked=from_masked, to_masked=to_masked, flow=flow,
            )
        self.services.metrics.call_started()

    async def finish(
        self, outcome: str, reason: str, runner: engine.FlowRunner, player: dict[str, int],
    ) -> dict[str, Any]:
        """Write the call's end (usage, cost, outcome); returns the stats written."""
        services = self.services
        stats: dict[str, Any] = {
            **self.stats, **self.labels,
            "usage": self.usage.entries(),
            "stt_engine": getattr(services.recognizer, "name", ""),
            "stt_audio_s": round(self.stt_audio_s, 2),
            "stt_cpu_s": round(self.stt_cpu_s, 3),
            "tts_engine": getattr(services.synthesizer, "name", ""),
            **player,
            "flow_outcome": runner.outcome, "end_reason": reason,
            "last_step": runner.current_step,
            "duration_ms": round((time.monotonic() - self.t0) * 1000),
        }
        if services.pricing is not None:
            stats["cost"] = services.pricing.cost(stats)
        if services.store is not None:
            written = services.store.record_end(self.call_sid, outcome=outcome, stats=stats)
            # The caller is gone, so a short wait costs nothing, and the record is whole
            # by the time the socket closes; a database slower than that keeps retrying.
            await asyncio.wait({written}, timeout=END_WRITE_WAIT_S)
        return stats

    def count(self, outcome: str, reason: str, stats: dict[str, Any]) -> None:
        """The ended call in the counters, the metrics and the log."""
        self.services.counters[f"calls_{outcome}"] += 1
        self.services.metrics.call_ended(outcome, stats)
        cost = stats.get("cost") or {}
        responses = sorted(self._responses)
        self.log.info(
            "call_ended", outcome=outcome, reason=reason,
            cost_usd=cost.get("total"),
            unpriced=sorted(k.split(":", 1)[1] for k in cost if k.startswith("unpriced:")) or None,
            response_p50_ms=responses[(len(responses) - 1) // 2] if responses else None,
            **{k: v for k, v in stats.items()
               if k in ("duration_ms", "frames_out", "late_frames")})
