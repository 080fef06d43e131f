"""`ivr bench conversation`'s caller mind: prompt words in, the next answer out, and the
judging of a call's booking rows against its goal."""

from __future__ import annotations

from collections import Counter
from datetime import date, time

import numpy as np

from ivr.audio.codec import pcm16_to_ulaw, ulaw_to_pcm16
from ivr.bench.conversation import judge, plan_goals
from ivr.bench.goals import Goal, Listener, question_of, time_words
from ivr.sim.script import PressKeys, PutDown, Say
from ivr.sim.voice import LineNoise

WED = date(2026, 3, 4)  # a Wednesday
BOOK = Goal("book", "people", day=WED, start=time(14, 30))
MENU = "Would you like to book, cancel, or reschedule an appointment? Or press 1, 2, or 3."


def test_each_question_gets_the_goal_in_the_callers_style() -> None:
    flow = Listener(Goal("book", "flow", day=WED, start=time(14, 30)))
    people = Listener(BOOK)
    keys = Listener(Goal("book", "keys", day=WED, start=time(14, 30)))
    prompts = [
        ["Thanks for calling Acme.", "Say appointments, orders, or agent. Or press 1, 2, or 3."],
        [MENU],
        ["Which service? Cleaning, checkup, whitening, or filling."],
        ["What day would you like? For example, Monday."],
        ["On Wednesday, March 4th we have 15 free times, starting at 9 AM. What time would "
         "you like?"],
        ["And what name should the booking be under?"],
    ]
    assert [flow.hear(p) for p in prompts] == [
        Say("appointments"), Say("book"), Say("cleaning"), Say("wednesday"),
        Say("two thirty p m"), Say("john")]
    assert [people.hear(p) for p in prompts] == [
        Say("an appointment please"), Say("book an appointment"), Say("a cleaning please"),
        Say("on wednesday"), Say("at two thirty p m"), Say("it is john smith")]
    assert [keys.hear(p) for p in prompts] == [
        PressKeys("1"), PressKeys("1"), PressKeys("1"), PressKeys("0304"), PressKeys("1430"),
        PressKeys("5646#")]


def test_a_read_back_is_compared_with_the_goal() -> None:
    right = "A cleaning on Wednesday, March 4th at 2:30 PM. Shall I book it? Say yes or no."
    wrong_time = right.replace("2:30 PM", "3 PM")
    wrong_day = right.replace("Wednesday, March 4th", "Thursday, March 5th")
    assert Listener(BOOK).hear([right]) == Say("that is right")
    assert Listener(BOOK).hear([wrong_time]) == Say("no that is wrong")
    assert Listener(BOOK).hear([wrong_day]) == Say("no that is wrong")


def test_keys_to_commit_follow_the_last_verdict() -> None:
    said_yes = Listener(BOOK)
    said_yes.hear(["A cleaning on Wednesday, March 4th at 2:30 PM. Shall I book it?"])
    assert said_yes.hear(["Press 1 to confirm, 2 to change."]) == PressKeys("1")
    said_no = Listener(BOOK)
    said_no.hear(["A whitening on Wednesday, March 4th at 2:30 PM. Shall I book it?"])
    assert said_no.hear(["Press 1 to confirm, 2 to change."]) == PressKeys("2")


def test_a_check_of_one_answer_is_judged_against_that_answer() -> None:
    listener = Listener(BOOK)
    listener.hear(["Which service? Cleaning, checkup, whitening, or filling."])
    check = "{}, right? Say yes or no, or press 1 for yes, 2 for no."
    assert listener.hear([check.format("Whitening")]) == Say("no that is wrong")
    listener.hear(["Which service? Cleaning, checkup, whitening, or filling."])
    # A second check in the call: the caller has been misheard, and keys are offered.
    assert listener.hear([check.format("Cleaning")]) == PressKeys("1")
    listener.hear(["What day would you like? For example, Monday."])
    assert listener.hear([check.format("Thursday, March 5th")]) == PressKeys("2")
    assert listener.keyed == 2


def test_after_a_wrong_read_back_the_caller_says_what_to_change() -> None:
    right = "A cleaning on Wednesday, March 4th at 2:30 PM. Shall I book it? Say yes or no."
    change = "What should I change? The service, the day, or the time. Or press 1, 2, or 3."
    wrong_day = Listener(BOOK)
    assert wrong_day.hear([right.replace("Wednesday, March 4th", "Thursday, March 5th")]) == (
        Say("no that is wrong"))
    assert wrong_day.hear([change]) == Say("the day")
    assert wrong_day.hear([right.replace("2:30", "3:30")]) == Say("no that is wrong")
    assert wrong_day.hear([change]) == PressKeys("3")  # asked again: the keys offered
    flow = Listener(Goal("book", "flow", service="whitening", day=WED, start=time(14, 30)))
    flow.hear([right])
    assert flow.hear([change]) == Say("service")
    heard_as_no = Listener(BOOK)  # a "that is right" taken for a no
    heard_as_no.hear([right])
    assert heard_as_no.hear([change]) == Say("nothing it's right")


def test_a_caller_misheard_once_keys_what_the_reask_offers() -> None:
    """A re-ask that says how to key the answer in gets keys; one that does not (or the
    first asking) gets the caller's words again."""
    listener = Listener(BOOK)
    assert listener.hear(["Which service? Cleaning, checkup, whitening, or filling. "
                          "Or press 1 to 4."]) == Say("a cleaning please")
    assert listener.hear(["Please say cleaning, checkup, whitening, or filling. "
                          "Or press 1 to 4."]) == PressKeys("1")
    assert listener.hear(["What day would you like? For example, Monday."]) == Say(
        "on wednesday")
    assert listener.hear(["Sorry, which day? You can say a weekday, like Tuesday."]) == Say(
        "on wednesday")  # no way to key a day offered
    assert listener.hear(["Sorry, which day? Or key in the month and day, like 0 3 1 5 "
                          "for March 15th."]) == PressKeys("0304")
    assert listener.keyed == 2
    keypad = Listener(Goal("book", "keys", day=WED, start=time(14, 30)))
    keypad.hear(["Which service? Or press 1 to 4."])
    keypad.hear(["Please say cleaning. Or press 1 to 4."])
    assert keypad.keyed == 0  # a keypad caller's keys are not a fallback


def test_a_reask_is_answered_again_and_counted() -> None:
    listener = Listener(BOOK)
    assert listener.hear(["What day would you like? For example, Monday."]) == Say("on wednesday")
    assert listener.hear(["Sorry, which day? You can say a weekday, like Tuesday."]) == Say(
        "on wednesday")
    assert listener.reasks == 1


def test_statements_are_listened_to_and_the_order_status_is_noticed() -> None:
    order = Listener(Goal("order", "people", order="4567", item="wireless headphones",
                          status="shipped"))
    assert order.hear(["Please say or key in your four digit order number."]) == Say(
        "it is four five six seven")
    assert order.hear(["Order 4 5 6 7, your wireless headphones, is shipped.",
                       "Thanks for calling. Goodbye."]) is None
    assert order.status_heard
    assert question_of("Sorry, that time is not available.") is None


def test_time_words() -> None:
    assert [time_words(time(h, m)) for h, m in ((9, 0), (12, 30), (16, 30))] == [
        "nine a m", "twelve thirty p m", "four thirty p m"]


def test_judging_rows_against_the_goal() -> None:
    goal = Goal("book", "flow", day=WED, start=time(14, 30))
    listener = Listener(goal)
    made = [("BK-1", "cleaning", "2026-03-04", "14:30", "booked")]
    assert judge(goal, [], made, listener) == (True, [])
    other = [("BK-2", "whitening", "2026-03-04", "15:00", "booked")]
    assert judge(goal, [], other, listener) == (False, [
        "BK-2 whitening 2026-03-04 15:00 -> booked"])
    cancel = Goal("cancel", "flow", day=WED, start=time(14, 30))
    before = [("BK-9T", "cleaning", "2026-03-04", "14:30", "booked"),
              ("BK-9K", "cleaning", "2026-03-11", "14:30", "booked")]
    wrong_week = [before[0], ("BK-9K", "cleaning", "2026-03-11", "14:30", "cancelled")]
    assert judge(cancel, before, wrong_week, Listener(cancel)) == (False, [
        "BK-9K cleaning 2026-03-11 14:30 -> cancelled"])


def test_the_plan_spreads_calls_over_goals_styles_voices_and_noise() -> None:
    plans = plan_goals(96, ("a", "b", "c", "d"), keypad_per_goal=2)
    voice = [p for p in plans if p.style != "keys"]
    assert len(voice) == 96 and len(plans) == 102
    for field in ("goal_kind", "style", "voice", "noise"):
        counts = Counter(getattr(p, field) for p in voice)
        assert max(counts.values()) == min(counts.values()), (field, counts)


def test_line_noise_sits_at_the_asked_snr() -> None:
    tone = (8000 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000)).astype(np.int16)
    frames_of_tone = [pcm16_to_ulaw(tone[i:i + 160].tobytes()) for i in range(0, 8000, 160)]
    noise = LineNoise.below([frames_of_tone], 15.0, seed=1)
    frames = np.concatenate([np.frombuffer(ulaw_to_pcm16(noise.frame()), dtype=np.int16)
                             for _ in range(100)]).astype(np.float64)
    snr = 20 * np.log10(8000 / np.sqrt(2) / np.sqrt(np.mean(frames * frames)))
    assert abs(snr - 15.0) < 0.5


def test_a_caller_off_its_way_or_asked_too_often_hangs_up() -> None:
    cancel = Listener(Goal("cancel", "flow", day=WED, start=time(14, 30)))
    assert cancel.hear([MENU]) == Say("cancel")
    assert cancel.hear(["Which service? Cleaning, checkup, whitening, or filling."]) == PutDown()
    assert cancel.gave_up
    book = Listener(BOOK)
    answers = [book.hear(["Sorry, which day? You can say a weekday, like Tuesday."])
               for _ in range(6)]
    assert answers == [Say("on wednesday")] * 5 + [PutDown()]
