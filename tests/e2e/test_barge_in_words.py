"""Word-gated barge-in through the real server: committed audio over the demo menu prompt.

The caller sends the fixtures of `tests/fixtures` (made by `make_barge_in_audio.py`)
instead of synthesizing: a 300 ms cough-like burst and "support". Three calls run at
once: the cough and "support" over a flow with `engines.barge_in: words`, and the same
cough over the plain demo flow (`IVR_BARGE_IN` left at `vad`), which shows that the gate
is what keeps the prompt playing.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ivr.sim.run import run_call
from ivr.sim.script import Barge, CallerAction, PutDown, Say
from ivr.sim.transcript import CallerSaid, CallTranscript
from tests.conftest import ROOT, make_settings
from tests.e2e.placing import Placed, answered, place_calls
from tests.unit.test_barge_in_gate import fixture_pcm

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

COUGH, SUPPORT = "cough_300ms", "support"
# The greeting (~1.5 s) may not be interrupted; 2.6 s in lands inside the menu prompt.
INTO_MENU_MS = 2600

CALLS: dict[str, tuple[str, list[CallerAction]]] = {
    # After the cough the menu plays on; the caller answers it once it has finished.
    "words_cough": ("demo_words", [Barge(COUGH, INTO_MENU_MS), Say(SUPPORT)]),
    "words_support": ("demo_words", [Barge(SUPPORT, INTO_MENU_MS)]),
    "vad_cough": ("demo", [Barge(COUGH, INTO_MENU_MS), PutDown()]),
}


class FixtureVoice:
    """A synthesizer that "says" a fixture: the caller's text names the file."""

    name = "fixtures"

    async def synthesize(self, text: str, *, voice: str | None = None,
                         rate: int | None = None) -> AsyncIterator[tuple[bytes, int]]:
        yield fixture_pcm(text), 8000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Placed]]:
    tmp: Path = tmp_path_factory.mktemp("barge_words")
    flows = tmp / "flows"
    shutil.copytree(ROOT / "flows", flows)
    demo = (flows / "demo.yaml").read_text("utf-8")
    (flows / "demo_words.yaml").write_text(
        demo.replace("name: demo\n", "name: demo_words\nengines: {barge_in: words}\n"), "utf-8")
    settings = make_settings(tmp, flows=flows)
    assert settings.barge_in == "vad"
    yield await place_calls(settings, {
        name: functools.partial(run_call, actions=actions, flow=flow, transcribe=False,
                                synthesizer=FixtureVoice())
        for name, (flow, actions) in CALLS.items()
    })


def barge(t: CallTranscript) -> CallerSaid:
    [said] = [e for e in t.events if isinstance(e, CallerSaid) and e.barge]
    assert said.onset is not None, "the caller never sent a voiced frame"
    return said


async def test_cough_over_a_word_gated_prompt_does_not_cut_it(placed: dict[str, Placed]) -> None:
    """No `clear`: the menu prompt plays to its end (its mark echoed), the cough answers
    nothing (no no-match), and "support" said after the prompt is the answer."""
    p = placed["words_cough"]
    cough = barge(p.transcript)
    assert p.transcript.clears == []
    marks = p.transcript.marks
    assert marks and all(m.t_echoed is not None and not m.cleared for m in marks)
    assert cough.t_end is not None
    assert any(m.t_echoed is not None and m.t_echoed > cough.t_end for m in marks)  # the menu's
    [first, *_] = answered(p.record)
    assert first["step"] == "menu" and first["prompt_heard"] == "played", first
    assert (first["result"], first["understood"]) == ("match", "support"), first
    assert p.record["stats"]["barge_ins_rejected"] == 1
    assert p.record["stats"].get("barge_ins", 0) == 0


async def test_support_over_a_word_gated_prompt_cuts_it_and_is_understood(
    placed: dict[str, Placed]
) -> None:
    """"support" brings a `clear` within 450 ms of its first voiced frame, and is the answer."""
    p = placed["words_support"]
    said = barge(p.transcript)
    assert said.onset is not None
    latency = p.transcript.clear_latency(said.onset)
    assert latency is not None, "no clear after the caller started speaking"
    assert latency < 0.450, f"clear came {latency * 1000:.0f} ms after speech onset"
    [first, *_] = answered(p.record)
    assert first["prompt_heard"] == "interrupted"
    assert first["understood"] == "support", first


async def test_cough_over_a_vad_prompt_cuts_it(placed: dict[str, Placed]) -> None:
    """Without the gate the same cough is speech enough to cut the prompt."""
    p = placed["vad_cough"]
    cough = barge(p.transcript)
    assert cough.onset is not None
    latency = p.transcript.clear_latency(cough.onset)
    assert latency is not None and latency < 0.300, latency
    assert answered(p.record)[0]["prompt_heard"] == "interrupted"
