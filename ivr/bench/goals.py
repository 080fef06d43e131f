"""What a caller of `ivr bench conversation` wants, and how it answers what it hears.

A `Goal` is one call's purpose (book a cleaning on a day at a time, cancel the booking on
a day, hear an order's status) and the way the caller talks (`style`): with the flow's
own words ("book", "cleaning", "wednesday", "two p m", "yes"), as people do ("book an
appointment", "a cleaning please", "on wednesday", "at two p m", "that is right"), or by
keypad. `Listener` is the caller's mind: given the words of the prompts it has just
heard, it picks the next answer. It reads the bot's words only, the way a person does:
a question about the service gets the service, a read-back is compared with the goal
and gets a yes or a no, "Press 1 to confirm, 2 to change." gets the key its last
verdict calls for, and a re-ask ("Sorry, ...") is answered again: by voice, or, as a
person who was just misheard does, with the keys the re-ask offers when it says how to
key the answer in (`offers_keys`; counted as `keyed`); a question off the
goal's way (a cancel sent to the booking questions), or one asked a sixth time, gets a
hang-up. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, time
from typing import Final, Literal

from ivr.flows.slots import spoken_date, spoken_time
from ivr.sim.script import CallerAction, PressKeys, PutDown, Say

__all__ = ["STYLES", "Goal", "Listener", "keypad_name", "offers_keys", "time_words"]

Kind = Literal["book", "cancel", "order"]
Style = Literal["flow", "people", "keys"]
STYLES: Final[tuple[Style, ...]] = ("flow", "people", "keys")

_NUMBERS: Final = ("twelve", "one", "two", "three", "four", "five", "six", "seven", "eight",
                   "nine", "ten", "eleven")
_DIGITS: Final = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                  "nine")
_KEYPAD: Final = {c: str(k) for k, letters in
                  ((2, "abc"), (3, "def"), (4, "ghi"), (5, "jkl"), (6, "mno"), (7, "pqrs"),
                   (8, "tuv"), (9, "wxyz")) for c in letters}


def time_words(t: time) -> str:
    """ "two thirty p m": a time as a caller says it (on the hour or the half hour)."""
    hour = _NUMBERS[t.hour % 12]
    minutes = {0: "", 15: " fifteen", 30: " thirty", 45: " forty five"}[t.minute]
    return f"{hour}{minutes} {'a m' if t.hour < 12 else 'p m'}"


def keypad_name(name: str) -> str:
    """The first name on the phone's letter keys, ended with "#"."""
    return "".join(_KEYPAD.get(c, "") for c in name.split()[0].lower()) + "#"


@dataclass(frozen=True, slots=True)
class Goal:
    """One call's purpose. `day`/`start`: the booking to make or to cancel; `order`,
    `item`, `status`: the order to ask about and what the bot should say of it."""

    kind: Kind
    style: Style
    day: date | None = None
    start: time | None = None
    service: str = "cleaning"
    name: str = "john smith"
    order: str = ""
    item: str = ""
    status: str = ""

    def answer(self, key: str) -> CallerAction:
        """The answer to the question `key` ("front", "menu", "service", ...)."""
        if self.style == "keys":
            return PressKeys(self.keys(key))
        flow, people = self._words(key)
        return Say(people if self.style == "people" else flow)

    def utterances(self) -> list[str]:
        """Everything this caller may say (synthesized before it dials)."""
        if self.style == "keys":
            return []
        keys = ["front", "menu", "yes", "no"] + (
            ["order"] if self.kind == "order" else
            ["day"] if self.kind == "cancel" else ["service", "day", "time", "name"])
        return sorted({str(getattr(self.answer(k), "text", "")) for k in keys})

    def _words(self, key: str) -> tuple[str, str]:
        """(the flow's own words, as people say it) for the question `key`."""
        weekday = spoken_date(self.day).split(",")[0].lower() if self.day else ""
        when = time_words(self.start) if self.start else ""
        digits = " ".join(_DIGITS[int(c)] for c in self.order)
        table = {
            "front": (("orders", "order status please") if self.kind == "order"
                      else ("appointments", "an appointment please")),
            "menu": (("book", "book an appointment") if self.kind == "book"
                     else ("cancel", "i'd like to cancel")),
            "service": (self.service, f"a {self.service} please"),
            "day": (weekday, f"on {weekday}"),
            "time": (when, f"at {when}"),
            "name": (self.name.split()[0], f"it is {self.name}"),
            "order": (digits, f"it is {digits}"),
            # "What should I change?" after a read-back that got this part wrong
            "change service": ("service", "the service"),
            "change day": ("day", "the day"),
            "change time": ("time", "the time"),
            "change nothing": ("nothing", "nothing it's right"),
            "yes": ("yes", "that is right"),
            "no": ("no", "no that is wrong"),
        }
        return table[key]

    def keys(self, key: str) -> str:
        """The keys that answer the question `key` (what a keypad caller presses)."""
        table = {
            "front": "2" if self.kind == "order" else "1",
            "menu": "1" if self.kind == "book" else "2",
            "service": {"cleaning": "1", "checkup": "2", "whitening": "3",
                        "filling": "4"}[self.service],
            "day": self.day.strftime("%m%d") if self.day else "",
            "time": self.start.strftime("%H%M") if self.start else "",
            "name": keypad_name(self.name),
            "order": self.order,
            "change service": "1",
            "change day": "2",
            "change time": "3",
            "change nothing": "",
            "yes": "1",
            "no": "2",
        }
        return table[key]

    def expected(self, key: str) -> list[str]:
        """Words a read-back of the answer to `key` must hold to be right."""
        if key == "front":
            return ["order"] if self.kind == "order" else ["appointment"]
        if key == "menu":
            return [self.kind]
        if key == "service":
            return [self.service]
        if key == "day" and self.day is not None:
            return [_squash(spoken_date(self.day))]
        if key == "time" and self.start is not None:
            return [_squash(spoken_time(self.start))]
        if key == "order":
            return [self.order]
        return []  # the name: a person hears their name read back however it comes out

    def readback_right(self, text: str) -> bool:
        """Whether "A cleaning on Wednesday, March 5th at 3 PM. Shall I book it?" is
        this goal."""
        return self.readback_wrong(text) == "nothing"

    def readback_wrong(self, text: str) -> str:
        """The first part of a read-back that is not this goal's ("service", "day",
        "time"), or "nothing"."""
        said = _squash(text)
        for key in ("service", "day", "time"):
            if not all(w in said for w in self.expected(key)):
                return key
        return "nothing"


def _squash(text: str) -> str:
    """Lower-case letters and digits only: "3 PM" and "3pm" read the same."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


# What a question is about, by its words, most specific first. A re-ask ("Sorry, which
# day?") has the same words as the question.
_QUESTIONS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("commit_keys", ("press 1 to confirm",)),
    ("check", (", right?",)),
    ("yes_no_keys", ("press 1 for yes, 2 for no.",)),
    ("readback", ("shall i book it",)),
    ("change", ("what should i change",)),
    ("front", ("appointments, orders, or agent",)),
    ("menu", ("book, cancel, or reschedule",)),
    ("service", ("which service", "cleaning, checkup, whitening, or filling")),
    ("day", ("what day", "which day", "new day")),
    ("time", ("what time",)),
    ("name", ("what name",)),
    ("order", ("order number", "four digits")),
)


# The questions on each goal's way; a caller asked anything else (a cancel sent down the
# booking path) is where it did not want to be, and hangs up, as a person would.
ON_THE_WAY: Final[dict[str, frozenset[str]]] = {
    "book": frozenset({"front", "menu", "service", "day", "time", "name", "readback",
                       "change"}),
    "cancel": frozenset({"front", "menu", "day"}),
    "order": frozenset({"front", "order"}),
}
# A person asked the same question this many times gives up.
GIVE_UP_AFTER: Final = 6


def question_of(text: str) -> str | None:
    """The kind of question `text` asks (see `_QUESTIONS`), or None for a statement."""
    lowered = text.lower()
    for key, marks in _QUESTIONS:
        if any(m in lowered for m in marks):
            return key
    return None


def offers_keys(key: str, text: str) -> bool:
    """Does the prompt `text` tell a caller how to key in the answer to `key`? A choice
    by its position ("Or press 1 to 4."), yes/no ("press 1 for yes"), a date or a time only
    when the prompt explains the digits ("key in the month and day"), an order number
    ("key in"); never the name."""
    lowered = text.lower()
    if key in ("day", "time"):
        return "key in" in lowered
    if key == "name":
        return False
    return "press" in lowered or "key in" in lowered


@dataclass(slots=True)
class Listener:
    """The caller's side of the conversation for one `Goal`; `hear` the new prompts'
    words, get the next action (None: nothing was asked; listen on)."""

    goal: Goal
    asked: Counter[str] = field(default_factory=Counter)
    heard: list[str] = field(default_factory=list)
    last_answered: str | None = None
    verdict: bool = True  # was the last thing read back right?
    status_heard: bool = False  # the order's status, as the goal expects it, was read
    gave_up: bool = False  # hung up: off the goal's way, or asked once too often
    keyed: int = 0  # answers a voice caller gave by keys, offered after a miss
    fix: str = "nothing"  # what the last read-back got wrong

    @property
    def reasks(self) -> int:
        """Questions heard again after they were answered (re-asks, and the flow going
        back over a step after a "no")."""
        return sum(n - 1 for key, n in self.asked.items() if n > 1 and key not in
                   ("check", "commit_keys", "yes_no_keys"))

    def hear(self, texts: list[str]) -> CallerAction | None:
        self.heard.extend(texts)
        g = self.goal
        for text in texts:
            lowered = text.lower()
            if g.kind == "order" and g.item in lowered and f"is {g.status}" in lowered:
                self.status_heard = True
        for text in reversed(texts):  # the last question asked is the one to answer
            key = question_of(text)
            if key is not None:
                return self._answer(key, text)
        return None

    def _answer(self, key: str, text: str) -> CallerAction:
        g = self.goal
        self.asked[key] += 1
        checking = key in ("commit_keys", "yes_no_keys", "check")
        if (not checking and key not in ON_THE_WAY[g.kind]) or self.asked[key] >= GIVE_UP_AFTER:
            self.gave_up = True
            return PutDown()
        if key in ("commit_keys", "yes_no_keys"):
            return PressKeys("1" if self.verdict else "2")
        if key in ("check", "readback"):
            if key == "check":
                said = _squash(text.lower().split(", right?")[0])
                wanted = g.expected(self.last_answered or "")
                self.verdict = all(w in said for w in wanted)
            else:
                self.fix = g.readback_wrong(text)
                self.verdict = self.fix == "nothing"
            answer = "yes" if self.verdict else "no"
            if self.asked[key] > 1 and offers_keys(answer, text):
                return self._keyed(answer)
            return g.answer(answer)
        if key == "change":  # what the last read-back got wrong
            what = f"change {self.fix}"
            if self.fix != "nothing" and self.asked[key] > 1 and offers_keys(key, text):
                return self._keyed(what)
            return g.answer(what)
        self.last_answered = key
        if self.asked[key] > 1 and offers_keys(key, text):
            return self._keyed(key)  # misheard before: the keys the bot offers now
        return g.answer(key)

    def _keyed(self, key: str) -> CallerAction:
        if self.goal.style != "keys":
            self.keyed += 1
        return PressKeys(self.goal.keys(key))
