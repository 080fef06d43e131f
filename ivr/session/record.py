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

from ivr.audio.player import Prompt
from ivr.flows import engine
from ivr.server.services import Services
from ivr.store.db import ABANDONED, COMPLETED, DROPPED, FAILED, SHUTDOWN, TRANSFERRED, TurnRecord

END_WRITE_WAIT_S = 1.0

_FLOW_OUTCOMES = {
    "completed": COMPLETED, "fallback": COMPLETED, "goto_flow": COMPLETED,
    "hangup": ABANDONED, "error": FAILED, "transferred": TRANSFERRED,
}


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
        self.stt_audio_s = 0.0  # seconds of caller audio sent to recognition
        self.stt_cpu_s = 0.0  # CPU the embedded recognizer spent on them (worker processes)
        self._seq = 0
        self.turn: TurnRecord | None = None  # the turn awaiting its reply's first frame
        self.pending: TurnRecord | None = None  # the turn whose answer is being taken

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
            turn.input_kind, turn.input_text, turn.result = "speech", answer.text, "match"
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
        self.services.metrics.turn(turn.timings)
        if self.services.store is not None:
            # Queued, never awaited: a locked or full database must not hold up the reply.
            self.services.store.record_turn(self.call_sid, turn)

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
        self.log.info("call_ended", outcome=outcome, reason=reason, **{
            k: v for k, v in stats.items() if k in ("duration_ms", "frames_out", "late_frames")
        })
