"""LLM: the streaming chat client against the fake OpenAI server (deltas reassembled across
chunks, usage, [DONE], malformed chunks), the sentence splitter, and the agent's
tool-calling loop on a real seeded database: the caller's own data only, the token bound."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ivr.llm import (
    Agent,
    AgentEvent,
    AgentStep,
    ChatClient,
    ChatDelta,
    Done,
    Finish,
    ModelListens,
    ModelSays,
    SentenceSplitter,
    TextDelta,
    ToolCallDone,
    ToolRan,
    Usage,
    UsageEvent,
)
from ivr.providers.http import ProviderBadResponse
from ivr.tools import ToolContext, ToolRegistry
from tests.component.conftest import provider
from tests.component.test_tools import MONDAY, NOW, THURSDAY, WEDNESDAY
from tests.fake_openai import ChatReply, FakeOpenAI, Fault, ToolCall

CALLER = "+15550100009"  # seeded: no bookings, no orders
CAROL = "+15550100003"  # seeded: booking BK-SEED3 on WEDNESDAY at 14:30, order 5150


def make_agent(
    chat: ChatClient, registry: ToolRegistry, db: Path, caller: str = CALLER, **step: Any
) -> Agent:
    values: dict[str, Any] = {
        "system_prompt": "You book cleanings. Slots: name.",
        "tools": ("bookings.check_availability", "bookings.book"),
    }
    values.update(step)
    return Agent(
        chat, registry,
        lambda: ToolContext(call_sid="CA" + "2" * 32, caller=caller, db_path=db, now=NOW),
        AgentStep(**values), slots={"name": ""},
    )


async def collect(agent: Agent, text: str | None) -> list[AgentEvent]:
    return [e async for e in agent.turn(text)]


async def deltas(chat: ChatClient, **kw: Any) -> list[ChatDelta]:
    return [d async for d in chat.stream([{"role": "user", "content": "hi"}], **kw)]


# ------------------------------------------------------------------------------ client


async def test_stream_assembles_text_tool_calls_and_usage(
    fake: FakeOpenAI, chat: ChatClient
) -> None:
    args = json.dumps({"day": "2030-01-10", "service": "cleaning"})
    fake.chat_replies.append(ChatReply(
        content="Let me check.", split=3, prompt_tokens=42, completion_tokens=7,
        tool_calls=[ToolCall("bookings__check_availability", args),
                    ToolCall("bookings__list_services", "{}")],
    ))
    out = await deltas(chat, tools=[{"type": "function", "function": {"name": "x"}}])
    text = "".join(d.text for d in out if isinstance(d, TextDelta))
    assert text == "Let me check."
    assert len([d for d in out if isinstance(d, TextDelta)]) > 1  # streamed in pieces
    calls = [d for d in out if isinstance(d, ToolCallDone)]
    # split=3 cuts the arguments mid-JSON: each call is whole only once reassembled.
    assert [(c.name, json.loads(c.arguments_json or "{}")) for c in calls] == [
        ("bookings__check_availability", {"day": "2030-01-10", "service": "cleaning"}),
        ("bookings__list_services", {}),
    ]
    assert all(c.id.startswith("call_") for c in calls)
    assert out[-2:] == [Finish("tool_calls"), Usage(42, 7, 0)]
    body = fake.bodies["chat"][0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "test-model" and body["tool_choice"] == "auto"


async def _sse_server(lines: list[bytes]) -> TestServer:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for line in lines:
            await resp.write(line)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body)}\n\n".encode()


async def test_stream_comments_cached_usage_and_malformed_chunks() -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 2,
             "prompt_tokens_details": {"cached_tokens": 8}}
    good = [b": keep-alive\n\n", b"event: message\n", _chunk({"content": "Hi"}),
            b"\n", _chunk({}, "stop"), b'data: {"choices": [], "usage": '
            + json.dumps(usage).encode() + b"}\n\n", b"data: [DONE]\n\n",
            _chunk({"content": "after done is ignored"})]
    server = await _sse_server(good)
    try:
        async with aiohttp.ClientSession() as session:
            chat = ChatClient(provider(str(server.make_url("/v1")), session), "m")
            assert await deltas(chat) == [TextDelta("Hi"), Finish("stop"), Usage(9, 2, 8)]
    finally:
        await server.close()

    server = await _sse_server([_chunk({"content": "Hi"}), b'data: {"choices": [\n\n'])
    try:
        async with aiohttp.ClientSession() as session:
            chat = ChatClient(provider(str(server.make_url("/v1")), session), "m")
            with pytest.raises(ProviderBadResponse, match="malformed JSON"):
                await deltas(chat)
    finally:
        await server.close()


# --------------------------------------------------------------------------- sentences


@pytest.mark.parametrize(("pieces", "expected", "rest"), [
    (["Hello there. How are", " you? Fine"], ["Hello there.", "How are you?"], "Fine"),
    (["Dr. Smith sees you at 3", ".5 hours! Ok"], ["Dr. Smith sees you at 3.5 hours!"], "Ok"),
    (["Bring e.g. a card, i.e. ID. Thanks."], ["Bring e.g. a card, i.e. ID."], "Thanks."),
    (["Wait", "...", " what?!", " Really"], ["Wait...", "what?!"], "Really"),
    (['He said "done." Then', " left"], ['He said "done."'], "Then left"),
    (["Booked for 10 a.m. Thursday. Bye"], ["Booked for 10 a.m. Thursday."], "Bye"),
    (["Options:\n", "one\ntwo"], ["Options:", "one"], "two"),
    (["", "   "], [], None),
])
def test_sentence_splitter(pieces: list[str], expected: list[str], rest: str | None) -> None:
    s = SentenceSplitter()
    got: list[str] = []
    for p in pieces:
        got += s.push(p)
    assert got == expected
    assert s.flush() == rest
    assert s.flush() is None


def test_sentence_released_as_soon_as_it_ends() -> None:
    s = SentenceSplitter()
    assert s.push("Sure.") == []  # "." at the end: could still be "Sure.5"
    assert s.push(" ") == ["Sure."]


# ------------------------------------------------------------------------------- agent


def bookings_in(db: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT day, start, name, service FROM bookings WHERE status = 'booked' "
            "AND call_sid IS NOT NULL"
        ).fetchall()


async def test_agent_books_then_says_goodbye_and_ends(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    day = THURSDAY.isoformat()
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("bookings__check_availability", json.dumps(
            {"day": day, "service": "cleaning"}))]),
        ChatReply(content="Thursday at 9 is free.", tool_calls=[
            ToolCall("set_slot", '{"name": "name", "value": "Dana Scully"}'),
            ToolCall("bookings__book", json.dumps(
                {"service": "cleaning", "day": day, "start": "09:00", "name": "Dana Scully"})),
        ]),
        ChatReply(content="You're booked for Thursday at 9. Goodbye!",
                  tool_calls=[ToolCall("end_conversation", "{}")]),
    ])
    agent = make_agent(chat, registry, db)
    events = await collect(agent, "Book a cleaning on Thursday for Dana Scully.")

    ran = [e for e in events if isinstance(e, ToolRan)]
    assert [(e.name, e.ok) for e in ran] == [
        ("bookings.check_availability", True), ("set_slot", True), ("bookings.book", True),
        ("end_conversation", True),
    ]
    assert "09:00" in ran[0].value["available"]
    assert ran[2].value["ref"].startswith("BK-")
    assert [e.text for e in events if isinstance(e, ModelSays)] == [
        "Thursday at 9 is free.", "You're booked for Thursday at 9.", "Goodbye!"]
    assert events[-1] == Done("model")
    assert bookings_in(db) == [(day, "09:00", "Dana Scully", "cleaning")]
    assert agent.slots == {"name": "Dana Scully"}
    assert agent.vars["bookings.book"]["ref"] == ran[2].value["ref"]
    assert agent.called_tools[:3] == ["bookings.check_availability", "set_slot", "bookings.book"]
    assert [e for e in events if isinstance(e, UsageEvent)] == [UsageEvent(10, 5)] * 3
    assert (agent.prompt_tokens, agent.completion_tokens) == (30, 15)

    # Full OpenAI message format: assistant tool_calls, then tool results by id.
    second = fake.bodies["chat"][1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    assert second[3]["tool_call_id"] == second[2]["tool_calls"][0]["id"]
    assert json.loads(second[3]["content"])["ok"] is True
    offered = {t["function"]["name"] for t in fake.bodies["chat"][0]["tools"]}
    assert offered == {"bookings__check_availability", "bookings__book", "set_slot",
                       "end_conversation", "transfer_to_human"}


async def test_text_answer_listens_and_history_carries_over(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    fake.chat_replies.extend([ChatReply(content="Which day would you like?"),
                              ChatReply(content="Thanks.")])
    agent = make_agent(chat, registry, db)
    events = await collect(agent, None)
    assert events == [ModelSays("Which day would you like?"), UsageEvent(10, 5), ModelListens()]
    await collect(agent, "Thursday")
    roles = [m["role"] for m in fake.bodies["chat"][1]["messages"]]
    assert roles == ["system", "assistant", "user"]


async def test_invalid_arguments_go_back_and_a_corrected_call_succeeds(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    day = THURSDAY.isoformat()
    fake.chat_replies.extend([
        # Invalid time format and a truncated JSON call in the same round: nothing runs,
        # not even the valid-looking availability check.
        ChatReply(tool_calls=[
            ToolCall("bookings__book", json.dumps(
                {"service": "cleaning", "day": day, "start": "9am", "name": "Dana"})),
            ToolCall("bookings__check_availability", '{"day": '),
        ]),
        ChatReply(tool_calls=[ToolCall("bookings__book", json.dumps(
            {"service": "cleaning", "day": day, "start": "09:00", "name": "Dana"}))]),
        ChatReply(content="Done."),
    ])
    events = await collect(make_agent(chat, registry, db), "book it")
    ran = [e for e in events if isinstance(e, ToolRan)]
    assert [(e.name, e.ok) for e in ran] == [
        ("bookings.book", False), ("bookings.check_availability", False),
        ("bookings.book", True)]
    assert ran[0].error is not None and "start" in ran[0].error
    assert ran[1].error is not None and "not valid JSON" in ran[1].error
    assert events[-1] == ModelListens()
    assert bookings_in(db) == [(day, "09:00", "Dana", "cleaning")]
    retry = fake.bodies["chat"][1]["messages"]
    assert "invalid arguments" in json.loads(retry[-2]["content"])["error"]


async def test_forbidden_and_unknown_tools_are_refused_then_bounded(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("bookings__cancel", '{"ref": "BK-SEED2"}')]),
        ChatReply(tool_calls=[ToolCall("shell__exec", '{"cmd": "rm"}')]),
    ])
    events = await collect(make_agent(chat, registry, db), "cancel BK-SEED2")
    ran = [e for e in events if isinstance(e, ToolRan)]
    assert ran[0].error is not None and "not available" in ran[0].error
    assert ran[1].error is not None and "unknown tool" in ran[1].error
    assert events[-1] == Done(
        "error", "2 rounds of refused tool calls")
    with sqlite3.connect(db) as conn:
        status = conn.execute("SELECT status FROM bookings WHERE ref = 'BK-SEED2'").fetchone()
    assert status == ("booked",)


async def test_tool_calls_of_a_round_run_in_parallel(
    fake: FakeOpenAI, chat: ChatClient, db: Path
) -> None:
    from ivr.tools import Tool

    registry = ToolRegistry(db)
    running = 0
    most = 0

    async def slow(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.2)
        running -= 1
        return {"n": args["n"]}

    registry.register(Tool("test.slow", "slow", {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}, slow))
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("test__slow", json.dumps({"n": i})) for i in range(3)]),
        ChatReply(content="All done."),
    ])
    agent = make_agent(chat, registry, db, tools=("test.slow",))
    started = asyncio.get_running_loop().time()
    events = await collect(agent, "go")
    elapsed = asyncio.get_running_loop().time() - started
    assert most == 3 and elapsed < 0.5
    assert [e.value for e in events if isinstance(e, ToolRan)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    tool_msgs = [m for m in agent.messages if m["role"] == "tool"]
    call_ids = [c["id"] for c in agent.messages[2]["tool_calls"]]
    assert [m["tool_call_id"] for m in tool_msgs] == call_ids


async def test_max_rounds_exit_transfer(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    check = ToolCall("bookings__check_availability", json.dumps({"day": THURSDAY.isoformat()}))
    fake.chat_replies.extend([ChatReply(tool_calls=[check]) for _ in range(3)])
    events = await collect(make_agent(chat, registry, db, max_rounds=3), "hi")
    assert events[-1] == Done("max_rounds")
    assert fake.requests["chat"] == 3

    # The exit condition is checked after each round's tools.
    fake.chat_replies.append(ChatReply(tool_calls=[
        ToolCall("set_slot", '{"name": "name", "value": "Ann"}')]))
    agent = make_agent(chat, registry, db, exit_when=lambda s, v, t: bool(s["name"]))
    assert (await collect(agent, "I'm Ann"))[-1] == Done("exit")

    fake.chat_replies.append(ChatReply(content="Connecting you.", tool_calls=[
        ToolCall("transfer_to_human", '{"reason": "asked"}')]))
    events = await collect(make_agent(chat, registry, db), "a human please")
    assert events[0] == ModelSays("Connecting you.") and events[-1] == Done("transfer")

    # A slot the flow does not have is refused.
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("set_slot", '{"name": "pin", "value": "1"}')]),
        ChatReply(content="Ok."),
    ])
    agent = make_agent(chat, registry, db)
    events = await collect(agent, "x")
    assert [e.ok for e in events if isinstance(e, ToolRan)] == [False]
    assert agent.slots == {"name": ""}


async def test_provider_outage_is_done_error(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    fake.outage["chat"] = Fault("status", status=500)
    events = await collect(make_agent(chat, registry, db), "hello")
    assert len(events) == 1 and isinstance(events[0], Done)
    assert events[0].reason == "error" and "500" in (events[0].error or "")


async def test_first_sentence_is_said_before_the_reply_completes(
    registry: ToolRegistry, db: Path
) -> None:
    said_first = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_chunk({"content": "One moment please. "}))
        # The rest is only sent once the agent has yielded the first sentence: if the
        # agent waited for the whole reply this would time out.
        try:
            await asyncio.wait_for(said_first.wait(), 5)
        except TimeoutError:
            pass
        await resp.write(_chunk({"content": "Here it is."}))
        await resp.write(_chunk({}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            chat = ChatClient(provider(str(server.make_url("/v1")), session), "m")
            events: list[tuple[AgentEvent, bool]] = []
            async for e in make_agent(chat, registry, db).turn("hi"):
                events.append((e, said_first.is_set()))
                if isinstance(e, ModelSays):
                    said_first.set()
    finally:
        await server.close()
    assert events == [(ModelSays("One moment please."), False), (ModelSays("Here it is."), True),
                      (ModelListens(), True)]


async def test_goodbye_is_held_back_when_a_tool_of_the_round_failed(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    saturday = (MONDAY + timedelta(days=5)).isoformat()  # closed: the booking fails
    fake.chat_replies.extend([
        ChatReply(tool_calls=[
            ToolCall("bookings__book", json.dumps(
                {"service": "cleaning", "day": saturday, "start": "09:00", "name": "Dana"})),
            ToolCall("end_conversation", "{}"),
        ]),
        ChatReply(content="Sorry, we are closed on Saturdays."),
    ])
    events = await collect(make_agent(chat, registry, db), "Saturday at 9")
    ran = [e for e in events if isinstance(e, ToolRan)]
    assert [(e.name, e.ok) for e in ran] == [("bookings.book", False),
                                             ("end_conversation", False)]
    assert events[-1] == ModelListens()
    assert bookings_in(db) == []


async def test_interrupted_turn_keeps_history_valid(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    fake.chat_replies.extend([
        ChatReply(content="Our hours are nine to five. We are closed at weekends."),
        ChatReply(content="Sure."),
    ])
    agent = make_agent(chat, registry, db)
    turn = agent.turn("hours?")
    assert await anext(turn) == ModelSays("Our hours are nine to five.")
    await turn.aclose()  # barge-in: the session stops listening mid-reply
    assert agent.messages[-1] == {"role": "assistant",
                                  "content": "Our hours are nine to five. "}
    # A turn cancelled while its tools ran left calls unanswered: they get results.
    agent.messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}]})
    await collect(agent, "thanks")
    sent = fake.bodies["chat"][1]["messages"]
    assert sent[-2]["tool_call_id"] == "c1" and sent[-1]["role"] == "user"


# --------------------------------------------------------------- the caller's own data


def status_of(db: Path, ref: str) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("SELECT status FROM bookings WHERE ref = ?", (ref,)).fetchone()[0])


def tool_results_sent(fake: FakeOpenAI, request: int) -> list[dict[str, Any]]:
    """The tool results the model was sent in its `request`-th request (0-based)."""
    messages = fake.bodies["chat"][request]["messages"]
    return [json.loads(m["content"]) for m in messages if m["role"] == "tool"]


async def test_a_model_cancelling_another_numbers_booking_gets_a_tool_error(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    """"Cancel my mum's Wednesday slot, her number is ...": by her reference, or by her
    number and day, the model gets a failed result and her booking stays booked."""
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("bookings__cancel", '{"ref": "BK-SEED3"}')]),
        ChatReply(tool_calls=[ToolCall("bookings__cancel", json.dumps(
            {"day": WEDNESDAY.isoformat(), "phone": "555 010 0003"}))]),
        ChatReply(content="Sorry, I can only change bookings for the number you call from."),
    ])
    agent = make_agent(chat, registry, db, tools=("bookings.cancel",))
    events = await collect(agent, "Cancel my mum's Wednesday slot, her number is 555 010 0003.")
    ran = [e for e in events if isinstance(e, ToolRan)]
    assert [(e.name, e.ok) for e in ran] == [("bookings.cancel", False)] * 2
    assert ran[0].error == "no booking with reference BK-SEED3 under the caller's number"
    assert ran[1].error is not None and "not another number" in ran[1].error
    assert events[-1] == ModelListens()
    # What the model was told: failures, with nothing of Carol's booking in them.
    told = tool_results_sent(fake, 2)
    assert [r["ok"] for r in told] == [False, False]
    assert "14:30" not in json.dumps(told) and "whitening" not in json.dumps(told)
    assert status_of(db, "BK-SEED3") == "booked"


async def test_a_model_finding_another_numbers_bookings_is_refused(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("bookings__find", json.dumps({"phone": CAROL}))]),
        ChatReply(content="I can only look up your own bookings."),
    ])
    agent = make_agent(chat, registry, db, tools=("bookings.find",))
    events = await collect(agent, "What are Carol's bookings? Her number is +15550100003.")
    [ran] = [e for e in events if isinstance(e, ToolRan)]
    assert not ran.ok and ran.error is not None and "another number" in ran.error
    assert ran.value == {"reason": "other_number"}
    assert "BK-SEED3" not in json.dumps(tool_results_sent(fake, 1))


async def test_a_model_looking_up_someone_elses_order_learns_no_details(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("lookups__order_status", '{"order_number": "5150"}')]),
        ChatReply(content="That order needs to be verified by a colleague."),
    ])
    agent = make_agent(chat, registry, db, tools=("lookups.order_status",))
    events = await collect(agent, "Where is order 5150?")
    [ran] = [e for e in events if isinstance(e, ToolRan)]
    assert ran.ok and ran.value["verified"] is False
    told = json.dumps(tool_results_sent(fake, 1))
    assert "5150" in told and "running shoes" not in told and "shipped" not in told


async def test_an_anonymous_caller_cannot_book_through_the_model(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    fake.chat_replies.extend([
        ChatReply(tool_calls=[ToolCall("bookings__book", json.dumps(
            {"service": "cleaning", "day": THURSDAY.isoformat(), "start": "09:00",
             "name": "Dana", "phone": "+15550100001"}))]),
        ChatReply(content="Sorry, I can't book without your number."),
    ])
    events = await collect(make_agent(chat, registry, db, caller=""), "Book Thursday at 9.")
    [ran] = [e for e in events if isinstance(e, ToolRan)]
    assert not ran.ok and ran.error is not None and "withheld" in ran.error
    assert bookings_in(db) == []


# --------------------------------------------------------------------- token budget


async def test_the_token_bound_stops_requests_before_the_next_round(
    fake: FakeOpenAI, chat: ChatClient, registry: ToolRegistry, db: Path
) -> None:
    """The bound is checked before each request: a reply under way is finished and its
    tools run; the request after the bound is reached is never made."""
    check = ToolCall("bookings__check_availability", json.dumps({"day": THURSDAY.isoformat()}))
    fake.chat_replies.extend([
        ChatReply(content="Which day?", prompt_tokens=40, completion_tokens=10),
        ChatReply(tool_calls=[check], prompt_tokens=60, completion_tokens=10),
        ChatReply(content="Thursday at 9 is free."),  # never asked for
    ])
    agent = make_agent(chat, registry, db, max_tokens=100)
    assert (await collect(agent, None))[-1] == ModelListens()  # 50 of 100
    events = await collect(agent, "Thursday")
    assert [(e.name, e.ok) for e in events if isinstance(e, ToolRan)] == [
        ("bookings.check_availability", True)]
    assert isinstance(events[-1], Done) and events[-1].reason == "budget"
    assert fake.requests["chat"] == 2 and agent.tokens == 120
    # Nothing left at the start: no request at all.
    spent = make_agent(chat, registry, db, max_tokens=0)
    assert [type(e) for e in await collect(spent, None)] == [Done]
    assert fake.requests["chat"] == 2
