"""The text side of the one dialog driver: flow tests with a scripted model, typed answers,
and an `llm` step against a fake provider: the call's token budget, the concierge prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from ivr.config import ProviderConfig
from ivr.dialog.conversation import TextConversation, typed_answer
from ivr.dialog.flowtest import load_spec, run_file
from ivr.errors import FlowError
from ivr.flows import engine
from ivr.flows.library import FlowLibrary
from ivr.flows.load.loader import load_flow_text
from ivr.flows.model import Flow
from ivr.llm.client import ChatClient
from ivr.providers.http import ProviderClient
from ivr.tools import default_registry, seed
from tests.conftest import ROOT
from tests.fake_openai import ChatReply, FakeOpenAI, ToolCall, start_fake_openai

BOOKING_TEST: dict[str, Any] = {
    "name": "books",
    "llm": [
        {"say": "Sure. What can I book for you?"},
        {"call": "bookings.book",
         "args": {"service": "cleaning", "day": "2026-11-25", "start": "15:00", "name": "Pat"}},
    ],
    "turns": [{"expect": ["What can I book"]},
              {"say": "a cleaning", "expect": ["You're booked"]}],
    "tools": ["bookings.book"],
    "ends": "hangup",
}


@pytest.fixture(scope="module")
def flows() -> dict[str, Flow]:
    library = FlowLibrary(ROOT / "flows", default="main_menu")
    library.load()
    return library.flows


def _spec(*tests: dict[str, Any]) -> dict[str, Any]:
    return {"flow": "concierge", "now": "2026-11-23T10:00:00-05:00", "caller": "+15550100009",
            "tests": list(tests)}


async def test_a_scripted_model_runs_the_llm_step_and_books(flows: dict[str, Flow]) -> None:
    """With `llm:` the step talks to the script (tools run for real), not its fallback."""
    [outcome] = await run_file(Path("t.yaml"), _spec(BOOKING_TEST), flows)
    assert outcome.ok, (outcome.failures, outcome.transcript)


async def test_a_script_too_short_or_too_long_fails_the_test(flows: dict[str, Flow]) -> None:
    """Asking for a reply the test does not script, or leaving one unused, is a failure."""
    short = {**BOOKING_TEST, "name": "short", "llm": BOOKING_TEST["llm"][:1]}
    long = {**BOOKING_TEST, "name": "long", "llm": [*BOOKING_TEST["llm"], {"say": "Bye."}]}
    outcomes = await run_file(Path("t.yaml"), _spec(short, long), flows)
    assert [o.ok for o in outcomes] == [False, False]
    assert any("asked for 2 replies, the test scripts 1" in f for f in outcomes[0].failures)
    assert outcomes[1].failures == ["llm: 1 scripted replies were never asked for"]


async def test_a_malformed_script_names_the_test_and_the_reply(flows: dict[str, Flow]) -> None:
    bad = {**BOOKING_TEST, "llm": [{"say": "Hi."}, {"args": {"day": "2026-11-25"}}]}
    with pytest.raises(FlowError, match="test 'books', llm reply 2: `args` without `call`"):
        await run_file(Path("t.yaml"), _spec(bad), flows)


async def test_flow_tests_never_call_the_configured_provider(
    flows: dict[str, Flow], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`IVR_LLM_*` set or not, the shipped concierge tests run without a chat request."""
    async with start_fake_openai() as fake:
        monkeypatch.setenv("IVR_LLM_BASE_URL", fake.base_url)
        path = ROOT / "flows" / "tests" / "concierge.yaml"
        outcomes = await run_file(path, load_spec(path), flows)
        assert fake.requests["chat"] == 0
    assert len(outcomes) >= 2 and all(o.ok for o in outcomes), [o.failures for o in outcomes]


LISTEN = engine.Listen(step="s", phrases=(), dtmf=None, timeout_ms=None, end_silence_ms=None,
                       max_utterance_ms=None, speech=True, barge_in=True)


def test_typed_turns_are_taken_as_a_phone_takes_them() -> None:
    """Keys where the question takes none are ignored on a phone line: no input."""
    keys = engine.DtmfSpec(max_digits=1, terminator="#", inter_digit_ms=3000)
    assert typed_answer(" sales ", LISTEN) == engine.Speech("sales")
    assert typed_answer("#12", LISTEN) == engine.NoInput()
    with_keys = replace(LISTEN, dtmf=keys, speech=False)
    assert typed_answer("#12", with_keys) == engine.Digits("12")
    assert typed_answer("sales", with_keys) == engine.NoInput()
    assert typed_answer("", LISTEN) == engine.NoInput()


# ------------------------------------------------------------ an llm step, a fake provider

CALLER = "+15550100009"

TWO_AGENTS = """
name: two_agents
start: first
steps:
  first: {llm: You greet the caller., next: second, fallback: spent}
  second: {llm: You help the caller., next: done, fallback: spent}
  spent: {hangup: "Sorry, I have to stop here. Goodbye."}
  done: {hangup: Goodbye.}
"""


@pytest.fixture
async def fake_chat() -> AsyncIterator[tuple[FakeOpenAI, ChatClient]]:
    async with start_fake_openai() as fake, aiohttp.ClientSession() as http:
        config = ProviderConfig(role="llm", base_url=fake.base_url, model="gpt-test",
                                max_retries=0)
        yield fake, ChatClient(ProviderClient(config, http), "gpt-test")


async def test_the_calls_token_budget_spans_its_llm_steps_and_takes_the_fallback(
    fake_chat: tuple[FakeOpenAI, ChatClient], tmp_path: Path
) -> None:
    """700 tokens in the first step leave 300 of 1,000 for the second; once its first
    reply has used 350, the next caller turn ends the step with its fallback, logged and
    counted, without another request."""
    fake, chat = fake_chat
    fake.chat_replies.extend([
        ChatReply(content="Hello.", tool_calls=[ToolCall("end_conversation", "{}")],
                  prompt_tokens=600, completion_tokens=100),
        ChatReply(content="How can I help?", prompt_tokens=250, completion_tokens=100),
        ChatReply(content="Never sent."),
    ])
    db = tmp_path / "ivr.db"
    await seed(db)
    conv = TextConversation({"two_agents": load_flow_text(TWO_AGENTS)}, "two_agents",
                            default_registry(db), db_path=db, caller=CALLER,
                            model=lambda _flow: chat, llm_max_tokens_per_call=1000)
    with capture_logs() as logs:
        start = await conv.start()
        end = await conv.turn("book a cleaning")
    assert start.bot == ["Hello.", "How can I help?"]
    assert end.bot == ["Sorry, I have to stop here. Goodbye."] and conv.done
    assert fake.requests["chat"] == 2
    stats = conv.dialog.stats
    assert stats["llm_budget_spent"] == 1
    assert stats["llm_prompt_tokens"] + stats["llm_completion_tokens"] == 1050
    [spent] = [e for e in logs if e["event"] == "llm_budget_spent"]
    assert spent["log_level"] == "warning"
    assert (spent["step"], spent["limit"], spent["used"]) == ("second", 1000, 1050)


async def test_no_budget_means_no_bound(
    fake_chat: tuple[FakeOpenAI, ChatClient], tmp_path: Path
) -> None:
    """`IVR_LLM_MAX_TOKENS_PER_CALL=0`: however many tokens, the step keeps talking."""
    fake, chat = fake_chat
    fake.chat_replies.extend([
        ChatReply(content="Hello.", tool_calls=[ToolCall("end_conversation", "{}")],
                  prompt_tokens=10**6),
        ChatReply(content="Bye.", tool_calls=[ToolCall("end_conversation", "{}")],
                  prompt_tokens=10**6),
    ])
    db = tmp_path / "ivr.db"
    await seed(db)
    conv = TextConversation({"two_agents": load_flow_text(TWO_AGENTS)}, "two_agents",
                            default_registry(db), db_path=db, caller=CALLER,
                            model=lambda _flow: chat, llm_max_tokens_per_call=0)
    ex = await conv.start()
    assert ex.bot == ["Hello.", "Bye.", "Goodbye."] and conv.done
    assert conv.dialog.stats["llm_budget_spent"] == 0


@pytest.mark.parametrize("caller", [CALLER, ""])
async def test_the_concierge_prompt_never_holds_the_callers_number(
    fake_chat: tuple[FakeOpenAI, ChatClient], flows: dict[str, Flow], tmp_path: Path,
    caller: str,
) -> None:
    """The model is told whether the tools act for a known number, never the number."""
    fake, chat = fake_chat
    fake.chat_replies.append(ChatReply(content="Hello."))
    db = tmp_path / "ivr.db"
    await seed(db)
    conv = TextConversation(flows, "concierge", default_registry(db), db_path=db,
                            caller=caller, model=lambda _flow: chat)
    await conv.start()
    await conv.close()
    sent = str(fake.bodies["chat"][0]["messages"])
    assert "555" not in sent and "0100009" not in sent  # in any spelling of the number
    system = fake.bodies["chat"][0]["messages"][0]["content"]
    assert ("calling from" in system) if caller else ("withheld" in system)


@pytest.mark.parametrize("caller", ["", "anonymous", "+266696687", "client:alice"])
async def test_a_withheld_caller_id_is_an_anonymous_caller(
    flows: dict[str, Flow], tmp_path: Path, caller: str
) -> None:
    """No number, a word, Twilio's keypad spelling of ANONYMOUS, a SIP client: the flow
    sees no caller (`{{ caller }}` is empty) and dental_booking puts them through."""
    db = tmp_path / "ivr.db"
    await seed(db)
    conv = TextConversation(flows, "dental_booking", default_registry(db), db_path=db,
                            caller=caller)
    ex = await conv.start()
    assert conv.dialog.caller == "" and conv.runner.caller == ""
    assert "Your number is withheld" in " ".join(ex.bot)
    assert ex.ended == "transfer +15550100000"


async def test_the_caller_id_reaches_flow_and_tools_as_one_number(
    flows: dict[str, Flow], tmp_path: Path
) -> None:
    db = tmp_path / "ivr.db"
    await seed(db)
    conv = TextConversation(flows, "dental_booking", default_registry(db), db_path=db,
                            caller="(555) 010-0001")
    await conv.start()
    assert conv.runner.caller == conv.dialog.tool_context().caller == "+15550100001"
    assert "Your cleaning is on" in " ".join((await conv.turn("reschedule")).bot)
    await conv.close()
