"""`ivr bench slots`: how often typed slot answers are understood through the phone path.

Each answer below is spoken by espeak-ng in every voice given, sent as a call sends it
(8 kHz µ-law, the call's endpointer and resampler: `ivr.bench.accuracy.endpointed`),
recognized with the slot's *full* grammar (JSGF for dates, times, digits, numbers and phone
numbers; `ivr bench accuracy --flow` measures the compact default grammars) and parsed by
the slot's own parser. The figure in docs/slots.md comes from here.

Relative dates are read on a fixed clock, Monday 2026-11-23 10:00 in New York, so every
expected answer is absolute.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from ivr.audio.codec import to_ulaw8k
from ivr.bench.accuracy import endpointed
from ivr.flows.model import SlotDef
from ivr.flows.slots import grammar_for, parse_text
from ivr.speech.espeak import synthesize_blocking
from ivr.speech.sphinx.pool import RecognizerPool

__all__ = ["PHONE_PATH", "slots_main"]

NOW: Final = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("America/New_York"))

SLOTS: Final[dict[str, SlotDef]] = {
    "digits": SlotDef(type="digits", length=4),
    "number": SlotDef(type="number", max=10000),
    "date": SlotDef(type="date", grammar="full"),
    "time": SlotDef(type="time", grammar="full"),
    "phone": SlotDef(type="phone"),
    "yes_no": SlotDef(type="yes_no"),
}

# (slot, what espeak says, what the parsed answer must be)
PHONE_PATH: Final = (
    ("digits", "four five six seven", "4567"),
    ("digits", "one two three four", "1234"),
    ("digits", "nine oh eight two", "9082"),
    ("digits", "zero zero seven one", "0071"),
    ("digits", "three three eight five", "3385"),
    ("number", "forty five", "45"),
    ("number", "one hundred and twenty", "120"),
    ("number", "seven", "7"),
    ("number", "twelve hundred", "1200"),
    ("number", "two thousand five hundred", "2500"),
    ("date", "tomorrow", "2026-11-24"),
    ("date", "today", "2026-11-23"),
    ("date", "next friday", "2026-11-27"),
    ("date", "november twenty fourth", "2026-11-24"),
    ("date", "the twenty fourth", "2026-11-24"),
    ("date", "the day after tomorrow", "2026-11-25"),
    ("date", "december first", "2026-12-01"),
    ("date", "monday", "2026-11-30"),
    ("date", "this thursday", "2026-11-26"),
    ("date", "january fifteenth", "2027-01-15"),
    ("date", "the thirtieth", "2026-11-30"),
    ("date", "friday the twenty seventh", "2026-11-27"),
    ("time", "three p m", "15:00"),
    ("time", "half past two", "14:30"),
    ("time", "two thirty", "14:30"),
    ("time", "noon", "12:00"),
    ("time", "ten a m", "10:00"),
    ("time", "quarter to three", "14:45"),
    ("time", "fifteen hundred", "15:00"),
    ("time", "nine thirty a m", "09:30"),
    ("time", "four p m", "16:00"),
    ("time", "eleven fifteen", "11:15"),
    ("time", "quarter past ten", "10:15"),
    ("time", "five o'clock", "17:00"),
    ("time", "one forty five p m", "13:45"),
    ("phone", "four one five five five five zero one two three", "+14155550123"),
    ("phone", "two one two five five five one two three four", "+12125551234"),
    ("yes_no", "yes", "yes"),
    ("yes_no", "no", "no"),
    ("yes_no", "yeah", "yes"),
    ("yes_no", "nope", "no"),
    ("yes_no", "that's right", "yes"),
    ("yes_no", "correct", "yes"),
)

DEFAULT_VOICES: Final = ("en-us", "en-gb", "en-us+m3", "en-us+f3")


async def slots_main(voices: list[str], workers: int = 2) -> int:
    scores: dict[str, list[bool]] = {}
    started = time.perf_counter()
    async with RecognizerPool(workers, timeout=15) as pool:
        for slot, text, expected in PHONE_PATH:
            for voice in voices:
                pcm, rate = synthesize_blocking(text, voice)
                utterance = await pool.start(grammar_for(SLOTS[slot]))
                utterance.feed(endpointed(to_ulaw8k(pcm, rate)))
                heard = (await utterance.finish()).text
                value = parse_text(SLOTS[slot], heard, now=NOW)
                ok = value is not None and value.text == expected
                scores.setdefault(slot, []).append(ok)
                if not ok:
                    print(f"MISS {slot:7} {voice:9} {text!r} heard {heard!r}")
    elapsed = time.perf_counter() - started
    for slot, hits in scores.items():
        print(f"{slot:7} {sum(hits):3}/{len(hits):3}")
    total = [hit for hits in scores.values() for hit in hits]
    share = sum(total) / len(total) if total else 0.0
    print(f"all     {sum(total):3}/{len(total):3} = {share:.0%} through 8 kHz µ-law "
          f"({elapsed:.1f} s; reproduce: ivr bench slots --voices {','.join(voices)})")
    return 0
